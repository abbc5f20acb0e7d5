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

// A clinician writes a CEL rule over the API: a broken one is refused
// with where it is broken, a good one is backtested over stored history,
// fires on live readings, and every change is kept with who and why.
func TestRulesAPI(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	api := func(method, path, body string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(method, e.n.URL()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		if out != nil {
			must(t, json.NewDecoder(resp.Body).Decode(out))
		}
		return resp.StatusCode
	}
	ingest := func(id string, at time.Time, hr int) {
		t.Helper()
		req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/readings",
			strings.NewReader(string(reading(id, at, fmt.Sprintf(`{"code":"8867-4","value":%d,"unit":"/min"}`, hr)))))
		req.SetBasicAuth(e.device, e.secret)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("ingest: %d", resp.StatusCode)
		}
	}

	var problem struct {
		Field, Detail string
	}
	if st := api("PUT", "/api/v1/rules/tachy", `{"title":"Tachycardia","priority":"high","expr":"mean(\"8867-4\", duration(\"5m\")) >"}`, &problem); st != 400 ||
		problem.Field != "expr" || !strings.Contains(problem.Detail, "1:") {
		t.Fatalf("broken rule: %d %+v", st, problem)
	}

	// History first (the device is assigned since an hour ago): ten minutes at 150, 45 minutes ago.
	now := time.Now().UTC()
	for i := range 30 {
		hr := 80
		if i >= 10 && i < 20 {
			hr = 150
		}
		ingest(fmt.Sprintf("h%d", i), now.Add(-55*time.Minute+time.Duration(i)*time.Minute), hr)
	}
	rule := `{"title":"Sustained tachycardia","priority":"high","forSeconds":60,"expr":"mean(\"8867-4\", duration(\"5m\")) > 130"}`
	var rep struct {
		Alerts     int
		PerPatient map[string]int
		List       []struct{ Patient string }
	}
	bt := fmt.Sprintf(`{"rule":{"id":"tachy",%s},"from":%q,"to":%q}`, strings.TrimPrefix(strings.TrimSuffix(rule, "}"), "{"), now.Add(-2*time.Hour).Format(time.RFC3339), now.Format(time.RFC3339))
	if st := api("POST", "/api/v1/rules/backtest", bt, &rep); st != 200 || rep.Alerts != 1 || rep.PerPatient["p1"] != 1 {
		t.Fatalf("backtest: %d %+v (%s)", st, rep, bt)
	}

	var saved vigil.Rule
	if st := api("PUT", "/api/v1/rules/tachy", rule, &saved); st != 201 || saved.Version != 1 || !saved.Enabled || saved.SavedBy != "dr" {
		t.Fatalf("save: %d %+v", st, saved)
	}
	// Live: four minutes at 160 now.
	for i := range 4 {
		ingest(fmt.Sprintf("l%d", i), now.Add(-3*time.Minute+time.Duration(i)*time.Minute), 160)
	}
	var fired *vigil.Alert
	for deadline := time.Now().Add(5 * time.Second); fired == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		as, err := e.n.Alerts.Alerts(ctx, vigil.AlertFilter{PatientID: "p1"})
		must(t, err)
		for _, a := range as {
			if a.RuleID == "tachy" {
				fired = a
			}
		}
	}
	if fired == nil || fired.State != vigil.AlertFiring || fired.Priority != vigil.PriorityHigh || !strings.Contains(fired.Detail, "160 /min") {
		t.Fatalf("live alert: %+v", fired)
	}

	if st := api("PUT", "/api/v1/rules/tachy", strings.Replace(rule, `"priority"`, `"enabled":false,"priority"`, 1), &problem); st != 400 || problem.Field != "note" {
		t.Fatalf("change without a note: %d %+v", st, problem)
	}
	if st := api("PUT", "/api/v1/rules/tachy", strings.Replace(rule, `"priority"`, `"enabled":false,"note":"trial ended","priority"`, 1), &saved); st != 200 || saved.Version != 2 {
		t.Fatalf("disable: %d %+v", st, saved)
	}
	a, err := e.n.Store.FindAlertByID(ctx, fired.ID)
	must(t, err)
	if a.State != vigil.AlertResolved {
		t.Fatalf("alert of a disabled rule: %+v", a)
	}
	var hist []vigil.Rule
	if st := api("GET", "/api/v1/rules/tachy/history", "", &hist); st != 200 || len(hist) != 2 || hist[1].Note != "trial ended" || hist[1].Enabled {
		t.Fatalf("history: %d %+v", st, hist)
	}
	var list []vigil.Rule
	if st := api("GET", "/api/v1/rules", "", &list); st != 200 || len(list) != 1 || list[0].Version != 2 {
		t.Fatalf("list: %d %+v", st, list)
	}
}

// Personal baselines learn from ingested readings and are served per
// patient with their explanation figures.
func TestBaselinesAPI(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	secret, err := e.n.Admin.AddDevice(ctx, &vigil.Device{ID: "watch-1", Kind: vigil.DeviceWearable})
	must(t, err)
	now := time.Now().UTC()
	must(t, e.n.Admin.Assign(ctx, "watch-1", "p1", now.Add(-5*24*time.Hour)))
	get := func(path string, out any) int {
		req, _ := http.NewRequest("GET", e.n.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(out)
		return resp.StatusCode
	}
	var scores []struct {
		Code          string
		Median, Z     float64
		Samples, Days int
	}
	if st := get("/api/v1/patients/p1/baselines", &scores); st != 200 || len(scores) != 0 {
		t.Fatalf("before: %d %+v", st, scores)
	}
	// Four days of a heart rate every 5 minutes, 70 or 72, in daily batches.
	start := now.Add(-4 * 24 * time.Hour).Truncate(5 * time.Minute)
	for day := range 4 {
		var batch []string
		for i := range 288 {
			at := start.Add(time.Duration(day*288+i) * 5 * time.Minute)
			batch = append(batch, string(reading(fmt.Sprintf("b%d-%d", day, i), at, fmt.Sprintf(`{"code":"8867-4","value":%d,"unit":"/min"}`, 70+2*(i%2)))))
		}
		req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/watch-1/readings", strings.NewReader("["+strings.Join(batch, ",")+"]"))
		req.SetBasicAuth("watch-1", secret)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("day %d: %d", day, resp.StatusCode)
		}
	}
	if st := get("/api/v1/patients/p1/baselines", &scores); st != 200 || len(scores) != 1 || scores[0].Code != "8867-4" ||
		scores[0].Median < 70 || scores[0].Median > 72 || scores[0].Days < 3 || scores[0].Samples < 24 {
		t.Fatalf("after 4 days: %d %+v", st, scores)
	}
	var problem map[string]any
	if st := get("/api/v1/patients/nobody/baselines", &problem); st != 404 {
		t.Fatalf("unknown patient: %d", st)
	}
}
