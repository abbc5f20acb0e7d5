package ehrsync

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/npmtools"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

var ctx = context.Background()

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ehr starts a real FHIR server standing in for the EHR.
func ehr(t *testing.T, env ...string) string { return npmtools.FHIRServer(t, env...) }

// search asks the EHR for resources of a type.
func search(t *testing.T, base, token, query string) []map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	var b struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&b))
	var out []map[string]any
	for _, e := range b.Entry {
		out = append(out, e.Resource)
	}
	return out
}

func open(t *testing.T) *pebble.Store {
	o := pebble.DefaultOptions()
	o.CompactInterval, o.ChangeFeed = -1, true
	st, err := pebble.Open(t.TempDir(), o)
	must(t, err)
	t.Cleanup(func() { st.Close() })
	must(t, st.CreatePatient(ctx, &vigil.Patient{ID: "p1", Identifier: "MRN-1", Family: "Doe"}))
	must(t, st.CreatePatient(ctx, &vigil.Patient{ID: "p2"}))
	return st
}

func waitDrained(t *testing.T, st *pebble.Store, s *Syncer) {
	t.Helper()
	// Generous: CI runs this beside the whole suite under the race
	// detector, and the EHR stand-in is a Node.js process (once 100 of 123
	// resources were pushed in 30 s there).
	for deadline := time.Now().Add(90 * time.Second); ; {
		es, err := st.FeedAfter(ctx, 0, 1)
		must(t, err)
		if len(es) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("feed not drained; sync status %+v", s.Status())
		}
		s.Kick()
		time.Sleep(20 * time.Millisecond)
	}
}

// Readings and alerts reach a real FHIR server (Medplum) as conditional
// updates: through outages (503s) and lost answers (resent, stored
// once), with a permanent refusal kept as a dead letter, and patients
// referenced by their MRN.
func TestSyncToFHIRServer(t *testing.T) {
	base := ehr(t, "TOKEN=ehr-secret", "FAIL_FIRST=2", "LOSE_FIRST=1", "REJECT_CODE=2339-0")
	st := open(t)
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	var rs []*vigil.Reading
	for i := range 120 {
		rs = append(rs, &vigil.Reading{DeviceID: "mon", ID: fmt.Sprint("m", i), PatientID: "p1", Time: t0.Add(time.Duration(i) * time.Second), Received: t0.Add(time.Duration(i) * time.Second),
			Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: float64(60 + i%40), Unit: "/min"}}})
	}
	rs = append(rs,
		&vigil.Reading{DeviceID: "cuff", ID: "b1", PatientID: "p1", Time: t0.Add(5 * time.Minute), Values: []vigil.Measurement{
			{Code: vigil.LOINCSystolic, Value: 128, Unit: "mm[Hg]"}, {Code: vigil.LOINCDiastolic, Value: 82, Unit: "mm[Hg]"}}},
		&vigil.Reading{DeviceID: "gluco", ID: "g1", PatientID: "p2", Time: t0.Add(6 * time.Minute), Values: []vigil.Measurement{
			{Code: vigil.LOINCGlucoseMass, Value: 104, Unit: "mg/dL"}}},
	)
	_, err := st.AppendReadings(ctx, rs)
	must(t, err)
	alert := &vigil.Alert{ID: "a1", PatientID: "p1", RuleID: "hr-high", Title: "Heart rate above 130", Priority: vigil.PriorityHigh, State: vigil.AlertFiring, Raised: t0, Updated: t0,
		History: []vigil.AlertEvent{{Time: t0, State: vigil.AlertFiring}}}
	must(t, st.SaveAlert(ctx, alert))

	s, err := Start(Options{URL: base, Token: "ehr-secret", Store: st, Alerts: true, Batch: 50, Backoff: 10 * time.Millisecond, Poll: 20 * time.Millisecond})
	must(t, err)
	defer s.Close()
	waitDrained(t, st, s)

	obs := search(t, base, "ehr-secret", "Observation?_count=1000")
	byCode := map[string]int{}
	for _, o := range obs {
		byCode[o["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"].(string)]++
		ref := o["subject"].(map[string]any)["identifier"].(map[string]any)
		if ref["value"] != "MRN-1" || ref["system"] != "urn:vigil:patient-identifier" {
			t.Fatalf("subject: %v", o["subject"])
		}
	}
	if len(obs) != 121 || byCode[vigil.LOINCHeartRate] != 120 || byCode[vigil.LOINCBPPanel] != 1 {
		t.Fatalf("the EHR holds %d Observations %v, want 120 heart rates and 1 BP panel, each once", len(obs), byCode)
	}
	dls, err := st.FindDeadLetters(ctx, vigil.DeadLetterFilter{})
	must(t, err)
	if len(dls) != 1 || dls[0].Source != "ehr-sync" || dls[0].Reason != "ehr-refused" {
		t.Fatalf("dead letters: %+v", dls)
	}
	t.Logf("refused: %s", dls[0].Message)

	// The alert is acknowledged: the same DetectedIssue is updated.
	alert.State = vigil.AlertAcknowledged
	alert.History = append(alert.History, vigil.AlertEvent{Time: t0.Add(time.Minute), State: vigil.AlertAcknowledged, By: "dr", Note: "seen"})
	must(t, st.SaveAlert(ctx, alert))
	s.Kick()
	waitDrained(t, st, s)
	dis := search(t, base, "ehr-secret", "DetectedIssue?identifier="+url.QueryEscape("urn:vigil:alert|a1"))
	if len(dis) != 1 || len(dis[0]["mitigation"].([]any)) != 1 || dis[0]["severity"] != "high" {
		t.Fatalf("DetectedIssue in the EHR: %v", dis)
	}
	if st := s.Status(); st.DeadLettered != 1 || st.Pushed < 123 {
		t.Fatalf("status: %+v", st)
	}
}

// A wrong token (401) is not a refusal of the data: nothing is dead-
// lettered, the feed keeps everything, and the status says why.
func TestSyncKeepsDataWhenUnauthorized(t *testing.T) {
	base := ehr(t, "TOKEN=right")
	st := open(t)
	_, err := st.AppendReadings(ctx, []*vigil.Reading{{DeviceID: "mon", ID: "1", PatientID: "p1", Time: time.Now().Add(-time.Minute), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 70, Unit: "/min"}}}})
	must(t, err)
	s, err := Start(Options{URL: base, Token: "wrong", Store: st, Backoff: 10 * time.Millisecond, Poll: 10 * time.Millisecond})
	must(t, err)
	defer s.Close()
	for deadline := time.Now().Add(10 * time.Second); s.Status().LastError == ""; {
		if time.Now().After(deadline) {
			t.Fatal("no error reported")
		}
		time.Sleep(10 * time.Millisecond)
	}
	es, _ := st.FeedAfter(ctx, 0, 10)
	dls, _ := st.FindDeadLetters(ctx, vigil.DeadLetterFilter{})
	if len(es) != 1 || len(dls) != 0 {
		t.Fatalf("feed %d, dead letters %d", len(es), len(dls))
	}
	t.Logf("status: %+v", s.Status())
}
