package node_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/audit"
)

// A nurse with a ward sees only its patients — API, FHIR and web app —
// until she breaks the glass for another, with a reason, which is audited
// and reported.
func TestCareTeamsAndBreakGlass(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	must(t, e.n.Admin.AddPatient(ctx, &vigil.Patient{ID: "w1-a", Identifier: "MRN-W1A", Ward: "W1"}))
	must(t, e.n.Admin.AddPatient(ctx, &vigil.Patient{ID: "w2-b", Identifier: "MRN-W2B", Ward: "W2"}))
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "nurse-w1", Role: vigil.RoleNurse, Wards: []string{"W1"}}, "correct horse battery"))
	tok, _, err := e.n.Admin.CreateToken(ctx, "nurse-w1", admin.TokenSpec{Name: "test", TTL: time.Hour})
	must(t, err)
	call := func(method, path, body string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(method, e.n.URL()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		if out != nil {
			json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}
	var ps []vigil.Patient
	if st := call("GET", "/api/v1/patients", "", &ps); st != 200 || len(ps) != 1 || ps[0].ID != "w1-a" {
		t.Fatalf("patients of ward W1: %d %+v", st, ps)
	}
	var problem struct{ Detail string }
	if st := call("GET", "/api/v1/patients/w2-b", "", &problem); st != 403 || !strings.Contains(problem.Detail, "break the glass") {
		t.Fatalf("another ward's patient: %d %+v", st, problem)
	}
	if st := call("GET", "/api/v1/patients/w2-b/news2", "", nil); st != 403 {
		t.Fatalf("another ward's NEWS2: %d", st)
	}
	if st := call("GET", "/fhir/R4/Patient/w2-b", "", nil); st != 403 {
		t.Fatalf("FHIR Patient of another ward: %d", st)
	}
	if st := call("GET", "/fhir/R4/Observation?patient=w2-b", "", nil); st != 403 {
		t.Fatalf("FHIR Observations of another ward: %d", st)
	}
	if st := call("GET", "/fhir/R4/Patient/w1-a", "", nil); st != 200 {
		t.Fatalf("FHIR Patient of her ward: %d", st)
	}

	// The web app's ward view shows W1 only.
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	req, _ := http.NewRequest("POST", e.n.URL()+"/login", strings.NewReader(url.Values{"user": {"nurse-w1"}, "password": {"correct horse battery"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.n.URL())
	resp, err := hc.Do(req)
	must(t, err)
	resp.Body.Close()
	resp, err = hc.Get(e.n.URL() + "/web/api/ward")
	must(t, err)
	var ward struct{ Patients []struct{ ID string } }
	json.NewDecoder(resp.Body).Decode(&ward)
	resp.Body.Close()
	if len(ward.Patients) != 1 || ward.Patients[0].ID != "w1-a" {
		t.Fatalf("web ward view: %+v", ward)
	}

	// Break-glass: a reason is required; then the patient opens.
	if st := call("POST", "/api/v1/patients/w2-b/break-glass", `{"reason":"help"}`, nil); st != 400 {
		t.Fatalf("break-glass without a real reason: %d", st)
	}
	if st := call("POST", "/api/v1/patients/w2-b/break-glass", `{"reason":"cardiac arrest call, covering W2","minutes":30}`, nil); st != 201 {
		t.Fatalf("break-glass: %d", st)
	}
	if st := call("GET", "/api/v1/patients/w2-b", "", nil); st != 200 {
		t.Fatalf("after break-glass: %d", st)
	}
	if st := call("GET", "/fhir/R4/Observation?patient=w2-b", "", nil); st != 200 {
		t.Fatalf("FHIR after break-glass: %d", st)
	}
	admin := e.adminToken(t)
	req, _ = http.NewRequest("GET", e.n.URL()+"/api/v1/reports/break-glass", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err = http.DefaultClient.Do(req)
	must(t, err)
	var uses []struct {
		User, Patient, Reason string
	}
	json.NewDecoder(resp.Body).Decode(&uses)
	resp.Body.Close()
	if len(uses) != 1 || uses[0].User != "nurse-w1" || uses[0].Patient != "w2-b" || !strings.Contains(uses[0].Reason, "cardiac arrest") {
		t.Fatalf("break-glass report: %+v", uses)
	}
	found := false
	must(t, e.n.AuditStore.ScanAudit(ctx, 0, func(_ uint64, b []byte) error {
		var r struct{ Entry audit.Entry }
		json.Unmarshal(b, &r)
		found = found || r.Entry.Action == "BREAK-GLASS" && r.Entry.Actor == "nurse-w1" && r.Entry.Patient == "w2-b"
		return nil
	}))
	if !found {
		t.Fatal("no BREAK-GLASS audit entry")
	}
}
