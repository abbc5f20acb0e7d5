package node_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A FHIR subscription on a running node: a device's reading over HTTP
// reaches the subscriber's rest-hook as an Observation, after the
// handshake; the time from the device's request to the notification is
// logged.
func TestSubscriptionEndToEnd(t *testing.T) {
	e := start(t)
	got := make(chan map[string]any, 10)
	at := make(chan time.Time, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &b)
		at <- time.Now()
		got <- b
	}))
	defer hook.Close()
	sub := fmt.Sprintf(`{"resourceType":"Subscription","status":"requested","reason":"EHR feed","criteria":"https://vigil-iomt.github.io/fhir/SubscriptionTopic/vital-sign",
	  "_criteria":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria","valueString":"Observation?patient=Patient/p1"}]},
	  "channel":{"type":"rest-hook","endpoint":%q,"payload":"application/fhir+json",
	    "_payload":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content","valueCode":"full-resource"}]}}}`, hook.URL)
	req, _ := http.NewRequest("POST", e.n.URL()+"/fhir/R4/Subscription", strings.NewReader(sub))
	req.Header.Set("Authorization", "Bearer "+e.token)
	req.Header.Set("Content-Type", "application/fhir+json")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("create subscription: %d", resp.StatusCode)
	}
	kind := func(b map[string]any) string {
		ps := b["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)["parameter"].([]any)
		for _, p := range ps {
			if p := p.(map[string]any); p["name"] == "type" {
				return p["valueCode"].(string)
			}
		}
		return ""
	}
	select {
	case b := <-got:
		<-at
		if kind(b) != "handshake" {
			t.Fatalf("first notification: %s", kind(b))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no handshake")
	}
	sent := time.Now()
	req, _ = http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/readings", strings.NewReader(string(reading("e2e-1", sent, `{"code":"8867-4","value":77,"unit":"/min"}`))))
	req.SetBasicAuth(e.device, e.secret)
	resp, err = http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	select {
	case b := <-got:
		when := <-at
		if kind(b) != "event-notification" || len(b["entry"].([]any)) != 2 {
			t.Fatalf("notification: %v", b)
		}
		obs := b["entry"].([]any)[1].(map[string]any)["resource"].(map[string]any)
		if obs["resourceType"] != "Observation" || obs["valueQuantity"].(map[string]any)["value"] != 77.0 {
			t.Fatalf("notified resource: %v", obs)
		}
		t.Logf("device request → FHIR notification received: %v", when.Sub(sent))
	case <-time.After(10 * time.Second):
		t.Fatal("no notification for the reading")
	}
}
