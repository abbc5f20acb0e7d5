package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

// A home programme: a clinician sets a schedule, the pill bottle posts
// its openings (retries are harmless), and the adherence report counts
// doses taken and missed.
func TestMedicationAdherence(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	bottleSecret, err := e.n.Admin.AddDevice(ctx, &vigil.Device{ID: "bottle-1", Kind: vigil.DevicePillBottle})
	must(t, err)
	now := time.Now().UTC()
	must(t, e.n.Admin.Assign(ctx, "bottle-1", "p1", now.Add(-72*time.Hour)))
	api := func(method, path, body string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(method, e.n.URL()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		if out != nil {
			json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}
	post := func(body string, out any) int {
		t.Helper()
		req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/bottle-1/events", strings.NewReader(body))
		req.SetBasicAuth("bottle-1", bottleSecret)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(out)
		return resp.StatusCode
	}
	var problem struct{ Field string }
	if st := api("PUT", "/api/v1/patients/p1/medications", `{"medications":[{"id":"metformin","name":"Metformin 500 mg","times":["08:00"],"device":"mon-1","timeZone":"UTC"}]}`, &problem); st != 400 || problem.Field != "medications[0].device" {
		t.Fatalf("a monitor as the bottle: %d %+v", st, problem)
	}
	// A dose every two hours, ±60 min.
	var times []string
	for h := 0; h < 24; h += 2 {
		times = append(times, fmt.Sprintf("%q", fmt.Sprintf("%02d:00", h)))
	}
	sched := `{"medications":[{"id":"abx","name":"Amoxicillin 500 mg","times":[` + strings.Join(times, ",") + `],"device":"bottle-1","timeZone":"UTC"}]}`
	var meds []vigil.MedicationSchedule
	if st := api("PUT", "/api/v1/patients/p1/medications", sched, &meds); st != 200 || len(meds) != 1 || meds[0].Start.IsZero() || meds[0].WindowMinutes != 60 {
		t.Fatalf("set schedule: %d %+v", st, meds)
	}
	var out struct{ Accepted, Duplicates int }
	if st := post(fmt.Sprintf(`{"id":"o0","time":%q,"type":"bottle-opened"}`, now.Format(time.RFC3339)), &out); st != 200 || out.Accepted != 1 {
		t.Fatalf("post: %d %+v", st, out)
	}
	if st := post(fmt.Sprintf(`{"id":"o0","time":%q,"type":"bottle-opened"}`, now.Format(time.RFC3339)), &out); st != 200 || out.Duplicates != 1 {
		t.Fatalf("retry: %d %+v", st, out)
	}
	if st := post(`{"id":"x","time":"2026-01-01T00:00:00Z","type":"lid-shaken"}`, &problem); st != 400 || problem.Field != "[0].type" {
		t.Fatalf("unknown type: %d %+v", st, problem)
	}
	if st := post(`{"id":"x","time":"2020-01-01T00:00:00Z","type":"bottle-opened"}`, &problem); st != 400 || problem.Field != "[0].time" {
		t.Fatalf("unassigned: %d %+v", st, problem)
	}
	evsStored, err := e.n.Store.FindEvents(ctx, "p1", now.Add(-time.Minute), now.Add(time.Minute))
	must(t, err)
	if len(evsStored) != 1 {
		t.Fatalf("stored events: %+v", evsStored)
	}
	var reps []struct {
		Medication                        string
		Scheduled, Taken, Missed, Pending int
	}
	q := fmt.Sprintf("/api/v1/patients/p1/adherence?from=%s&to=%s", now.Add(-time.Hour).Format(time.RFC3339), now.Add(5*time.Hour).Format(time.RFC3339))
	if st := api("GET", q, "", &reps); st != 200 || len(reps) != 1 || reps[0].Medication != "abx" || reps[0].Scheduled < 2 || reps[0].Missed != 0 || reps[0].Taken+reps[0].Pending != reps[0].Scheduled {
		t.Fatalf("adherence: %d %+v", st, reps)
	}
}
