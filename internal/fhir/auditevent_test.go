package fhir

import (
	"testing"
	"time"

	"github.com/vigil-iomt/vigil/internal/audit"
)

// The audit log's FHIR export (GET /api/v1/audit?format=fhir) is valid R4
// AuditEvent for each kind of entry Vigil records.
func TestAuditEventsValidate(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var all []any
	for _, e := range []audit.Entry{
		{Index: 1, Time: at, Actor: "dr", Role: "clinician", Action: "GET /fhir/R4/Observation", Resource: "/fhir/R4/Observation", Patient: "p1", Outcome: audit.Success, Remote: "10.0.0.7"},
		{Index: 2, Time: at, Action: "GET /api/v1/patients/{id}", Resource: "/api/v1/patients/p1", Patient: "p1", Outcome: audit.Denied, Detail: "unauthorized", Remote: "10.0.0.8"},
		{Index: 3, Time: at, Actor: "dr", Action: "login", Outcome: audit.Denied, Detail: "unauthorized"},
		{Index: 4, Time: at, Actor: "nurse", Role: "nurse", Action: "POST /api/v1/patients/{id}/break-glass", Resource: "/api/v1/patients/p2/break-glass", Patient: "p2", Outcome: audit.Success, Detail: "BREAK-GLASS: arrest call"},
		{Index: 5, Time: at, Actor: "root", Role: "admin", Action: "DELETE /api/v1/deadletters/{id}", Resource: "/api/v1/deadletters/x", Outcome: audit.Failure, Detail: "internal"},
	} {
		ev := e.AuditEvent()
		if ev["recorded"] != "2026-12-01T10:00:00Z" {
			t.Errorf("entry %d recorded %v", e.Index, ev["recorded"])
		}
		all = append(all, ev)
	}
	want := []struct{ action, outcome string }{{"R", "0"}, {"R", "4"}, {"E", "4"}, {"C", "0"}, {"D", "8"}}
	for i, w := range want {
		ev := all[i].(map[string]any)
		if ev["action"] != w.action || ev["outcome"] != w.outcome {
			t.Errorf("entry %d: action %v outcome %v, want %s %s", i+1, ev["action"], ev["outcome"], w.action, w.outcome)
		}
	}
	validate(t, all)
}
