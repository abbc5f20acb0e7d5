package web

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/browsertest"
	"github.com/vigil-iomt/vigil/internal/live"
	"github.com/vigil-iomt/vigil/internal/news2"
)

// TestBrowserWard drives the ward view in a real chromium: log in through
// the form, see the tiles, watch a value change live, see an alert, lose
// and regain the live connection, acknowledge the alert with the
// keyboard. Each view is saved as a screenshot in test-artifacts/web.
func TestBrowserWard(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	chromium := browsertest.Chromium(t)
	shots := browsertest.ArtifactDir(t, "web")

	// Let the test cut the live stream: while down, /web/api/events
	// answers 503 and the browser's EventSource fails.
	var down atomic.Bool
	var ev *news2.Evaluator
	var envp **env
	withNEWS2 := func(o *Options) {
		ev = &news2.Evaluator{Store: o.Store, Alerts: o.Alerts.(*alerting.Engine),
			Publish: func(u news2.Update) {
				(*envp).hub.Publish(live.Event{Type: live.TypeNEWS2, PatientID: u.PatientID, Data: &u})
			}}
		o.NEWS2, o.NEWS2Record = ev.Compute, ev.Record
		o.Thresholds = o.Alerts.(*alerting.Engine).Thresholds
		// The device fleet from the alert engine's live state, as the
		// node wires it: monitors may be silent for 2 minutes.
		o.DeviceState = func(id string) DeviceState {
			st := DeviceState{}
			if strings.HasPrefix(id, "mon-") {
				st.SilentAfter = 2 * time.Minute
			}
			if s, ok := (*envp).alerts.DeviceStatus(id); ok {
				st.LastSeen, st.Battery = s.LastSeen, s.Battery
				if s.BatteryAt != nil {
					st.BatteryAt = *s.BatteryAt
				}
			}
			return st
		}
	}
	e := newEnv(t, withNEWS2, func(app http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if down.Load() && r.URL.Path == "/web/api/events" {
				http.Error(w, "unavailable", http.StatusServiceUnavailable)
				return
			}
			app.ServeHTTP(w, r)
		})
	})

	envp = &e
	e.addUser("nurse1", vigil.RoleNurse, "", "night-shift-42")
	beds := []struct{ id, given, family, bed string }{
		{"p1", "Ada", "Lovelace", "1"}, {"p2", "Alan", "Turing", "2"}, {"p3", "Grace", "Hopper", "3"}, {"p4", "Edsger", "Dijkstra", "4"},
	}
	now := time.Now().UTC()
	for i, b := range beds {
		e.addPatient(b.id, b.given, b.family, "Ward 4B", b.bed)
		for _, d := range []*vigil.Device{
			{ID: "mon-" + b.id, Kind: vigil.DeviceBedsideMonitor, Manufacturer: "Acme", Model: "BM-7", Firmware: "4.2.1"},
			{ID: "cuff-" + b.id, Kind: vigil.DeviceBPCuff},
		} {
			if err := e.store.CreateDevice(context.Background(), d); err != nil {
				t.Fatal(err)
			}
			if err := e.store.AssignDevice(context.Background(), d.ID, b.id, now.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		at := now.Add(-90 * time.Second) // before the alert run below
		if b.id == "p4" {
			at = now.Add(-9 * time.Minute) // a monitor that stopped sending: stale, and offline
		}
		e.ingest(&vigil.Reading{DeviceID: "mon-" + b.id, ID: "1", PatientID: b.id, Time: at, Received: at, Values: []vigil.Measurement{
			{Code: vigil.LOINCHeartRate, Value: float64(70 + i*6), Unit: "/min"},
			{Code: vigil.LOINCSpO2, Value: float64(98 - i), Unit: "%"},
			{Code: vigil.LOINCRespRate, Value: float64(14 + i), Unit: "/min"},
			{Code: vigil.LOINCBodyTemp, Value: 36.6 + float64(i)/10, Unit: "Cel"},
		}})
		e.ingest(&vigil.Reading{DeviceID: "cuff-" + b.id, ID: "1", PatientID: b.id, Time: at.Add(-time.Minute), Values: []vigil.Measurement{
			{Code: vigil.LOINCSystolic, Value: float64(118 + i*4), Unit: "mm[Hg]"},
			{Code: vigil.LOINCDiastolic, Value: float64(76 + i*2), Unit: "mm[Hg]"},
		}})
	}

	ctx := browsertest.New(t, chromium)

	type action = chromedp.Action[chromedp.Void]
	shot := func(name string) action { return browsertest.Shot(shots, name) }
	waitJS := browsertest.WaitJS
	run := func(step string, actions ...action) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_ = chromedp.Do(fctx, shot("FAILED-"+strings.ReplaceAll(step, " ", "-")+".png"))
			t.Fatalf("%s: %v (screenshot in %s)", step, err, shots)
		}
	}
	// accessible runs axe-core on the page as it is and fails the test on
	// any WCAG 2.1 A/AA violation (written next to the screenshots).
	axe := browsertest.AxeSource(t)
	accessible := func(view string) action {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if axe == "" {
				return nil
			}
			loaded, err := chromedp.Evaluate[bool](`typeof axe !== 'undefined'`)(ctx, tg)
			if err != nil {
				return err
			}
			if !loaded {
				if _, err := chromedp.Evaluate[chromedp.Void](axe)(ctx, tg); err != nil {
					return fmt.Errorf("load axe-core: %w", err)
				}
			}
			v, err := chromedp.Evaluate[string](browsertest.AxeRun, chromedp.EvalAwaitPromise)(ctx, tg)
			if err != nil {
				return fmt.Errorf("axe-core on %s: %w", view, err)
			}
			if v != "[]" {
				_ = os.WriteFile(filepath.Join(shots, "axe-"+view+".json"), []byte(v), 0o644)
				t.Errorf("accessibility (axe-core, WCAG 2.1 AA) of the %s: %s", view, v)
			}
			return nil
		})
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	tileSel := func(p, rest string) string { return fmt.Sprintf(`.tile[data-patient=%q] %s`, p, rest) }
	text := func(sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(css(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}

	// 1. The login form; a wrong password shows the generic error.
	run("login page",
		chromedp.Navigate(e.srv.URL+"/"),
		chromedp.WaitVisible(css(`#user`)),
		chromedp.SendKeys(css(`#user`), "nurse1"),
		chromedp.SendKeys(css(`#password`), "wrong"),
		chromedp.Click(css(`#signin`)),
		chromedp.WaitVisible(css(`#login-error`)),
		shot("01-login-failed.png"), accessible("login page"),
	)
	run("log in",
		chromedp.SendKeys(css(`#password`), "night-shift-42"),
		chromedp.Click(css(`#signin`)),
		chromedp.WaitVisible(css(tileSel("p1", ".vital.hr .value"))),
		waitJS(`document.getElementById('conn').dataset.state === 'live'`),
	)
	if got := text(tileSel("p1", ".vital.hr .value")); got != "70" {
		t.Errorf("p1 HR shows %q, want 70", got)
	}
	if got := text(tileSel("p1", ".vital.bp .value")); got != "118/76" {
		t.Errorf("p1 BP shows %q, want 118/76", got)
	}
	if got := text(tileSel("p1", ".tile-head h2")); got != "Ada Lovelace" {
		t.Errorf("p1 name shows %q", got)
	}
	run("stale marker", waitJS(`document.querySelector('.tile[data-patient="p4"] .vital.hr').classList.contains('stale')`))
	run("ward screenshot", shot("02-ward.png"), accessible("ward view"))

	// 2. A reading stored and published: the tile follows live.
	e.ingest(&vigil.Reading{DeviceID: "mon-p1", ID: "2", PatientID: "p1", Time: time.Now().UTC(), Values: []vigil.Measurement{
		{Code: vigil.LOINCHeartRate, Value: 97, Unit: "/min"}}})
	run("live value",
		waitJS(`document.querySelector('.tile[data-patient="p1"] .vital.hr .value').textContent === '97'`),
		shot("03-live-update.png"),
	)
	if got := text(tileSel("p1", ".vital.hr .age")); !strings.HasSuffix(got, "s ago") {
		t.Errorf("p1 HR age shows %q, want seconds", got)
	}

	// 3. An alert: SpO2 of p3 drops and stays low for a minute of device
	// time; the tile moves to the top with a HIGH badge.
	start := time.Now().UTC().Add(-70 * time.Second)
	for i, v := range []float64{89, 88, 87} {
		e.ingest(&vigil.Reading{DeviceID: "mon-p3", ID: fmt.Sprint("s", i), PatientID: "p3", Time: start.Add(time.Duration(i) * 35 * time.Second),
			Values: []vigil.Measurement{{Code: vigil.LOINCSpO2, Value: v, Unit: "%"}}})
	}
	run("alert shown",
		chromedp.WaitVisible(css(tileSel("p3", ".alert.high button.ack"))),
		waitJS(`document.querySelector('#tiles .tile').dataset.patient === 'p3'`),
		shot("04-alert.png"), accessible("ward with an alert"),
	)
	if got := text(tileSel("p3", ".alert .prio")); got != "HIGH" {
		t.Errorf("alert priority shows %q, want HIGH", got)
	}
	run("snooze",
		chromedp.Click(css(tileSel("p3", ".alert button.snooze"))),
		chromedp.WaitVisible(css(tileSel("p3", ".alert .snoozed"))),
		shot("04b-snoozed.png"),
	)
	if as, _ := e.alerts.Alerts(context.Background(), vigil.AlertFilter{PatientID: "p3"}); len(as) != 1 || as[0].SnoozedUntil.IsZero() {
		t.Fatalf("snoozed alert: %+v", as)
	}

	// 4. The live connection drops: the banner says so; it clears on
	// reconnect.
	down.Store(true)
	e.srv.CloseClientConnections()
	run("banner shown",
		chromedp.WaitVisible(css(`#banner`)),
		shot("05-connection-lost.png"), accessible("ward with the live connection lost"),
	)
	if got := text(`#banner`); got != "Live connection lost — values may be stale" {
		t.Errorf("banner says %q", got)
	}
	down.Store(false)
	run("banner cleared",
		chromedp.WaitNotVisible(css(`#banner`)),
		waitJS(`document.getElementById('conn').dataset.state === 'live'`),
	)

	// 4b. A system notice (an edge gateway's link to its server down)
	// appears across the top, readable and accessible, and goes again.
	e.hub.Publish(live.Event{Type: live.TypeNotice, Data: &live.Notice{ID: "uplink", Active: true,
		Text: "No link to the central Vigil server since 10:42. Monitoring and alerts continue here."}})
	run("notice shown",
		chromedp.WaitVisible(css(`[data-notice="uplink"]`)),
		shot("05b-edge-notice.png"), accessible("ward with a system notice"),
	)
	e.hub.Publish(live.Event{Type: live.TypeNotice, Data: &live.Notice{ID: "uplink", Active: false}})
	run("notice gone", waitJS(`document.querySelector('[data-notice="uplink"]') === null`))

	// 5. Acknowledge with the keyboard: focus the button, press Enter.
	// The reconnect re-renders the tiles from a fresh snapshot; a button
	// found just before that render is gone after it, so a press that
	// lands on a replaced node is tried again (as a nurse would press
	// again).
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := chromedp.Do(actx,
			chromedp.Focus(css(tileSel("p3", ".alert button.ack"))),
			chromedp.KeyEvent("\r"),
			chromedp.WaitVisible(css(tileSel("p3", ".alert.acknowledged"))),
		)
		cancel()
		if err == nil {
			break
		}
		if attempt == 3 {
			run("acknowledge", shot("FAILED-acknowledge.png"))
			t.Fatalf("acknowledge: %v", err)
		}
	}
	run("acknowledged", shot("06-acknowledged.png"))
	if got := text(tileSel("p3", ".alert.acknowledged .acked")); got != "ACKNOWLEDGED by nurse1" {
		t.Errorf("acknowledged alert shows %q", got)
	}
	as, err := e.alerts.Alerts(context.Background(), vigil.AlertFilter{PatientID: "p3"})
	if err != nil || len(as) != 1 || as[0].State != vigil.AlertAcknowledged {
		t.Fatalf("stored alerts of p3: %v %v, want one acknowledged", as, err)
	}

	// 6. SpO2 recovers: the alert resolves and the badge goes away.
	e.ingest(&vigil.Reading{DeviceID: "mon-p3", ID: "s9", PatientID: "p3", Time: time.Now().UTC(),
		Values: []vigil.Measurement{{Code: vigil.LOINCSpO2, Value: 96, Unit: "%"}}})
	run("resolved",
		waitJS(`document.querySelectorAll('.tile[data-patient="p3"] .alert').length === 0`),
		shot("07-resolved.png"),
	)

	// 7. NEWS2 on the tile, and a nurse's observation: p1 (HR 97 scores 1)
	// has no consciousness or oxygen recorded yet, so its score is
	// incomplete; recording "responds to voice" (3) on room air makes it
	// 4, complete, in the low-medium band (a single parameter scoring 3).
	run("NEWS2 shown", chromedp.WaitVisible(css(tileSel("p1", ".news2.incomplete"))))
	run("record observation",
		chromedp.Click(css(tileSel("p1", "button.record"))),
		chromedp.WaitVisible(css(tileSel("p1", ".obs-form select[name=consciousness]"))),
		chromedp.SetValue(css(tileSel("p1", ".obs-form select[name=consciousness]")), "V"),
		chromedp.SetValue(css(tileSel("p1", ".obs-form select[name=oxygen]")), "air"),
		chromedp.Click(css(tileSel("p1", ".obs-form button.save"))),
		waitJS(`document.querySelector('.tile[data-patient="p1"] .news2').classList.contains('band-low-medium')`),
		shot("08-news2-recorded.png"), accessible("ward with the observation form"),
	)
	if got := text(tileSel("p1", ".news2-score")); got != "4" {
		t.Errorf("p1 NEWS2 shows %q, want 4", got)
	}
	if got := text(tileSel("p1", ".news2-band")); got != "LOW-MEDIUM" {
		t.Errorf("p1 NEWS2 band shows %q", got)
	}
	if p, _ := e.store.FindPatientByID(context.Background(), "p1"); p.Consciousness != "V" || p.OnOxygen == nil || *p.OnOxygen {
		t.Fatalf("stored inputs: %+v", p)
	}

	// 8. The patient page from the tile's name: a chart per vital, drawn
	// (pixels on the canvas), the SpO2 alert marked; the range buttons.
	canvasDrawn := func(code string) string {
		return fmt.Sprintf(`(() => {
			const c = document.querySelector('.chart[data-code=%q] canvas');
			if (!c || !c.width) return false;
			const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
			let n = 0;
			for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
			return n > 200;
		})()`, code)
	}
	run("patient page",
		chromedp.Click(css(tileSel("p3", ".tile-head h2 a"))),
		chromedp.WaitVisible(css(`body.patient-page #charts`)),
		waitJS(`Number(document.body.dataset.charted) >= 5`),
		waitJS(canvasDrawn(vigil.LOINCSpO2)),
		waitJS(canvasDrawn(vigil.LOINCHeartRate)),
		shot("09-patient-charts.png"), accessible("patient page"),
	)
	if got := text(`#pt-name`); got != "Grace Hopper" {
		t.Errorf("patient page name %q", got)
	}
	if got := text(`.chart[data-code="59408-5"] .chart-count`); got != "5 values" {
		t.Errorf("SpO2 chart says %q, want 5 values (first, three low, recovered)", got)
	}
	run("range 1 hour",
		chromedp.Click(css(`.ranges button[data-range="1h"]`)),
		waitJS(`document.querySelector('.ranges button[data-range="1h"]').getAttribute('aria-checked') === 'true'`),
		waitJS(canvasDrawn(vigil.LOINCSpO2)),
		shot("10-patient-1h.png"),
	)

	// 9. The alert inbox: a new alert for p2; escalate it with a note,
	// acknowledge it from the keyboard (Enter in the note), read its
	// history; an alert raised while the page is open appears live.
	a2 := e.lowSpO2("p2", "mon-p2")
	item := func(id, rest string) string { return fmt.Sprintf(`.inbox-item[data-alert=%q] %s`, id, rest) }
	run("alert inbox",
		chromedp.Navigate(e.srv.URL+"/alerts"),
		chromedp.WaitVisible(css(item(a2.ID, "button.escalate"))),
		waitJS(`document.getElementById('conn').dataset.state === 'live'`),
		chromedp.SendKeys(css(item(a2.ID, "input.note")), "looks grey, need the doctor"),
		chromedp.Click(css(item(a2.ID, "button.escalate"))),
		chromedp.WaitVisible(css(item(a2.ID, ".tier"))),
		chromedp.SendKeys(css(item(a2.ID, "input.note")), "oxygen started\r"),
		chromedp.WaitVisible(css(item(a2.ID, ".state-word.state-acknowledged"))),
		chromedp.Click(css(item(a2.ID, "details.history summary"))),
		chromedp.WaitVisible(css(item(a2.ID, ".history-list li:nth-child(3)"))),
		shot("13-inbox.png"), accessible("alert inbox"),
	)
	if got := text(item(a2.ID, ".tier")); got != "TIER 1" {
		t.Errorf("escalated alert shows %q", got)
	}
	if got := text(item(a2.ID, ".history-list")); !strings.Contains(got, "Escalated by nurse1 — looks grey, need the doctor") || !strings.Contains(got, "Acknowledged by nurse1 — oxygen started") {
		t.Errorf("history reads %q", got)
	}
	a4 := e.lowSpO2("p4", "oxi-p4") // a finger probe; the monitor stays silent
	run("new alert live",
		chromedp.WaitVisible(css(item(a4.ID, ".inbox-title"))),
		// Firing before acknowledged: the new alert comes first.
		waitJS(`document.querySelector('#inbox .inbox-item').dataset.alert === `+strconv.Quote(a4.ID)),
		shot("14-inbox-live.png"),
	)

	// 10. The device fleet: p4's monitor is offline (silent 9 minutes),
	// listed first, with its patient; the others are online.
	run("device fleet",
		chromedp.Click(css(`nav.views a[href="/devices"]`)),
		chromedp.WaitVisible(css(`#fleet tbody tr[data-device="mon-p4"]`)),
		shot("15-fleet.png"), accessible("device fleet"),
	)
	if got := text(`#fleet tbody tr:first-child`); !strings.Contains(got, "OFFLINE") || !strings.Contains(got, "mon-p4") || !strings.Contains(got, "Edsger Dijkstra") {
		t.Errorf("first fleet row %q, want p4's offline monitor", got)
	}
	if got := text(`#fleet tbody tr[data-device="mon-p1"] .fleet-badge`); got != "● ONLINE" {
		t.Errorf("p1's monitor shows %q", got)
	}
	if got := text(`#fleet tbody tr[data-device="mon-p1"] .model`); !strings.Contains(got, "firmware 4.2.1") {
		t.Errorf("p1's monitor model cell %q", got)
	}

	// 11. A patient signs in: their own page charts; another patient's
	// page says it may not be seen.
	e.addUser("grace", vigil.RolePatient, "p3", "own-record-only")
	run("sign out",
		chromedp.Navigate(e.srv.URL+"/"),
		chromedp.WaitVisible(css(`form.signout button`)),
		chromedp.Click(css(`form.signout button`)),
		chromedp.WaitVisible(css(`#user`)),
	)
	run("patient signs in",
		chromedp.SendKeys(css(`#user`), "grace"),
		chromedp.SendKeys(css(`#password`), "own-record-only"),
		chromedp.Click(css(`#signin`)),
		chromedp.WaitVisible(css(tileSel("p3", ".tile-head h2 a"))),
		chromedp.Navigate(e.srv.URL+"/patients/p3"),
		chromedp.WaitVisible(css(`body.patient-page #charts`)),
		waitJS(canvasDrawn(vigil.LOINCSpO2)),
		chromedp.WaitVisible(css(`#pt-devices li[data-device="mon-p3"]`)),
		shot("16-patient-portal.png"), accessible("patient portal"),
	)
	run("another patient's page",
		chromedp.Navigate(e.srv.URL+"/patients/p1"),
		chromedp.WaitVisible(css(`.forbidden`)),
		shot("17-patient-forbidden.png"), accessible("forbidden page"),
	)
	if got := text(`.forbidden h2`); got != "You may not see this patient's record" {
		t.Errorf("forbidden page says %q", got)
	}
}
