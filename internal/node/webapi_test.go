package node_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/vigil-iomt/vigil"
)

// The admin page reaches the API through the web app, as the signed-in
// user: the API applies the user's role, a state-changing call needs the
// session's CSRF token, and the API itself takes no session cookie.
func TestWebAPIProxy(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "root", Role: vigil.RoleAdmin}, "admin-password-1"))
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "nina", Role: vigil.RoleNurse}, "nurse-password-1"))
	signIn := func(user, pw string) (*http.Client, string) {
		t.Helper()
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		req, _ := http.NewRequest("POST", e.n.URL()+"/login", strings.NewReader(url.Values{"user": {user}, "password": {pw}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", e.n.URL())
		resp, err := c.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign in %s: %d", user, resp.StatusCode)
		}
		resp, err = c.Get(e.n.URL() + "/")
		must(t, err)
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := csrfMeta.FindSubmatch(page)
		if m == nil {
			t.Fatal("no CSRF token")
		}
		return c, string(m[1])
	}
	call := func(c *http.Client, method, path, csrf, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, e.n.URL()+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
			req.Header.Set("Origin", e.n.URL())
		}
		resp, err := c.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	admin, csrf := signIn("root", "admin-password-1")
	if st, body := call(admin, "GET", "/web/api/v1/users", "", ""); st != 200 || !strings.Contains(body, `"nina"`) {
		t.Fatalf("users through the web app: %d %s", st, body)
	}
	if st, body := call(admin, "POST", "/web/api/v1/devices", csrf, `{"id":"watch-9","kind":"wearable","firmware":"1.0.3"}`); st != 201 || !strings.Contains(body, `"secret"`) {
		t.Fatalf("add a device: %d %s", st, body)
	}
	if d, err := e.n.Store.FindDeviceByID(ctx, "watch-9"); err != nil || d.Firmware != "1.0.3" {
		t.Fatalf("stored device: %+v %v", d, err)
	}
	if st, _ := call(admin, "POST", "/web/api/v1/devices", "", `{"id":"watch-10","kind":"wearable"}`); st != http.StatusForbidden {
		t.Errorf("a POST without the CSRF token: %d, want 403", st)
	}
	if page := func() int { st, _ := call(admin, "GET", "/admin", "", ""); return st }(); page != 200 {
		t.Errorf("admin page: %d", page)
	}
	// The API itself takes no cookie: a session reaches it only through
	// the web app's checks.
	if st, _ := call(admin, "GET", "/api/v1/users", "", ""); st != http.StatusUnauthorized {
		t.Errorf("the API with only a session cookie: %d, want 401", st)
	}
	if st, _ := call(admin, "GET", "/fhir/R4/Patient", "", ""); st != http.StatusUnauthorized {
		t.Errorf("FHIR with only a session cookie: %d, want 401", st)
	}

	nurse, nurseCSRF := signIn("nina", "nurse-password-1")
	if st, _ := call(nurse, "GET", "/web/api/v1/users", "", ""); st != http.StatusForbidden {
		t.Errorf("a nurse lists users through the web app: %d, want 403", st)
	}
	if st, _ := call(nurse, "POST", "/web/api/v1/devices", nurseCSRF, `{"id":"x","kind":"wearable"}`); st != http.StatusForbidden {
		t.Errorf("a nurse adds a device: %d, want 403", st)
	}
	if st, _ := call(nurse, "GET", "/web/api/v1/patients", "", ""); st != 200 {
		t.Errorf("a nurse lists patients through the web app: %d", st)
	}
	if st, _ := call(nurse, "GET", "/admin", "", ""); st != http.StatusForbidden {
		t.Errorf("a nurse opens the admin page: %d, want 403", st)
	}
	anon := &http.Client{}
	if st, _ := call(anon, "GET", "/web/api/v1/patients", "", ""); st != http.StatusUnauthorized {
		t.Errorf("no session: %d, want 401", st)
	}
}
