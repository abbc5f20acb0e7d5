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
}
