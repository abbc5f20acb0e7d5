package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/devcmd"
)

// Commands down to a device are signed and counted: the device verifies
// them with Vigil's public key, applies each counter once (a captured
// command replayed is refused), refuses an altered one, and its answers
// are recorded; a device cannot publish on its own commands topic.
func TestDeviceCommands(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	resp, err := http.Get(e.n.URL() + "/api/v1/commands/key")
	must(t, err)
	var key struct{ Alg, PublicKey string }
	json.NewDecoder(resp.Body).Decode(&key)
	resp.Body.Close()
	pubBytes, _ := base64.StdEncoding.DecodeString(key.PublicKey)
	pub := ed25519.PublicKey(pubBytes)
	if key.Alg != "Ed25519" || len(pub) != ed25519.PublicKeySize {
		t.Fatalf("command key: %+v", key)
	}

	dev := mqtt5(t, e.n.MQTTAddr(), e.device, e.secret)
	cmds := make(chan []byte, 10)
	dev.AddOnPublishReceived(func(p paho.PublishReceived) (bool, error) {
		cmds <- p.Packet.Payload
		return true, nil
	})
	topic := "vigil/v1/devices/" + e.device + "/commands"
	if sa, err := dev.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); sa == nil || sa.Reasons[0] != 1 {
		t.Fatalf("subscribe to its commands: %v %+v", err, sa)
	}
	if pr, _ := dev.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(`{"seq":99}`)}); pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("a device publishing on its commands topic: %+v", pr)
	}
	send := func(body string) uint64 {
		t.Helper()
		req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/commands", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		var c vigil.DeviceCommand
		json.NewDecoder(resp.Body).Decode(&c)
		if resp.StatusCode != 202 {
			t.Fatalf("send command: %d", resp.StatusCode)
		}
		return c.Seq
	}
	receive := func() []byte {
		t.Helper()
		select {
		case b := <-cmds:
			return b
		case <-time.After(10 * time.Second):
			t.Fatal("no command reached the device")
		}
		return nil
	}
	ack := func(a devcmd.Ack) {
		b, _ := json.Marshal(a)
		if _, err := dev.Publish(ctx, &paho.Publish{Topic: topic + "/ack", QoS: 1, Payload: b}); err != nil {
			t.Fatal(err)
		}
	}
	history := func() []vigil.DeviceCommand {
		req, _ := http.NewRequest("GET", e.n.URL()+"/api/v1/devices/"+e.device+"/commands", nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		var out []vigil.DeviceCommand
		json.NewDecoder(resp.Body).Decode(&out)
		return out
	}

	// The device's side: verify, apply, answer.
	var last uint64
	if seq := send(`{"type": "set-interval", "params": {"seconds": 30}}`); seq != 1 {
		t.Fatalf("first command seq %d", seq)
	}
	first := receive()
	c, err := devcmd.Verify(pub, first, e.device, last, time.Now())
	if err != nil || c.Type != "set-interval" || !bytes.Equal(c.Params, []byte(`{"seconds":30}`)) {
		t.Fatalf("verify: %v %+v", err, c)
	}
	last = c.Seq
	ack(devcmd.Ack{Seq: c.Seq, Status: "applied"})
	// A captured command sent again is refused by the counter.
	if _, err := devcmd.Verify(pub, first, e.device, last, time.Now()); err != devcmd.ErrReplay {
		t.Fatalf("replayed command: %v", err)
	}
	// An altered command is refused, and the device says so.
	send(`{"type": "set-threshold", "params": {"spo2Below": 90}}`)
	second := bytes.Replace(receive(), []byte(`"spo2Below":90`), []byte(`"spo2Below":50`), 1)
	c2, err := devcmd.Verify(pub, second, e.device, last, time.Now())
	if err != devcmd.ErrSignature {
		t.Fatalf("altered command: %v", err)
	}
	ack(devcmd.Ack{Seq: c2.Seq, Status: "rejected", Reason: err.Error()})
	ack(devcmd.Ack{Seq: 77, Status: "applied"}) // nothing waits for 77: ignored
	for deadline := time.Now().Add(10 * time.Second); ; {
		h := history()
		if len(h) == 2 && h[0].Status == vigil.CommandApplied && h[1].Status == vigil.CommandRejected && strings.Contains(h[1].Reason, "signature") && h[0].By == "dr" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("command history: %+v", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
