package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/notify"
)

// An alert raised by a reading reaches a webhook, signed.
func TestAlertWebhook(t *testing.T) {
	got := make(chan notify.Payload, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts, _ := strconv.ParseInt(r.Header.Get("X-Vigil-Timestamp"), 10, 64)
		if r.Header.Get("X-Vigil-Signature") != notify.Sign("a-webhook-secret-0123", ts, body) {
			http.Error(w, "bad signature", 401)
			return
		}
		var p notify.Payload
		json.Unmarshal(body, &p)
		got <- p
	}))
	defer hook.Close()
	ctx := context.Background()
	n, err := node.Start(ctx, node.Options{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0",
		Webhooks: []notify.Target{{URL: hook.URL, Secret: "a-webhook-secret-0123"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p1"}))
	secret, err := n.Admin.AddDevice(ctx, &vigil.Device{ID: "m1", Kind: vigil.DeviceBedsideMonitor})
	must(t, err)
	must(t, n.Admin.Assign(ctx, "m1", "p1", time.Now().Add(-time.Hour)))
	body := fmt.Sprintf(`{"id":"t1","time":%q,"values":[{"code":"8310-5","value":40.2,"unit":"Cel"}]}`, time.Now().UTC().Format(time.RFC3339))
	req, _ := http.NewRequest("POST", n.URL()+"/api/v1/devices/m1/readings", strings.NewReader(body))
	req.SetBasicAuth("m1", secret)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case p := <-got:
			if p.Event == "alert" && p.Alert.RuleID == "temp-high" && p.Alert.State == vigil.AlertFiring && p.Alert.PatientID == "p1" {
				return
			}
		case <-timeout:
			t.Fatal("no signed webhook for the temperature alert")
		}
	}
}
