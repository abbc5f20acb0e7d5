package node_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/npmtools"
)

// vigil serve --ehr-url: a device's reading, acknowledged by the node,
// reaches a real FHIR server (Medplum's, tools/fhirserver) as an
// Observation; the time from the device's request to the EHR having it
// is logged.
func TestEHRSyncEndToEnd(t *testing.T) {
	hello := struct{ URL string }{npmtools.FHIRServer(t, "TOKEN=ehr-secret")}

	ctx := context.Background()
	n, err := node.Start(ctx, node.Options{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", EHRURL: hello.URL, EHRToken: "ehr-secret", EHRAlerts: true})
	must(t, err)
	defer n.Close()
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p1", Identifier: "MRN-77"}))
	secret, err := n.Admin.AddDevice(ctx, &vigil.Device{ID: "mon-1", Kind: vigil.DeviceBedsideMonitor})
	must(t, err)
	must(t, n.Admin.Assign(ctx, "mon-1", "p1", time.Now().Add(-time.Hour)))

	sent := time.Now()
	req, _ := http.NewRequest("POST", n.URL()+"/api/v1/devices/mon-1/readings", strings.NewReader(string(reading("e1", sent, `{"code":"8867-4","value":88,"unit":"/min"}`))))
	req.SetBasicAuth("mon-1", secret)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	for deadline := time.Now().Add(20 * time.Second); ; {
		req, _ := http.NewRequest("GET", hello.URL+"/Observation?_count=10", nil)
		req.Header.Set("Authorization", "Bearer ehr-secret")
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		var b struct {
			Entry []struct{ Resource map[string]any } `json:"entry"`
		}
		json.NewDecoder(resp.Body).Decode(&b)
		resp.Body.Close()
		if len(b.Entry) == 1 {
			if v := b.Entry[0].Resource["valueQuantity"].(map[string]any)["value"]; v != 88.0 {
				t.Fatalf("the EHR's Observation: %v", b.Entry[0].Resource)
			}
			t.Logf("device request → Observation stored in the EHR: about %v (polled every 10 ms)", time.Since(sent))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the EHR holds %d Observations; sync status %+v", len(b.Entry), n.EHRSync.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
