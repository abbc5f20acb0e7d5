package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/node"
)

// env is a running node with one patient, one assigned device and an
// admin token.
type env struct {
	n      *node.Node
	device string
	secret string
	token  string
}

func start(t *testing.T) *env {
	t.Helper()
	return startWith(t, node.Options{})
}

// startWith starts a node with opts on port 0 in a temp dir, with patient
// p1, device mon-1 assigned to it and clinician dr with a token.
func startWith(t testing.TB, opts node.Options) *env {
	t.Helper()
	ctx := context.Background()
	opts.DataDir, opts.HTTPAddr, opts.MQTTAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	n, err := node.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	e := &env{n: n, device: "mon-1"}
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p1", Identifier: "MRN-1", Family: "Doe", Given: "Jane"}))
	if e.secret, err = n.Admin.AddDevice(ctx, &vigil.Device{ID: e.device, Kind: vigil.DeviceBedsideMonitor}); err != nil {
		t.Fatal(err)
	}
	must(t, n.Admin.Assign(ctx, e.device, "p1", time.Now().Add(-time.Hour)))
	must(t, n.Admin.AddUser(ctx, &vigil.User{ID: "dr", Role: vigil.RoleClinician}, "correct horse battery"))
	if e.token, _, err = n.Admin.CreateToken(ctx, "dr", admin.TokenSpec{Name: "test", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	return e
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func reading(id string, ts time.Time, values ...string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"time":%q,"values":[%s]}`, id, ts.UTC().Format(time.RFC3339Nano), strings.Join(values, ",")))
}

func mqtt5(t *testing.T, addr, user, pass string) *paho.Client {
	t.Helper()
	return mqtt5ID(t, addr, user, pass, user+"-v5")
}

func mqtt5ID(t testing.TB, addr, user, pass, clientID string) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{PacketTimeout: time.Minute, Conn: conn, ClientID: clientID})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = user, true, []byte(pass), true
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("MQTT 5 connect as %s: %v (connack %+v)", user, err, ca)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c
}

func (e *env) fhirGet(t *testing.T, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", e.n.URL()+"/fhir/R4/"+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode
}

type bundle struct {
	ResourceType string `json:"resourceType"`
	Total        int    `json:"total"`
	Entry        []struct {
		Resource map[string]any `json:"resource"`
	} `json:"entry"`
}

// TestEndToEnd sends readings over MQTT 5, MQTT 3.1.1 and HTTP, resends
// one, and reads them back as FHIR Observations.
func TestEndToEnd(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	t0 := time.Now().Add(-10 * time.Minute).Truncate(time.Second)

	// MQTT 5, QoS 1: PUBACK success only after the reading is durable.
	c := mqtt5(t, e.n.MQTTAddr(), e.device, e.secret)
	topic := "vigil/v1/devices/" + e.device + "/readings"
	pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: reading("m1", t0,
		`{"code":"8867-4","value":72,"unit":"/min"}`,
		`{"code":"150456","system":"urn:iso:std:iso:11073:10101","value":97,"unit":"%"}`)})
	if err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish: %v %+v", err, pr)
	}
	// The same id again is acknowledged and stored once.
	pr, err = c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: reading("m1", t0, `{"code":"8867-4","value":72,"unit":"/min"}`)})
	if err != nil || pr.ReasonCode != 0 {
		t.Fatalf("re-publish: %v %+v", err, pr)
	}

	// MQTT 3.1.1 (Eclipse Paho Go client).
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + e.n.MQTTAddr()).SetClientID(e.device + "-v3").SetUsername(e.device).SetPassword(e.secret).SetProtocolVersion(4)
	c3 := mqtt3.NewClient(o)
	if tok := c3.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT 3.1.1 connect: %v", tok.Error())
	}
	defer c3.Disconnect(100)
	if tok := c3.Publish(topic, 1, false, reading("m2", t0.Add(time.Second), `{"code":"8867-4","value":74,"unit":"/min"}`)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT 3.1.1 publish: %v", tok.Error())
	}

	// HTTP: an array of readings, BP as systolic and diastolic.
	body := "[" + string(reading("h1", t0.Add(2*time.Second), `{"code":"8480-6","value":118,"unit":"mm[Hg]"}`, `{"code":"8462-4","value":76,"unit":"mm[Hg]"}`)) + "," +
		string(reading("h2", t0.Add(3*time.Second), `{"code":"8310-5","value":98.6,"unit":"[degF]"}`)) + "]"
	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/readings", strings.NewReader(body))
	req.SetBasicAuth(e.device, e.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP ingest: %d %s", resp.StatusCode, rb)
	}

	// Read back through FHIR.
	var b bundle
	if code := e.fhirGet(t, "Observation?patient=p1&code=8867-4&_sort=date", &b); code != 200 {
		t.Fatalf("search: %d", code)
	}
	if got, want := len(b.Entry), 2; got != want {
		t.Fatalf("heart-rate observations = %d, want %d (the re-sent id must be stored once)", got, want)
	}
	vq := b.Entry[0].Resource["valueQuantity"].(map[string]any)
	if vq["value"].(float64) != 72 || vq["code"] != "/min" {
		t.Errorf("first HR valueQuantity = %v", vq)
	}
	if dev := b.Entry[0].Resource["device"].(map[string]any)["reference"]; dev != "Device/"+e.device {
		t.Errorf("device reference = %v", dev)
	}

	var spo2 bundle
	e.fhirGet(t, "Observation?patient=p1&code=http://loinc.org|59408-5", &spo2)
	if len(spo2.Entry) != 1 {
		t.Fatalf("SpO2 from an MDC code: got %d observations, want 1", len(spo2.Entry))
	}

	var bp bundle
	e.fhirGet(t, "Observation?patient=p1&code=85354-9", &bp)
	if len(bp.Entry) != 1 {
		t.Fatalf("BP panels = %d, want 1", len(bp.Entry))
	}
	comps, _ := bp.Entry[0].Resource["component"].([]any)
	if len(comps) != 2 {
		t.Errorf("BP components = %v", bp.Entry[0].Resource["component"])
	}

	var temp bundle
	e.fhirGet(t, "Observation?patient=p1&code=8310-5", &temp)
	if len(temp.Entry) != 1 {
		t.Fatalf("temperature observations = %d", len(temp.Entry))
	}
	tq := temp.Entry[0].Resource["valueQuantity"].(map[string]any)
	if v := tq["value"].(float64); tq["code"] != "Cel" || v < 36.99 || v > 37.01 {
		t.Errorf("98.6 [degF] stored as %v, want 37 Cel", tq)
	}

	// Read one observation by id; $lastn.
	id := b.Entry[1].Resource["id"].(string)
	var obs map[string]any
	if code := e.fhirGet(t, "Observation/"+url.PathEscape(id), &obs); code != 200 || obs["id"] != id {
		t.Errorf("read Observation/%s: %d %v", id, code, obs["id"])
	}
	var last bundle
	e.fhirGet(t, "Observation/$lastn?patient=p1&code=8867-4", &last)
	if len(last.Entry) != 1 || last.Entry[0].Resource["valueQuantity"].(map[string]any)["value"].(float64) != 74 {
		t.Errorf("$lastn = %+v", last.Entry)
	}
}

// TestRejections checks that each kind of bad input gets a clear error on
// the wire and that nothing else is lost.
func TestRejections(t *testing.T) {
	e := start(t)
	now := time.Now()
	hr := `{"code":"8867-4","value":72,"unit":"/min"}`
	cases := []struct {
		name   string
		body   string
		status int
		reason string
		field  string
	}{
		{"malformed JSON", `{"id":"x",`, 400, "malformed", ""},
		{"unknown code", string(reading("r1", now, `{"code":"0000-0","value":1,"unit":"/min"}`)), 422, "unknown-code", "values[0].code"},
		{"unit does not fit", string(reading("r2", now, `{"code":"8867-4","value":72,"unit":"mm[Hg]"}`)), 422, "unit-mismatch", "values[0].unit"},
		{"SpO2 120 %", string(reading("r3", now, `{"code":"59408-5","value":120,"unit":"%"}`)), 422, "implausible", "values[0].value"},
		{"heart rate 900", string(reading("r4", now, `{"code":"8867-4","value":900,"unit":"/min"}`)), 422, "implausible", "values[0].value"},
		{"far future", string(reading("r5", now.Add(48*time.Hour), hr)), 422, "future", "time"},
		{"oversized", `{"id":"big","pad":"` + strings.Repeat("x", 1100<<10) + `"}`, 413, "too-large", ""},
		{"before assignment", string(reading("r6", now.Add(-48*time.Hour), hr)), 422, "unassigned", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/readings", strings.NewReader(tc.body))
			req.SetBasicAuth(e.device, e.secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p map[string]any
			json.NewDecoder(resp.Body).Decode(&p)
			if resp.StatusCode != tc.status {
				t.Errorf("status = %d, want %d (%v)", resp.StatusCode, tc.status, p)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
				t.Errorf("Content-Type = %q, want problem+json", ct)
			}
			if !strings.Contains(fmt.Sprint(p), tc.reason) {
				t.Errorf("problem %v does not name reason %q", p, tc.reason)
			}
			if tc.field != "" && !strings.Contains(fmt.Sprint(p), tc.field) {
				t.Errorf("problem %v does not name field %q", p, tc.field)
			}
		})
	}

	t.Run("unknown device", func(t *testing.T) {
		req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/nope/readings", bytes.NewReader(reading("x", now, hr)))
		req.SetBasicAuth("nope", "whatever")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("status = %d, want 401", resp.StatusCode)
		}
	})

	t.Run("MQTT 5 reason code and string", func(t *testing.T) {
		c := mqtt5(t, e.n.MQTTAddr(), e.device, e.secret)
		pr, err := c.Publish(context.Background(), &paho.Publish{Topic: "vigil/v1/devices/" + e.device + "/readings", QoS: 1,
			Payload: reading("q1", now, `{"code":"59408-5","value":120,"unit":"%"}`)})
		if pr == nil {
			t.Fatal(err) // paho also returns an error for a refusing PUBACK; the PUBACK is what we check
		}
		if pr.ReasonCode < 0x80 {
			t.Errorf("reason code = %#x, want an error code", pr.ReasonCode)
		}
		if pr.Properties == nil || !strings.Contains(pr.Properties.ReasonString, "implausible") {
			t.Errorf("reason string = %+v, want it to say implausible", pr.Properties)
		}
		// Another device's topic is refused.
		pr, err = c.Publish(context.Background(), &paho.Publish{Topic: "vigil/v1/devices/other/readings", QoS: 1, Payload: reading("q2", now, hr)})
		if pr == nil {
			t.Fatal(err)
		}
		if pr.ReasonCode != 0x87 {
			t.Errorf("publish to another device's topic: reason %#x, want 0x87 not authorized", pr.ReasonCode)
		}
	})

	t.Run("MQTT 3.1.1 rejection is dead-lettered", func(t *testing.T) {
		o := mqtt3.NewClientOptions().AddBroker("tcp://" + e.n.MQTTAddr()).SetClientID("dl-v3").SetUsername(e.device).SetPassword(e.secret).SetProtocolVersion(4)
		c3 := mqtt3.NewClient(o)
		if tok := c3.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		defer c3.Disconnect(100)
		tok := c3.Publish("vigil/v1/devices/"+e.device+"/readings", 1, false, reading("dl1", now, `{"code":"0000-0","value":1,"unit":"/min"}`))
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		ds, err := e.n.Store.FindDeadLetters(context.Background(), vigil.DeadLetterFilter{DeviceID: e.device})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 || ds[0].Reason != "unknown-code" {
			t.Fatalf("dead letters = %+v, want one with reason unknown-code", ds)
		}
	})

	t.Run("anonymous MQTT refused", func(t *testing.T) {
		conn, err := net.Dial("tcp", e.n.MQTTAddr())
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{PacketTimeout: time.Minute, Conn: conn})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if ca, err := c.Connect(ctx, &paho.Connect{ClientID: "anon", KeepAlive: 30, CleanStart: true}); err == nil {
			t.Errorf("anonymous connect accepted: %+v", ca)
		}
	})
}

// TestAlertRaisedAndAcknowledged sends SpO2 below 90 % for over 60 s of
// device time, checks that an alert fires, reaches an SSE subscriber, is
// listed by the API, and can be acknowledged.
func TestAlertRaisedAndAcknowledged(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	sub := e.n.Hub.Subscribe(1024, nil)
	defer sub.Close()

	t0 := time.Now().Add(-2 * time.Minute)
	c := mqtt5(t, e.n.MQTTAddr(), e.device, e.secret)
	for i := 0; i <= 7; i++ {
		pr, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/v1/devices/" + e.device + "/readings", QoS: 1,
			Payload: reading(fmt.Sprintf("s%d", i), t0.Add(time.Duration(i)*10*time.Second), `{"code":"59408-5","value":86,"unit":"%"}`)})
		if err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish %d: %v %+v", i, err, pr)
		}
	}

	// The alert event arrives on the live hub.
	deadline := time.After(10 * time.Second)
	var alertID string
	for alertID == "" {
		select {
		case ev := <-sub.C:
			if a, ok := ev.Data.(*vigil.Alert); ok && a.State == vigil.AlertFiring && a.RuleID == "spo2-low" {
				alertID = a.ID
			}
		case <-deadline:
			t.Fatal("no firing alert on the live hub")
		}
	}

	api := func(method, path, body string, out any) int {
		req, _ := http.NewRequest(method, e.n.URL()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}
	var alerts []vigil.Alert
	code := api("GET", "/api/v1/alerts?patient=p1", "", &alerts)
	listed := false
	for _, a := range alerts {
		listed = listed || a.ID == alertID
	}
	// NEWS2 also reacts (SpO2 scores 3): its alert is listed beside the threshold's.
	if code != 200 || !listed || len(alerts) != 2 {
		t.Fatalf("GET alerts: %d %+v", code, alerts)
	}
	var acked vigil.Alert
	if code := api("POST", "/api/v1/alerts/"+alertID+"/ack", `{"note":"at bedside"}`, &acked); code != 200 || acked.State != vigil.AlertAcknowledged {
		t.Fatalf("ack: %d %+v", code, acked)
	}
}

// call makes an API or FHIR request with a bearer token and a JSON body
// (nil: none), decodes the answer into out (nil: ignored) and returns the
// status.
func (e *env) call(t *testing.T, method, path, token string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.n.URL()+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}
