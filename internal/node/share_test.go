package node_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/audit"
)

// A clinician shares one patient with a named external clinician for a
// few hours: the link opens that patient's page read-only and nothing
// else, is refused by the API and FHIR, is audited (SHARE, without its
// secret), and ends when its maker revokes it.
func TestShareLinks(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	must(t, e.n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p2", Identifier: "MRN-2", Family: "Roe", Ward: "W2"}))
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "dr-w1", Role: vigil.RoleClinician, Wards: []string{"W1"}}, "correct horse battery"))
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "dr-other", Role: vigil.RoleClinician}, "correct horse battery"))
	tok := func(user string) string {
		s, _, err := e.n.Admin.CreateToken(ctx, user, admin.TokenSpec{Name: "t", TTL: time.Hour})
		must(t, err)
		return s
	}
	drW1, drOther := tok("dr-w1"), tok("dr-other")
	call := func(method, path, token string, body, out any) int {
		t.Helper()
		return e.call(t, method, path, token, body, out)
	}
	consult := map[string]any{"guest": "Dr Ana Silva, St Elsewhere cardiology", "reason": "remote cardiology consultation on the arrhythmia", "hours": 4}
	for _, c := range []struct {
		token, path string
		body        map[string]any
		status      int
	}{
		{e.token, "/api/v1/patients/p1/shares", map[string]any{"guest": "Dr X", "reason": "consult please", "hours": 100}, 400},
		{e.token, "/api/v1/patients/p1/shares", map[string]any{"guest": "Dr X", "hours": 2}, 400},
		{e.token, "/api/v1/patients/nobody/shares", consult, 404},
		{drW1, "/api/v1/patients/p2/shares", consult, 403}, // not her ward
	} {
		if st := call("POST", c.path, c.token, c.body, nil); st != c.status {
			t.Errorf("POST %s %v: %d, want %d", c.path, c.body, st, c.status)
		}
	}
	var link struct {
		ID, URL, Token string
		Expires        time.Time
	}
	if st := call("POST", "/api/v1/patients/p1/shares", e.token, consult, &link); st != 201 || !strings.Contains(link.URL, "/share/") || time.Until(link.Expires) < 3*time.Hour {
		t.Fatalf("share: %d %+v", st, link)
	}

	// The external clinician opens the link in a browser.
	jar, _ := cookiejar.New(nil)
	guest := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) int {
		resp, err := guest.Get(e.n.URL() + path)
		must(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	resp, err := guest.Get(link.URL)
	must(t, err)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "/patients/p1") || resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("open link: %d %s", resp.StatusCode, page)
	}
	for path, want := range map[string]int{"/patients/p1": 200, "/web/api/patients/p1": 200, "/patients/p2": 403, "/web/api/patients/p2": 403, "/alerts": 403, "/devices": 403, "/admin": 403} {
		if st := get(path); st != want {
			t.Errorf("guest GET %s: %d, want %d", path, st, want)
		}
	}
	// The link is not an API or FHIR credential.
	if st := call("GET", "/api/v1/patients/p1", link.Token, nil, nil); st != 403 {
		t.Errorf("share token on the API: %d", st)
	}
	if st := call("GET", "/fhir/R4/Patient/p1", link.Token, nil, nil); st != 403 {
		t.Errorf("share token on FHIR: %d", st)
	}
	// Another clinician cannot end it; its maker can, at once.
	if st := call("DELETE", "/api/v1/shares/"+link.ID, drOther, nil, nil); st != 403 {
		t.Errorf("revoke by another clinician: %d", st)
	}
	if st := call("DELETE", "/api/v1/shares/"+link.ID, e.token, nil, nil); st != 204 {
		t.Fatalf("revoke: %d", st)
	}
	if st := get("/patients/p1"); st == 200 {
		t.Fatal("a revoked link still opens the patient")
	}
	if st := get(strings.TrimPrefix(link.URL, e.n.URL())); st != 404 {
		t.Errorf("a revoked link: %d, want 404", st)
	}

	// Audited: who shared with whom and why; the guest's reads as "guest";
	// the link's secret nowhere.
	page2, err := audit.Find(ctx, e.n.AuditStore, audit.Query{Limit: 1000})
	must(t, err)
	var share, opened, read bool
	// "vgl_" + id + "_" + secret: the secret (base64url) may hold "_"
	// itself, so it is what follows the second one, not the last.
	parts := strings.SplitN(link.Token, "_", 3)
	if len(parts) != 3 || len(parts[2]) < 16 {
		t.Fatalf("share token %q is not vgl_{id}_{secret}", link.Token)
	}
	secret := parts[2]
	for _, en := range page2.Entries {
		b, _ := json.Marshal(en)
		if strings.Contains(string(b), secret) {
			t.Fatalf("the link's secret is in the audit log: %s", b)
		}
		share = share || (en.Action == "SHARE" && en.Actor == "dr" && strings.Contains(en.Detail, "Dr Ana Silva") && en.Patient == "p1")
		opened = opened || (en.Action == "open share link" && en.Role == "guest" && en.Actor == "share:"+link.ID)
		read = read || (en.Actor == "share:"+link.ID && en.Role == "guest" && strings.Contains(en.Action, "/patients/"))
	}
	if !share || !opened || !read {
		t.Fatalf("audit: SHARE %v, opened %v, reads %v", share, opened, read)
	}
}
