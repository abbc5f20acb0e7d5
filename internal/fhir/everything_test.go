package fhir

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Everything gives one valid FHIR Bundle with the patient, their devices,
// every observation, alerts, events and reviews — and nothing of another
// patient; after ErasePatient nothing of them is left to export.
func TestEverythingAndErasure(t *testing.T) {
	_, st := setup(t)
	must(t, st.SaveAlert(ctx, &vigil.Alert{ID: "a1", PatientID: "p1", RuleID: "hr-high", Title: "Heart rate high", Priority: vigil.PriorityHigh, State: vigil.AlertFiring,
		Since: t0, Raised: t0, Updated: t0, History: []vigil.AlertEvent{{Time: t0, State: vigil.AlertFiring}}}))
	must(t, st.SaveAlert(ctx, &vigil.Alert{ID: "a2", PatientID: "p2", RuleID: "hr-low", Title: "Heart rate low", Priority: vigil.PriorityHigh, State: vigil.AlertFiring,
		Since: t0, Raised: t0, Updated: t0}))
	_, err := st.AppendEvents(ctx, []*vigil.DeviceEvent{{DeviceID: "mon", ID: "e1", PatientID: "p1", Type: "bottle-opened", Time: t0, Received: t0}})
	must(t, err)
	must(t, st.AddReview(ctx, &vigil.Review{ID: "r1", PatientID: "p1", By: "dr", At: t0, Minutes: 10, Note: "reviewed", Logged: t0}))

	var buf bytes.Buffer
	n, err := Everything(ctx, st, "p1", t0.Add(5*time.Hour), &buf)
	must(t, err)
	var b struct {
		ResourceType, Type string
		Entry              []struct{ Resource map[string]any }
	}
	if err := json.Unmarshal(buf.Bytes(), &b); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	kinds := map[string]int{}
	for _, e := range b.Entry {
		kinds[e.Resource["resourceType"].(string)]++
		if s, _ := json.Marshal(e.Resource); bytes.Contains(s, []byte("p2")) || bytes.Contains(s, []byte("MRN-2")) {
			t.Fatalf("another patient in the export: %s", s)
		}
	}
	if b.Type != "collection" || n != len(b.Entry) || kinds["Patient"] != 1 || kinds["Device"] != 2 || kinds["Observation"] < 250 || kinds["DetectedIssue"] != 1 || kinds["Basic"] != 2 {
		t.Fatalf("export: %d entries, %v", n, kinds)
	}
	var all map[string]any
	json.Unmarshal(buf.Bytes(), &all)
	validate(t, []any{all})

	rep, err := st.ErasePatient(ctx, "p1")
	must(t, err)
	if rep.Series == 0 || rep.Alerts != 1 || rep.Events != 1 || rep.Reviews != 1 || rep.Assignments != 2 {
		t.Fatalf("erasure report: %+v", rep)
	}
	if _, err := st.FindPatientByID(ctx, "p1"); vigil.ErrorCode(err) != vigil.ENOTFOUND {
		t.Fatalf("patient after erasure: %v", err)
	}
	obs, _, err := st.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Limit: 10})
	must(t, err)
	as, _ := st.FindAlerts(ctx, vigil.AlertFilter{PatientID: "p1"})
	evs, _ := st.FindEvents(ctx, "p1", time.Time{}, t0.Add(time.Hour))
	if len(obs) != 0 || len(as) != 0 || len(evs) != 0 {
		t.Fatalf("left after erasure: %d observations, %d alerts, %d events", len(obs), len(as), len(evs))
	}
	if got, _ := st.Assignments(ctx, "mon"); len(got) != 0 {
		t.Fatalf("assignments to the erased patient left: %+v", got)
	}
	// The other patient is whole; the devices stay.
	if obs, _, _ := st.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p2"}); len(obs) != 1 {
		t.Fatalf("p2's observations: %d", len(obs))
	}
	if _, err := st.FindDeviceByID(ctx, "mon"); err != nil {
		t.Fatal(err)
	}
	// A device assigned afresh to a new patient stores under new series.
	must(t, st.CreatePatient(ctx, &vigil.Patient{ID: "p3"}))
	must(t, st.AssignDevice(ctx, "mon", "p3", t0.Add(10*time.Hour)))
	_, err = st.AppendReadings(ctx, []*vigil.Reading{{DeviceID: "mon", ID: "new1", PatientID: "p3", Time: t0.Add(11 * time.Hour), Received: t0.Add(11 * time.Hour),
		Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 70, Unit: "/min"}}}})
	must(t, err)
	if obs, _, _ := st.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p3"}); len(obs) != 1 {
		t.Fatalf("p3's observations: %d", len(obs))
	}
}
