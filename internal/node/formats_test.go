package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil"
)

// A BLE gateway relays GATT characteristic values over MQTT; a phone app
// posts Open mHealth data points over HTTP. Both end up as readings of the
// device's patient; NaN values are data-absent, implausible ones refused.
func TestGATTAndOpenMHealth(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	now := time.Now().UTC()
	c := mqtt5(t, e.n.MQTTAddr(), e.device, e.secret)
	publish := func(payload string) *paho.PublishResponse {
		t.Helper()
		pr, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/v1/devices/" + e.device + "/gatt", QoS: 1, Payload: []byte(payload)})
		if pr == nil {
			t.Fatal(err)
		}
		return pr
	}
	// Blood pressure 138/88 (mean 120) with pulse 60, from the shared vectors; time from "time".
	if pr := publish(fmt.Sprintf(`{"id":"g1","time":%q,"characteristic":"0x2A35","hex":"1E8A00580078000000041114293B3C00012700"}`, now.Add(-time.Minute).Format(time.RFC3339))); pr.ReasonCode != 0 {
		t.Fatalf("BP: %#x %v", pr.ReasonCode, pr.Properties)
	}
	// PLX with SpO2 NaN: pulse stored, SpO2 absent.
	if pr := publish(fmt.Sprintf(`{"id":"g2","time":%q,"characteristic":"2A5F","base64":"AP8HSAA="}`, now.Format(time.RFC3339))); pr.ReasonCode != 0 {
		t.Fatalf("PLX: %#x %v", pr.ReasonCode, pr.Properties)
	}
	// Glucose 30 kg/L decodes, and is refused as implausible.
	pr := publish(fmt.Sprintf(`{"id":"g3","time":%q,"characteristic":"2A18","hex":"1B0100E307021B0B0A1EFBFF1E00120501"}`, now.Format(time.RFC3339)))
	if pr.ReasonCode < 0x80 || !strings.Contains(pr.Properties.ReasonString, "implausible") {
		t.Fatalf("glucose 30 kg/L: %#x %+v", pr.ReasonCode, pr.Properties)
	}
	latest, err := e.n.Store.LatestObservations(ctx, "p1", nil, 1)
	must(t, err)
	if bp := latest[vigil.LOINCBPPanel]; len(bp) != 1 || bp[0].Components[0].Value != 138 || bp[0].Components[1].Value != 88 {
		t.Fatalf("BP panel from GATT: %+v", latest)
	}
	if hr := latest[vigil.LOINCHeartRate]; len(hr) != 1 || hr[0].Value != 72 {
		t.Fatalf("pulse from PLX: %+v", hr)
	}
	if latest[vigil.LOINCSpO2] != nil {
		t.Fatalf("NaN SpO2 stored as %v", latest[vigil.LOINCSpO2][0].Value)
	}

	// Open mHealth over HTTP: body temperature in °F, stored in Cel.
	dp := fmt.Sprintf(`{"header":{"id":"omh-1","schema_id":{"namespace":"omh","name":"body-temperature","version":"4.0"}},
		"body":{"body_temperature":{"value":100.4,"unit":"F"},"effective_time_frame":{"date_time":%q}}}`, now.Format(time.RFC3339))
	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/omh", strings.NewReader(dp))
	req.SetBasicAuth(e.device, e.secret)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var out map[string]any
	json.Unmarshal(b, &out)
	if resp.StatusCode != 200 || out["accepted"] != 1.0 {
		t.Fatalf("omh: %d %s", resp.StatusCode, b)
	}
	temp, err := e.n.Store.LatestObservations(ctx, "p1", []string{vigil.LOINCBodyTemp}, 1)
	must(t, err)
	if tt := temp[vigil.LOINCBodyTemp]; len(tt) != 1 || tt[0].Value != 38 || tt[0].Unit != "Cel" {
		t.Fatalf("temperature: %+v", temp)
	}
}
