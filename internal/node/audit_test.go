package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/audit"
)

// Logins, failed logins, PHI reads and configuration changes go into the
// audit log, which verifies.
func TestAuditTrail(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	call := func(method, path, token, body string) int {
		req, _ := http.NewRequest(method, e.n.URL()+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := call("GET", "/api/v1/patients/p1", "vgl_bad_token", ""); st != 401 {
		t.Fatalf("bad token: %d", st)
	}
	if st := call("GET", "/api/v1/patients/p1", e.token, ""); st != 200 {
		t.Fatalf("read patient: %d", st)
	}
	if st := call("GET", "/fhir/R4/Observation?patient=p1", e.token, ""); st != 200 {
		t.Fatalf("FHIR search: %d", st)
	}
	if st := call("PUT", "/api/v1/rules/fever", e.token, `{"title":"Fever","priority":"low","expr":"value(\"8310-5\") > 38.5"}`); st != 201 {
		t.Fatalf("rule: %d", st)
	}
	form := url.Values{"user": {"dr"}, "password": {"wrong password"}}
	req, _ := http.NewRequest("POST", e.n.URL()+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()

	var got []audit.Entry
	must(t, e.n.AuditStore.ScanAudit(ctx, 0, func(_ uint64, b []byte) error {
		var r struct{ Entry audit.Entry }
		must(t, json.Unmarshal(b, &r))
		got = append(got, r.Entry)
		return nil
	}))
	find := func(action, outcome, actor, patient string) bool {
		for _, x := range got {
			if x.Action == action && x.Outcome == outcome && x.Actor == actor && x.Patient == patient {
				return true
			}
		}
		return false
	}
	for _, w := range []struct{ action, outcome, actor, patient string }{
		{"GET /api/v1/patients/{id}", audit.Denied, "", "p1"},
		{"GET /api/v1/patients/{id}", audit.Success, "dr", "p1"},
		{"GET /fhir/R4/Observation", audit.Success, "dr", "p1"},
		{"PUT /api/v1/rules/{id}", audit.Success, "dr", ""},
		{"login", audit.Denied, "dr", ""},
	} {
		if !find(w.action, w.outcome, w.actor, w.patient) {
			t.Errorf("no audit entry %+v in %+v", w, got)
		}
	}
	adminTok := e.adminToken(t)
	var rep audit.Report
	req, _ = http.NewRequest("GET", e.n.URL()+"/api/v1/audit/verify", nil)
	req.Header.Set("Authorization", "Bearer "+adminTok)
	resp, err = http.DefaultClient.Do(req)
	must(t, err)
	json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if resp.StatusCode != 200 || !rep.OK || rep.Records < uint64(len(got)) {
		t.Fatalf("verify: %d %+v", resp.StatusCode, rep)
	}

	// An auditor reads the trail, filtered and paged, and as FHIR.
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "officer", Role: vigil.RoleAuditor}, "correct horse battery"))
	officer, _, err := e.n.Admin.CreateToken(ctx, "officer", admin.TokenSpec{Name: "audit", TTL: time.Hour})
	must(t, err)
	get := func(path string, v any) int {
		req, _ := http.NewRequest("GET", e.n.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+officer)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(v)
		return resp.StatusCode
	}
	var p1, p2 audit.Page
	if st := get("/api/v1/audit?actor=dr&limit=2", &p1); st != 200 || len(p1.Entries) != 2 || p1.Next == 0 {
		t.Fatalf("first page: %d %+v", st, p1)
	}
	if st := get(fmt.Sprintf("/api/v1/audit?actor=dr&limit=100&after=%d", p1.Next), &p2); st != 200 || len(p2.Entries) < 2 || p2.Next != 0 {
		t.Fatalf("second page: %d %+v", st, p2)
	}
	for _, x := range append(p1.Entries, p2.Entries...) {
		if x.Actor != "dr" {
			t.Fatalf("filter by actor returned %+v", x)
		}
	}
	if p2.Entries[0].Index <= p1.Entries[1].Index {
		t.Fatalf("pages overlap: %d after %d", p2.Entries[0].Index, p1.Entries[1].Index)
	}
	var denied audit.Page
	if get("/api/v1/audit?outcome=denied&patient=p1", &denied); len(denied.Entries) != 1 || denied.Entries[0].Actor != "" {
		t.Fatalf("denied reads of p1: %+v", denied)
	}
	var bundle struct {
		ResourceType string
		Entry        []struct{ Resource map[string]any }
	}
	if st := get("/api/v1/audit?patient=p1&format=fhir", &bundle); st != 200 || bundle.ResourceType != "Bundle" || len(bundle.Entry) < 3 {
		t.Fatalf("FHIR export: %d %+v", st, bundle)
	}
	for _, x := range bundle.Entry {
		if x.Resource["resourceType"] != "AuditEvent" {
			t.Fatalf("FHIR export holds %v", x.Resource["resourceType"])
		}
	}
	var prob map[string]any
	if st := get("/api/v1/audit?from=yesterday", &prob); st != 400 || prob["field"] != "from" {
		t.Fatalf("bad from: %d %v", st, prob)
	}
	if st := get("/api/v1/patients/p1", &prob); st != 403 {
		t.Fatalf("auditor reading a patient: %d, want 403", st)
	}
}

// adminToken adds an admin user and returns a token for it.
func (e *env) adminToken(t *testing.T) string {
	t.Helper()
	must(t, e.n.Admin.AddUser(context.Background(), &vigil.User{ID: "root", Role: vigil.RoleAdmin}, "correct horse battery"))
	tok, _, err := e.n.Admin.CreateToken(context.Background(), "root", admin.TokenSpec{Name: "test", TTL: time.Hour})
	must(t, err)
	return tok
}
