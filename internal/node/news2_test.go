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
	"github.com/vigil-iomt/vigil/internal/admin"
)

// Vitals of a septic patient raise a NEWS2 high alert; the breakdown is
// served with the parameters nobody recorded named as missing.
func TestNEWS2Alerts(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	body := fmt.Sprintf(`{"id":"sepsis-1","time":%q,"values":[
		{"code":"9279-1","value":26,"unit":"/min"},{"code":"59408-5","value":90,"unit":"%%"},
		{"code":"8480-6","value":88,"unit":"mm[Hg]"},{"code":"8462-4","value":50,"unit":"mm[Hg]"},
		{"code":"8867-4","value":125,"unit":"/min"},{"code":"8310-5","value":39.5,"unit":"Cel"}]}`, time.Now().UTC().Format(time.RFC3339Nano))
	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/readings", strings.NewReader(body))
	req.SetBasicAuth(e.device, e.secret)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("ingest: %d", resp.StatusCode)
	}
	var found *vigil.Alert
	for deadline := time.Now().Add(5 * time.Second); found == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		as, err := e.n.Alerts.Alerts(ctx, vigil.AlertFilter{PatientID: "p1", States: []string{vigil.AlertFiring}})
		must(t, err)
		for _, a := range as {
			if a.RuleID == "device:vigil-news2:news2-high" {
				found = a
			}
		}
	}
	if found == nil || found.Priority != vigil.PriorityHigh || found.Value != 13 || !strings.Contains(found.Title, "NEWS2 13") {
		t.Fatalf("NEWS2 alert: %+v", found)
	}
	// Snooze it for 15 minutes through the API.
	req, _ = http.NewRequest("POST", e.n.URL()+"/api/v1/alerts/"+found.ID+"/snooze", strings.NewReader(`{"minutes":15,"note":"doctor on the way"}`))
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err = http.DefaultClient.Do(req)
	must(t, err)
	var snoozed vigil.Alert
	json.NewDecoder(resp.Body).Decode(&snoozed)
	resp.Body.Close()
	if resp.StatusCode != 200 || snoozed.SnoozedUntil.Sub(time.Now()) < 14*time.Minute {
		t.Fatalf("snooze: %d %+v", resp.StatusCode, snoozed)
	}
	req, _ = http.NewRequest("GET", e.n.URL()+"/api/v1/patients/p1/news2", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err = http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	var r struct {
		Total      int
		Band       string
		Complete   bool
		Parameters []struct{ Name, Status string }
	}
	must(t, json.NewDecoder(resp.Body).Decode(&r))
	missing := 0
	for _, p := range r.Parameters {
		if p.Status == "missing" {
			missing++
		}
	}
	if r.Total != 13 || r.Band != "high" || r.Complete || missing != 2 {
		t.Fatalf("breakdown: %+v", r)
	}

	// A nurse records consciousness (V: scores 3) and oxygen: the score is
	// complete; a nurse may not prescribe SpO2 scale 2.
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "nurse-a", Role: vigil.RoleNurse}, "a long nurse password"))
	ntok, _, err := e.n.Admin.CreateToken(ctx, "nurse-a", admin.TokenSpec{Name: "t", TTL: time.Hour})
	must(t, err)
	post := func(tok, body string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/patients/p1/news2-inputs", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	st, out := post(ntok, `{"consciousness":"V","onOxygen":true}`)
	if st != 200 || out["total"] != 18.0 || out["complete"] != true {
		t.Fatalf("after nurse inputs: %d %v", st, out)
	}
	// The complete score is stored and served as a FHIR Observation.
	var b struct {
		Entry []struct{ Resource map[string]any }
	}
	if code := e.fhirGet(t, "Observation?patient=p1&code=1104051000000101", &b); code != 200 || len(b.Entry) != 1 {
		t.Fatalf("NEWS2 observation: %d %+v", code, b)
	}
	coding := b.Entry[0].Resource["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)
	if coding["system"] != "http://snomed.info/sct" || b.Entry[0].Resource["valueQuantity"].(map[string]any)["value"] != 18.0 {
		t.Fatalf("NEWS2 observation: %+v", b.Entry[0].Resource)
	}
	if st, _ := post(ntok, `{"spo2Scale":2}`); st != 403 {
		t.Fatalf("nurse prescribing scale 2: %d", st)
	}
	if st, _ := post(ntok, `{"consciousness":"X"}`); st != 400 {
		t.Fatalf("bad ACVPU: %d", st)
	}

	// Alarm-fatigue figures over the last week.
	req, _ = http.NewRequest("GET", e.n.URL()+"/api/v1/alerts/stats?target=5m", nil)
	req.Header.Set("Authorization", "Bearer "+ntok)
	resp, err = http.DefaultClient.Do(req)
	must(t, err)
	var stats struct {
		PatientDays float64
		Total       struct{ Alerts int }
		Rules       []struct{ Rule string }
	}
	must(t, json.NewDecoder(resp.Body).Decode(&stats))
	resp.Body.Close()
	if resp.StatusCode != 200 || stats.PatientDays != 7 || stats.Total.Alerts < 2 || len(stats.Rules) < 2 {
		t.Fatalf("stats: %d %+v", resp.StatusCode, stats)
	}
}

// A clinician sets a patient-specific SpO2 limit with a reason; it is
// validated, audited in the patient record and kept across a restart.
func TestPatientOverrideAPI(t *testing.T) {
	e := start(t)
	put := func(body string) (int, map[string]any) {
		req, _ := http.NewRequest("PUT", e.n.URL()+"/api/v1/patients/p1/overrides", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	exp := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	if st, m := put(`{"overrides":[{"rule":"spo2-low","below":86,"expires":"` + exp + `"}]}`); st != 400 || m["field"] != "reason" {
		t.Fatalf("no reason: %d %v", st, m)
	}
	st, m := put(`{"overrides":[{"rule":"spo2-low","below":86,"reason":"COPD, target 88-92 %","expires":"` + exp + `"}]}`)
	if st != 200 {
		t.Fatalf("override: %d %v", st, m)
	}
	p, err := e.n.Store.FindPatientByID(context.Background(), "p1")
	must(t, err)
	if len(p.Overrides) != 1 || p.Overrides[0].By != "dr" || p.Overrides[0].Set.IsZero() {
		t.Fatalf("audit: %+v", p.Overrides)
	}
}
