package node_test

import (
	"context"
	"strings"
	"testing"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/httpapi"
)

// A token with SMART scopes, issued through the admin API, works on FHIR
// for what its scopes allow and nowhere else.
func TestScopedTokens(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	must(t, e.n.Admin.AddPatient(ctx, &vigil.Patient{ID: "pa", Identifier: "MRN-A", Family: "Ames"}))
	must(t, e.n.Admin.AddPatient(ctx, &vigil.Patient{ID: "pb", Identifier: "MRN-B", Family: "Bell"}))
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "dr-s", Role: vigil.RoleClinician}, "correct horse battery"))
	adminTok := e.adminToken(t)
	call := func(method, path, token string, body, out any) int {
		t.Helper()
		return e.call(t, method, path, token, body, out)
	}
	issue := func(req httpapi.TokenRequest) (int, string, string) {
		var out struct {
			Token  string
			Record vigil.Token
			Detail string
		}
		st := call("POST", "/api/v1/users/dr-s/tokens", adminTok, req, &out)
		return st, out.Token, out.Detail
	}
	for _, bad := range []httpapi.TokenRequest{
		{Scopes: []string{"user/Observation.sr"}},           // letters out of order
		{Scopes: []string{"patient/*.read"}},                // no launch patient
		{Scopes: []string{"patient/*.read"}, Patient: "zz"}, // unknown patient
		{Scopes: []string{"system/*.read"}},                 // a clinician is not a backend service
		{Patient: "pa"},                                     // a launch patient without scopes
	} {
		if st, _, detail := issue(bad); st != 400 && st != 404 || detail == "" {
			t.Errorf("token %+v: %d %q", bad, st, detail)
		}
	}
	st, launch, _ := issue(httpapi.TokenRequest{Name: "chart app", TTL: "1h", Scopes: []string{"launch/patient", "patient/*.read"}, Patient: "pa"})
	if st != 201 || launch == "" {
		t.Fatalf("patient-scoped token: %d", st)
	}
	var b struct {
		Total int `json:"total"`
		Entry []struct {
			Resource struct{ ID string } `json:"resource"`
		} `json:"entry"`
	}
	if st := call("GET", "/fhir/R4/Patient", launch, nil, &b); st != 200 || b.Total != 1 || b.Entry[0].Resource.ID != "pa" {
		t.Fatalf("launch patient search: %d %+v", st, b)
	}
	if st := call("GET", "/fhir/R4/Patient/pb", launch, nil, nil); st != 403 {
		t.Fatalf("another patient with a patient/ scope: %d", st)
	}
	var problem struct{ Detail string }
	if st := call("GET", "/api/v1/patients", launch, nil, &problem); st != 403 || !strings.Contains(problem.Detail, "FHIR") {
		t.Fatalf("scoped token on the admin API: %d %+v", st, problem)
	}
	st, obs, _ := issue(httpapi.TokenRequest{Scopes: []string{"user/Observation.read"}})
	if st != 201 {
		t.Fatalf("user-scoped token: %d", st)
	}
	if st := call("GET", "/fhir/R4/Observation?patient=pb", obs, nil, nil); st != 200 {
		t.Fatalf("user/Observation.read search: %d", st)
	}
	if st := call("GET", "/fhir/R4/Patient/pb", obs, nil, nil); st != 403 {
		t.Fatalf("user/Observation.read on Patient: %d", st)
	}
}
