package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/nursecall"
)

// A nurse-call system subscribes to the alert topics with its device
// credential and receives every transition; one that connects later gets
// the open alerts at once; other devices may not listen, nobody may
// publish there.
func TestNurseCallTopic(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	must(t, e.n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p2", Identifier: "MRN-2", Ward: "W3", Bed: "12"}))
	must(t, e.n.Admin.Assign(ctx, e.device, "p2", time.Now().Add(-30*time.Minute)))
	ncSecret, err := e.n.Admin.AddDevice(ctx, &vigil.Device{ID: "nc-1", Kind: vigil.DeviceNurseCall})
	must(t, err)

	subscribe := func(c *paho.Client) (chan nursecall.Message, byte) {
		msgs := make(chan nursecall.Message, 64)
		c.AddOnPublishReceived(func(p paho.PublishReceived) (bool, error) {
			var m nursecall.Message
			if len(p.Packet.Payload) > 0 && json.Unmarshal(p.Packet.Payload, &m) == nil {
				msgs <- m
			}
			return true, nil
		})
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil/v1/alerts/#", QoS: 1}}})
		if sa == nil { // paho also returns an error for a refused filter, with the SUBACK
			t.Fatal(err)
		}
		return msgs, sa.Reasons[0]
	}
	nc := mqtt5(t, e.n.MQTTAddr(), "nc-1", ncSecret)
	msgs, granted := subscribe(nc)
	if granted != 1 {
		t.Fatalf("nurse-call subscription: reason %#x", granted)
	}
	mon := mqtt5(t, e.n.MQTTAddr(), e.device, e.secret)
	if _, reason := subscribe(mon); reason != 0x87 {
		t.Fatalf("a monitor listening to alerts: reason %#x, want 0x87", reason)
	}
	pr, err := nc.Publish(ctx, &paho.Publish{Topic: "vigil/v1/alerts/W3/p2/fake", QoS: 1, Payload: []byte(`{"state":"firing"}`)})
	if pr == nil || pr.ReasonCode != 0x87 { // paho returns the refusing PUBACK with an error
		t.Fatalf("nurse-call publishing an alert: %v %+v", err, pr)
	}

	// SpO2 86 % for 70 s of device time: spo2-low fires for p2 in W3 bed 12.
	t0 := time.Now().Add(-2 * time.Minute)
	for i := 0; i <= 7; i++ {
		pr, err := mon.Publish(ctx, &paho.Publish{Topic: "vigil/v1/devices/" + e.device + "/readings", QoS: 1,
			Payload: reading(fmt.Sprintf("s%d", i), t0.Add(time.Duration(i)*10*time.Second), `{"code":"59408-5","value":86,"unit":"%"}`)})
		if err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish %d: %v %+v", i, err, pr)
		}
	}
	wait := func(ch chan nursecall.Message, rule, state string) nursecall.Message {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case m := <-ch:
				if m.Rule == rule && m.State == state {
					return m
				}
			case <-deadline:
				t.Fatalf("no %s %s message", rule, state)
			}
		}
	}
	fired := wait(msgs, "spo2-low", vigil.AlertFiring)
	if fired.Patient != "p2" || fired.Ward != "W3" || fired.Bed != "12" || fired.Priority != vigil.PriorityHigh || fired.Value != 86 {
		t.Fatalf("firing message: %+v", fired)
	}

	// A nurse-call system that connects now gets the open alert, retained.
	late := mqtt5ID(t, e.n.MQTTAddr(), "nc-1", ncSecret, "nc-1-late")
	lateMsgs, _ := subscribe(late)
	if m := wait(lateMsgs, "spo2-low", vigil.AlertFiring); m.ID != fired.ID {
		t.Fatalf("retained: %+v", m)
	}

	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/alerts/"+fired.ID+"/ack", strings.NewReader(`{"note":"on my way"}`))
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if m := wait(msgs, "spo2-low", vigil.AlertAcknowledged); m.ID != fired.ID {
		t.Fatalf("ack message: %+v", m)
	}
}

// A device reports its battery with its readings: a low one raises a
// low-priority alert, and the device status shows it.
func TestBatteryStatus(t *testing.T) {
	e := start(t)
	post := func(id string, battery int) {
		t.Helper()
		body := fmt.Sprintf(`{"id":%q,"time":%q,"battery":%d,"values":[{"code":"8867-4","value":72,"unit":"/min"}]}`, id, time.Now().UTC().Format(time.RFC3339Nano), battery)
		req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/readings", strings.NewReader(body))
		req.SetBasicAuth(e.device, e.secret)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != 200 && battery <= 100 {
			t.Fatalf("post: %d", resp.StatusCode)
		}
		if battery > 100 && resp.StatusCode != 422 {
			t.Fatalf("battery %d: %d, want 422", battery, resp.StatusCode)
		}
	}
	post("b1", 15)
	post("b2", 180) // refused
	// The alert engine sees a reading after its acknowledgement (off the
	// commit path): wait for it.
	var st struct {
		Device   string
		LastSeen time.Time
		Battery  *float64
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		req, _ := http.NewRequest("GET", e.n.URL()+"/api/v1/devices/"+e.device+"/status", nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if resp.StatusCode == 200 && st.Battery != nil && *st.Battery == 15 && !st.LastSeen.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status: %d %+v", resp.StatusCode, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		as, err := e.n.Alerts.Alerts(context.Background(), vigil.AlertFilter{PatientID: "p1"})
		must(t, err)
		if len(as) == 1 && as[0].RuleID == "device:"+e.device+":battery-low" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alerts: %+v", as)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
