package node_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/node"
)

// HL7 v2 outbound: node A sends each stored reading as an ORU^R01 over
// MLLP (--ehr-url mllp://…) to an interface engine — here node B's own
// PCD-01 listener, which ACKs only after storing. B stores every value
// once under the patient's MRN; a patient B does not know is refused (AE)
// and kept on A as a dead letter.
func TestHL7Outbound(t *testing.T) {
	ctx := context.Background()
	b, err := node.Start(ctx, node.Options{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", MLLPAddr: "127.0.0.1:0"})
	must(t, err)
	defer b.Close()
	must(t, b.Admin.AddPatient(ctx, &vigil.Patient{ID: "pb", Identifier: "MRN-9"}))
	_, err = b.Admin.AddDevice(ctx, &vigil.Device{ID: "VIGIL", Kind: vigil.DeviceGateway}) // MSH-3 of Vigil's messages
	must(t, err)

	a, err := node.Start(ctx, node.Options{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", EHRURL: "mllp://" + b.MLLP.Addr().String()})
	must(t, err)
	defer a.Close()
	must(t, a.Admin.AddPatient(ctx, &vigil.Patient{ID: "pa", Identifier: "MRN-9", Family: "Doe"}))
	must(t, a.Admin.AddPatient(ctx, &vigil.Patient{ID: "px", Identifier: "MRN-UNKNOWN-TO-B"}))
	secret, err := a.Admin.AddDevice(ctx, &vigil.Device{ID: "mon-1", Kind: vigil.DeviceBedsideMonitor})
	must(t, err)
	must(t, a.Admin.Assign(ctx, "mon-1", "pa", time.Now().Add(-time.Hour)))
	cuff, err := a.Admin.AddDevice(ctx, &vigil.Device{ID: "cuff-1", Kind: vigil.DeviceBPCuff})
	must(t, err)
	must(t, a.Admin.Assign(ctx, "cuff-1", "px", time.Now().Add(-time.Hour)))

	post := func(dev, secret string, body []byte) {
		req, _ := http.NewRequest("POST", a.URL()+"/api/v1/devices/"+dev+"/readings", strings.NewReader("["+string(body)+"]"))
		req.SetBasicAuth(dev, secret)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("ingest: %d", resp.StatusCode)
		}
	}
	now := time.Now().Add(-time.Minute).Truncate(time.Second)
	post("mon-1", secret, reading("r1", now, `{"code":"8867-4","value":72,"unit":"/min"}`, `{"code":"8480-6","value":128,"unit":"mm[Hg]"}`, `{"code":"8462-4","value":82,"unit":"mm[Hg]"}`))
	post("mon-1", secret, reading("r2", now.Add(time.Second), `{"code":"8867-4","value":74,"unit":"/min"}`))
	post("cuff-1", cuff, reading("x1", now, `{"code":"8480-6","value":140,"unit":"mm[Hg]"}`, `{"code":"8462-4","value":90,"unit":"mm[Hg]"}`))

	for deadline := time.Now().Add(20 * time.Second); ; {
		obs, _, err := b.Store.FindObservations(ctx, vigil.ObservationFilter{PatientID: "pb", Limit: 100})
		must(t, err)
		dls, _ := a.Store.FindDeadLetters(ctx, vigil.DeadLetterFilter{Reason: "ehr-refused"})
		if len(obs) == 3 && len(dls) == 1 {
			codes := map[string]float64{}
			for _, o := range obs {
				codes[o.Code] += o.Value
			}
			if codes[vigil.LOINCHeartRate] != 146 || len(obs[0].Components)+len(obs[1].Components)+len(obs[2].Components) != 2 {
				t.Fatalf("B stored %+v", obs)
			}
			if !strings.Contains(dls[0].Message, "AE") || dls[0].Format != "hl7v2" {
				t.Fatalf("dead letter: %+v", dls[0])
			}
			t.Logf("refused by B: %s", dls[0].Message)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("B holds %d observations, A %d dead letters; sync %+v", len(obs), len(dls), a.EHRSync.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
