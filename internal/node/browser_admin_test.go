package node_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/browsertest"
)

// TestBrowserAdmin drives the admin page in chromium against a real node:
// add a device (its secret shown once), give it an enrollment code, add a
// user, dry-run a MedTech template on a device message, backtest a rule
// on stored readings and save it. Every section is checked with axe-core.
func TestBrowserAdmin(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	chromium := browsertest.Chromium(t)
	shots := browsertest.ArtifactDir(t, "web")
	e := start(t)
	ctx := context.Background()
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "root", Role: vigil.RoleAdmin}, "admin-password-1"))
	// Ten minutes of heart rate above 120 for the backtest to find.
	now := time.Now().UTC()
	var body strings.Builder
	body.WriteString("[")
	for i := range 20 {
		if i > 0 {
			body.WriteString(",")
		}
		fmt.Fprintf(&body, `{"id":"bt%d","time":%q,"values":[{"code":"8867-4","value":%d,"unit":"/min"}]}`,
			i, now.Add(time.Duration(i-20)*30*time.Second).Format(time.RFC3339), 100+2*i)
	}
	body.WriteString("]")
	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/readings", strings.NewReader(body.String()))
	req.SetBasicAuth(e.device, e.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("readings: %d", resp.StatusCode)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata", "medtech", name))
		must(t, err)
		return string(b)
	}

	bctx := browsertest.New(t, chromium)
	axe := browsertest.AxeSource(t)
	type action = chromedp.Action[chromedp.Void]
	shot := func(name string) action { return browsertest.Shot(shots, name) }
	waitJS := browsertest.WaitJS
	run := func(step string, actions ...action) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 45*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			fctx, cancel := context.WithTimeout(bctx, 10*time.Second)
			defer cancel()
			_ = chromedp.Do(fctx, shot("FAILED-admin-"+strings.ReplaceAll(step, " ", "-")+".png"))
			t.Fatalf("%s: %v", step, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	setValue := func(sel, v string) action { return chromedp.SetValue(chromedp.CSS(sel), v) }
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	accessible := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if axe == "" {
			return nil
		}
		if _, err := chromedp.Evaluate[chromedp.Void](axe)(ctx, tg); err != nil {
			return err
		}
		v, err := chromedp.Evaluate[string](browsertest.AxeRun, chromedp.EvalAwaitPromise)(ctx, tg)
		if err != nil {
			return err
		}
		if v != "[]" {
			t.Errorf("accessibility (axe-core, WCAG 2.1 AA) of the admin page: %s", v)
		}
		return nil
	})

	run("sign in",
		chromedp.Navigate(e.n.URL()+"/login"),
		chromedp.WaitVisible(css(`#user`)),
		chromedp.SendKeys(css(`#user`), "root"),
		chromedp.SendKeys(css(`#password`), "admin-password-1"),
		chromedp.Click(css(`#signin`)),
		chromedp.WaitVisible(css(`nav.views a[href="/admin"]`)),
		chromedp.Click(css(`nav.views a[href="/admin"]`)),
		chromedp.WaitVisible(css(`#device-table tbody tr`)),
		waitJS(`document.querySelectorAll('#user-table tbody tr').length >= 2`),
	)

	run("add a device",
		setValue(`#device-form input[name=id]`, "watch-7"),
		setValue(`#device-form select[name=kind]`, "wearable"),
		setValue(`#device-form input[name=firmware]`, "2.4.0"),
		chromedp.Click(css(`#device-form button[type=submit]`)),
		waitJS(`document.querySelector('#device-form .form-result').textContent.includes('secret')`),
		waitJS(`[...document.querySelectorAll('#device-table tbody tr')].some(r => r.textContent.includes('watch-7'))`),
	)
	if d, err := e.n.Store.FindDeviceByID(ctx, "watch-7"); err != nil || d.Firmware != "2.4.0" || d.Kind != vigil.DeviceWearable {
		t.Fatalf("device added from the admin page: %+v %v", d, err)
	}
	run("enrollment code",
		chromedp.Click(css(`button[aria-label="Enrollment code for watch-7"]`)),
		waitJS(`[...document.querySelectorAll('.row-out')].some(p => p.textContent.startsWith('One-time code'))`),
	)

	run("add a user",
		setValue(`#user-form input[name=id]`, "nurse7"),
		setValue(`#user-form select[name=role]`, "nurse"),
		setValue(`#user-form input[name=wards]`, "4B"),
		setValue(`#user-form input[name=password]`, "a-long-nurse-password"),
		chromedp.Click(css(`#user-form button[type=submit]`)),
		waitJS(`[...document.querySelectorAll('#user-table tbody tr')].some(r => r.textContent.includes('nurse7'))`),
	)
	if u, err := e.n.Store.FindUserByID(ctx, "nurse7"); err != nil || u.Role != vigil.RoleNurse || len(u.Wards) != 1 {
		t.Fatalf("user added from the admin page: %+v %v", u, err)
	}

	run("mapping dry run",
		setValue(`#mapping-form textarea[name=deviceTemplate]`, read("calculated-heartrate.devicemapping.json")),
		setValue(`#mapping-form textarea[name=fhirTemplate]`, read("calculated-heartrate.fhirmapping.json")),
		setValue(`#mapping-form textarea[name=message]`, read("calculated-heartrate.message.json")),
		chromedp.Click(css(`#mapping-form button[type=submit]`)),
		waitJS(`document.getElementById('mapping-result').textContent.length > 0`),
	)
	if got := text(`#mapping-result`); !strings.Contains(got, "heartrate") && !strings.Contains(got, "8867-4") {
		t.Errorf("dry run result: %s", got)
	}
	run("mapping refused",
		setValue(`#mapping-form textarea[name=deviceTemplate]`, `{"templateType": "CollectionContent", "template": [{"templateType": "Nope"}]}`),
		chromedp.Click(css(`#mapping-form button[type=submit]`)),
		waitJS(`document.querySelector('#mapping-form .form-result').textContent.startsWith('Dry run refused')`),
	)

	run("rule backtest",
		setValue(`#rule-form input[name=id]`, "tachy"),
		setValue(`#rule-form input[name=title]`, "Heart rate above 120"),
		setValue(`#rule-form textarea[name=expr]`, `value("8867-4") > 120`),
		setValue(`#rule-form input[name=forSeconds]`, "60"),
		setValue(`#rule-form input[name=days]`, "1"),
		chromedp.Click(css(`#rule-form button[type=submit]`)),
		waitJS(`document.querySelector('#rule-form .form-result').textContent.startsWith('Would have raised')`),
		shot("18-admin-backtest.png"),
	)
	if got := text(`#rule-form .form-result`); !strings.HasPrefix(got, "Would have raised 1 alert for 1 patient") {
		t.Errorf("backtest says %q", got)
	}
	run("rule refused",
		setValue(`#rule-form textarea[name=expr]`, `value("8867-4") >`),
		chromedp.Click(css(`#rule-form button[type=submit]`)),
		waitJS(`document.querySelector('#rule-form .form-result').textContent.includes('expr')`),
		setValue(`#rule-form textarea[name=expr]`, `value("8867-4") > 120`),
		chromedp.Click(css(`#rule-form button.save`)),
		waitJS(`[...document.querySelectorAll('#rule-table tbody tr')].some(r => r.textContent.includes('tachy'))`),
		shot("19-admin.png"),
		accessible,
	)
	if r, err := e.n.Store.FindRule(ctx, "tachy", 0); err != nil || r.ForSeconds != 60 || r.SavedBy != "root" {
		t.Fatalf("rule saved from the admin page: %+v %v", r, err)
	}
}
