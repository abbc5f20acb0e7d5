package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil"
)

func TestConnectRefused(t *testing.T) {
	tests := []struct {
		name       string
		user, pass string
		authErr    error
		v5, v3     byte // CONNACK codes
		reason     string
	}{
		{name: "anonymous", v5: 0x87, v3: 0x05, reason: authAnonymous},
		{name: "wrong password", user: dev1, pass: "nope", v5: 0x86, v3: 0x04, reason: authBadCreds},
		{name: "unknown device", user: "ghost", pass: secret1, v5: 0x86, v3: 0x04, reason: authBadCreds},
		{name: "invalid id", user: "a/b", pass: secret1, v5: 0x86, v3: 0x04, reason: authBadCreds},
		{name: "auth unavailable", user: dev1, pass: secret1, v5: 0x88, v3: 0x03, reason: authUnavailable,
			authErr: vigil.Errorf(vigil.EUNAVAILABLE, "store closed")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := &testAuth{secrets: map[string]string{dev1: secret1}, err: tt.authErr}
			f := startBroker(t, newTestIngester(t, false), auth)

			_, ca, err := connectV5(t, f.addr, tt.user, tt.pass)
			if err == nil {
				t.Fatalf("v5 connect succeeded, want refusal")
			}
			if ca == nil {
				t.Fatalf("v5 connect: no CONNACK (%v)", err)
			}
			if got := ca.ReasonCode; got != tt.v5 {
				t.Errorf("v5 CONNACK code got %#x, want %#x", got, tt.v5)
			}

			_, tok, _ := connectV3(t, f.addr, tt.user, tt.pass)
			if tok.Error() == nil {
				t.Fatalf("v3 connect succeeded, want refusal")
			}
			if got := tok.(*paho3ConnectToken).ReturnCode(); got != tt.v3 {
				t.Errorf("v3 CONNACK code got %#x, want %#x", got, tt.v3)
			}

			if got, want := f.metric(t, "vigil_mqtt_auth_failures_total", map[string]string{"reason": tt.reason}), 2.0; got != want {
				t.Errorf("auth failures{reason=%s} got %v, want %v", tt.reason, got, want)
			}
			if got := f.metric(t, "vigil_mqtt_connections", nil); got != 0 {
				t.Errorf("connections got %v, want 0", got)
			}
		})
	}
}

func TestConnectAcceptedAndCounted(t *testing.T) {
	f := startBroker(t, newTestIngester(t, false), nil)
	mustConnectV5(t, f.addr, dev1, secret1)
	mustConnectV3(t, f.addr, dev2, secret2)
	f.waitMetric(t, "vigil_mqtt_connections", nil, 2)
}

func TestPublishToOtherDeviceRefused(t *testing.T) {
	f := startBroker(t, newTestIngester(t, false), nil)
	topic := ReadingsTopic(dev2)

	v5 := mustConnectV5(t, f.addr, dev1, secret1)
	pr, err := v5.c.Publish(ctxT(t), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(`{"x":1}`)})
	if err == nil || pr == nil {
		t.Fatalf("v5 publish to %s: err %v, response %+v; want a refusal", topic, err, pr)
	}
	if got, want := pr.ReasonCode, byte(0x87); got != want {
		t.Errorf("v5 PUBACK code got %#x, want %#x", got, want)
	}

	v3, lost := mustConnectV3(t, f.addr, dev1, secret1)
	v3.Publish(topic, 1, false, []byte(`{"x":"PHI-MARKER"}`))
	select {
	case <-lost: // mochi disconnects a v3.1.1 client it refuses a publish
	case <-time.After(30 * time.Second):
		t.Fatalf("v3 client not disconnected after a refused publish")
	}

	if got := len(f.ing.messages()); got != 0 {
		t.Errorf("ingester got %d messages, want 0", got)
	}
	if got, want := f.metric(t, "vigil_mqtt_acl_denied_total", map[string]string{"action": "publish"}), 2.0; got != want {
		t.Errorf("acl denied publish got %v, want %v", got, want)
	}
	// mochi logs the refused packet at warn level; the payload must not
	// be in it.
	logs := f.waitLog(t, "error processing packet")
	if strings.Contains(logs, "PHI-MARKER") || !strings.Contains(logs, "pk.payload_bytes=18") {
		t.Errorf("want the packet summarised without its payload, got log:\n%s", logs)
	}
}

func TestSubscribeACL(t *testing.T) {
	f := startBroker(t, newTestIngester(t, false), nil)
	filters := []struct {
		filter string
		ok     bool
	}{
		{"vigil/v1/devices/dev1/#", true},
		{"vigil/v1/devices/dev1/+/config", true},
		{"vigil/v1/devices/other/#", false},
		{"#", false},
		{"+/v1/devices/dev1/status", false},
		{"vigil/v1/devices/+/status", false},
		{"vigil/v1/devices/dev10/#", false},
		{"$share/g/vigil/v1/devices/dev1/#", false},
	}
	refused := 0
	for _, fl := range filters {
		if !fl.ok {
			refused++
		}
	}

	v5 := mustConnectV5(t, f.addr, dev1, secret1)
	var subs []paho.SubscribeOptions
	for _, fl := range filters {
		subs = append(subs, paho.SubscribeOptions{Topic: fl.filter, QoS: 1})
	}
	sa, _ := v5.c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: subs})
	if sa == nil || len(sa.Reasons) != len(filters) {
		t.Fatalf("v5 SUBACK %+v, want %d reasons", sa, len(filters))
	}
	for i, fl := range filters {
		want := byte(0x87)
		if fl.ok {
			want = 1
		}
		if got := sa.Reasons[i]; got != want {
			t.Errorf("v5 subscribe %q: got %#x, want %#x", fl.filter, got, want)
		}
	}

	v3, _ := mustConnectV3(t, f.addr, dev1, secret1)
	for _, fl := range filters {
		tok := v3.Subscribe(fl.filter, 1, nil)
		waitToken(t, tok)
		want := byte(0x80)
		if fl.ok {
			want = 1
		}
		res := tok.(*paho3SubscribeToken).Result()
		got, ok := res[fl.filter]
		if !ok { // paho.mqtt.golang keys shared subscriptions without "$share/{group}/"
			got, ok = res[strings.SplitN(fl.filter, "/", 3)[2]]
		}
		if !ok || got != want {
			t.Errorf("v3 subscribe %q: got %#x, want %#x", fl.filter, got, want)
		}
	}

	if got, want := f.metric(t, "vigil_mqtt_acl_denied_total", map[string]string{"action": "subscribe"}), float64(2*refused); got != want {
		t.Errorf("acl denied subscribe got %v, want %v", got, want)
	}
}

// A PUBACK must not leave the broker before the ingester's done ran. The
// SUBACK of a later SUBSCRIBE proves the broker processed the PUBLISH.
func TestPubackOnlyAfterDone(t *testing.T) {
	t.Run("v5", func(t *testing.T) {
		ing := newTestIngester(t, true)
		f := startBroker(t, ing, nil)
		v5 := mustConnectV5(t, f.addr, dev1, secret1)

		res := make(chan error, 1)
		go func() {
			_, err := v5.c.Publish(ctxT(t), &paho.Publish{Topic: ReadingsTopic(dev1), QoS: 1, Payload: []byte(`{}`)})
			res <- err
		}()
		ing.waitMessages(t, 1)
		if _, err := v5.c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil/v1/devices/dev1/cmd", QoS: 1}}}); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		if got := len(v5.wire.received(packets.PUBACK)); got != 0 {
			t.Fatalf("got %d PUBACKs before done ran, want 0", got)
		}
		ing.release()
		if err := <-res; err != nil {
			t.Fatalf("publish after done: %v", err)
		}
		// The wire log parses what was read on its own goroutine: wait for it.
		v5.wire.waitReceived(t, packets.PUBACK, 1)
		if got, want := len(v5.wire.received(packets.PUBACK)), 1; got != want {
			t.Errorf("got %d PUBACKs, want %d", got, want)
		}
	})
	t.Run("v3", func(t *testing.T) {
		ing := newTestIngester(t, true)
		f := startBroker(t, ing, nil)
		v3, _ := mustConnectV3(t, f.addr, dev1, secret1)

		pub := v3.Publish(ReadingsTopic(dev1), 1, false, []byte(`{}`))
		ing.waitMessages(t, 1)
		waitToken(t, v3.Subscribe("vigil/v1/devices/dev1/cmd", 1, nil))
		select {
		case <-pub.Done():
			t.Fatalf("publish completed before done ran")
		default:
		}
		ing.release()
		waitToken(t, pub)
		if err := pub.Error(); err != nil {
			t.Fatalf("publish: %v", err)
		}
	})
}

// Many QoS 1 messages in flight on one connection: all reach the ingester
// before any is acknowledged, and the PUBACKs come back in receive order.
// The client is paho's packet codec on a raw connection, so that the test
// chooses the packet ids (deliberately not ascending) and the exact order
// they are written in.
func TestInFlightPubacksInOrder(t *testing.T) {
	const n = 100
	ing := newTestIngester(t, true)
	f := startBroker(t, ing, nil)
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wire := newWireConn(conn)

	connect := packets.NewControlPacket(packets.CONNECT)
	cp := connect.Content.(*packets.Connect)
	cp.ProtocolName, cp.ProtocolVersion, cp.ClientID, cp.CleanStart, cp.KeepAlive = "MQTT", 5, "inflight", true, 60
	cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = dev1, true, []byte(secret1), true
	if _, err := connect.WriteTo(conn); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	// Read through the recorder (nothing else reads this connection). Not
	// io.Copy: it would use the embedded TCPConn's WriteTo, bypassing Read.
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := wire.Read(buf); err != nil {
				return
			}
		}
	}()
	if ca := wire.waitReceived(t, packets.CONNACK, 1)[0].Content.(*packets.Connack); ca.ReasonCode != 0 {
		t.Fatalf("CONNACK reason %#x", ca.ReasonCode)
	}

	ids := make([]uint16, n)
	for i := range n {
		ids[i] = uint16((i*37)%n + 1)
		pub := packets.NewControlPacket(packets.PUBLISH)
		p := pub.Content.(*packets.Publish)
		p.QoS, p.PacketID, p.Topic, p.Payload = 1, ids[i], ReadingsTopic(dev1), fmt.Appendf(nil, `{"seq":%d}`, i)
		if _, err := pub.WriteTo(conn); err != nil {
			t.Fatalf("write PUBLISH %d: %v", i, err)
		}
	}

	msgs := ing.waitMessages(t, n)
	if got := len(wire.received(packets.PUBACK)); got != 0 {
		t.Fatalf("got %d PUBACKs before any done ran, want 0", got)
	}
	for i, m := range msgs {
		if got, want := string(m.Payload), fmt.Sprintf(`{"seq":%d}`, i); got != want {
			t.Fatalf("message %d payload got %s, want %s", i, got, want)
		}
		if m.DeviceID != dev1 || m.Source != "mqtt" || m.Topic != ReadingsTopic(dev1) || m.Received.IsZero() {
			t.Fatalf("message %d: got %+v", i, m)
		}
	}

	ing.release()
	acks := wire.waitReceived(t, packets.PUBACK, n)
	for i := range n {
		ack := acks[i].Content.(*packets.Puback)
		if got, want := ack.PacketID, ids[i]; got != want {
			t.Fatalf("PUBACK %d is for packet %d, want %d (receive order)", i, got, want)
		}
		if ack.ReasonCode != 0 {
			t.Fatalf("PUBACK %d reason %#x, want 0", i, ack.ReasonCode)
		}
	}
	f.waitMetric(t, "vigil_mqtt_publish_ack_seconds", nil, n)
}

func TestV5ReasonCodes(t *testing.T) {
	invalid := vigil.FieldErrorf("values[0].unit", "unknown_unit", "unit %q is not known", "furlong")
	tests := []struct {
		name       string
		result     vigil.IngestResult
		code       byte
		reasonPart string
	}{
		{name: "stored", result: vigil.IngestResult{Readings: []vigil.ReadingOutcome{{ID: "a"}}}, code: 0x00},
		{name: "duplicate", result: vigil.IngestResult{Readings: []vigil.ReadingOutcome{{ID: "a", Duplicate: true}}}, code: 0x00},
		{name: "invalid", result: vigil.IngestResult{Err: invalid}, code: 0x99, reasonPart: "values[0].unit (unknown_unit)"},
		{name: "too large", result: vigil.IngestResult{Err: vigil.Errorf(vigil.ETOOLARGE, "too big")}, code: 0x95, reasonPart: "too big"},
		{name: "unauthorized", result: vigil.IngestResult{Err: vigil.Errorf(vigil.EFORBIDDEN, "device not assigned")}, code: 0x87, reasonPart: "device not assigned"},
		{name: "unavailable", result: vigil.IngestResult{Err: vigil.Errorf(vigil.EUNAVAILABLE, "closing")}, code: 0x89, reasonPart: "closing"},
		{name: "internal", result: vigil.IngestResult{Err: errors.New("disk on fire")}, code: 0x80, reasonPart: "internal error"},
		{name: "partial", result: vigil.IngestResult{Readings: []vigil.ReadingOutcome{
			{ID: "a"}, {ID: "b", Err: invalid}, {ID: "c", Err: vigil.Errorf(vigil.EINVALID, "x")},
		}}, code: 0x83, reasonPart: `2 of 3 readings refused; first: reading 1 (id "b"): values[0].unit (unknown_unit): unit "furlong" is not known`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ing := newTestIngester(t, false)
			ing.result = func(vigil.Message) vigil.IngestResult { return tt.result }
			f := startBroker(t, ing, nil)
			v5 := mustConnectV5(t, f.addr, dev1, secret1)
			for _, qos := range []byte{1, 2} {
				pr, _ := v5.c.Publish(ctxT(t), &paho.Publish{Topic: ReadingsTopic(dev1), QoS: qos, Payload: []byte(`{}`)})
				if pr == nil {
					t.Fatalf("qos %d: no response", qos)
				}
				if pr.ReasonCode != tt.code {
					t.Errorf("qos %d: reason code got %#x, want %#x", qos, pr.ReasonCode, tt.code)
				}
				reason := ""
				if pr.Properties != nil {
					reason = pr.Properties.ReasonString
				}
				if !strings.Contains(reason, tt.reasonPart) || (tt.reasonPart == "" && reason != "") {
					t.Errorf("qos %d: reason string got %q, want it to contain %q", qos, reason, tt.reasonPart)
				}
			}
		})
	}
}

// MQTT 3.1.1 has no negative PUBACK: a refused payload is acknowledged
// (the pipeline dead-letters it).
func TestV3RefusedPayloadAcknowledged(t *testing.T) {
	ing := newTestIngester(t, false)
	ing.result = func(vigil.Message) vigil.IngestResult {
		return vigil.IngestResult{Err: vigil.Errorf(vigil.EINVALID, "not JSON")}
	}
	f := startBroker(t, ing, nil)
	v3, lost := mustConnectV3(t, f.addr, dev1, secret1)
	for _, qos := range []byte{1, 2} {
		tok := v3.Publish(ReadingsTopic(dev1), qos, false, []byte(`garbage`))
		waitToken(t, tok)
		if err := tok.Error(); err != nil {
			t.Errorf("qos %d: %v", qos, err)
		}
	}
	if got, want := len(ing.messages()), 2; got != want {
		t.Errorf("ingester got %d messages, want %d", got, want)
	}
	select {
	case err := <-lost:
		t.Errorf("v3 client disconnected: %v", err)
	default:
	}
}

// EUNAVAILABLE means nothing is durable: a v3.1.1 client is disconnected
// instead of acknowledged (so it sends again), a v5 client gets 0x89.
func TestUnavailable(t *testing.T) {
	ing := newTestIngester(t, false)
	ing.result = func(vigil.Message) vigil.IngestResult {
		return vigil.IngestResult{Err: vigil.Errorf(vigil.EUNAVAILABLE, "pipeline closing")}
	}
	f := startBroker(t, ing, nil)

	for _, qos := range []byte{1, 2} {
		v3, lost := mustConnectV3(t, f.addr, dev1, secret1)
		pub := v3.Publish(ReadingsTopic(dev1), qos, false, []byte(`{}`))
		select {
		case <-lost:
		case <-time.After(30 * time.Second):
			t.Fatalf("qos %d: v3 client not disconnected", qos)
		}
		select {
		case <-pub.Done():
			if pub.Error() == nil {
				t.Errorf("qos %d: v3 publish acknowledged, want no acknowledgement", qos)
			}
		default:
		}
		v3.Disconnect(0)
	}

	v5 := mustConnectV5(t, f.addr, dev1, secret1)
	pr, _ := v5.c.Publish(ctxT(t), &paho.Publish{Topic: ReadingsTopic(dev1), QoS: 1, Payload: []byte(`{}`)})
	if pr == nil || pr.ReasonCode != 0x89 {
		t.Fatalf("v5 PUBACK %+v, want reason 0x89", pr)
	}
}

// Readings are never forwarded to subscribers; the device's other topics
// are ordinary MQTT.
func TestReadingsNotForwarded(t *testing.T) {
	f := startBroker(t, newTestIngester(t, false), nil)
	got := make(chan string, 10)
	sub := mustConnectV5(t, f.addr, dev1, secret1)
	sub.c.AddOnPublishReceived(func(p paho.PublishReceived) (bool, error) {
		got <- p.Packet.Topic
		return true, nil
	})
	if _, err := sub.c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil/v1/devices/dev1/#", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	pub, _ := mustConnectV3(t, f.addr, dev1, secret1)
	for _, qos := range []byte{0, 1, 2} {
		waitToken(t, pub.Publish(ReadingsTopic(dev1), qos, true, []byte(`{}`)))
	}
	status := "vigil/v1/devices/dev1/status"
	waitToken(t, pub.Publish(status, 1, false, []byte(`online`)))
	select {
	case topic := <-got:
		if topic != status {
			t.Fatalf("subscriber got a message on %s, want only %s", topic, status)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("status message not delivered")
	}
	if n := len(f.ing.messages()); n != 3 {
		t.Errorf("ingester got %d messages, want 3 (readings only)", n)
	}
	// A new subscriber gets no retained reading.
	late := mustConnectV5(t, f.addr, dev1, secret1)
	lateGot := make(chan string, 10)
	late.c.AddOnPublishReceived(func(p paho.PublishReceived) (bool, error) {
		lateGot <- p.Packet.Topic
		return true, nil
	})
	if _, err := late.c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil/v1/devices/dev1/#", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if _, err := late.c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil/v1/devices/dev1/x", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	select {
	case topic := <-lateGot:
		t.Errorf("late subscriber got a retained message on %s", topic)
	default:
	}
}

// Close stops accepting connections, waits for held acknowledgements and
// writes them before it disconnects the clients.
func TestCloseWaitsForPendingAcks(t *testing.T) {
	ing := newTestIngester(t, true)
	f := startBroker(t, ing, nil)
	v5 := mustConnectV5(t, f.addr, dev1, secret1)
	res := make(chan *paho.PublishResponse, 1)
	go func() {
		pr, _ := v5.c.Publish(ctxT(t), &paho.Publish{Topic: ReadingsTopic(dev1), QoS: 1, Payload: []byte(`{}`)})
		res <- pr
	}()
	ing.waitMessages(t, 1)

	closed := make(chan error, 1)
	go func() { closed <- f.b.Close() }()
	// Wait until the broker no longer accepts connections.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", f.addr, time.Second)
		if err != nil {
			break
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("broker still accepts connections after Close started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while an acknowledgement was pending", err)
	default:
	}

	ing.release()
	pr := <-res
	if pr == nil || pr.ReasonCode != 0 {
		t.Fatalf("PUBACK %+v, want success before shutdown", pr)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestDisconnectDevice(t *testing.T) {
	f := startBroker(t, newTestIngester(t, false), nil)
	d1 := mustConnectV5(t, f.addr, dev1, secret1)
	d2 := mustConnectV5(t, f.addr, dev2, secret2)
	_, lost3 := mustConnectV3(t, f.addr, dev1, secret1)

	f.b.Disconnect(dev1)
	select {
	case d := <-d1.disconnects:
		if d.ReasonCode != 0x98 {
			t.Errorf("DISCONNECT reason got %#x, want 0x98", d.ReasonCode)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("v5 client of %s not disconnected", dev1)
	}
	select {
	case <-lost3:
	case <-time.After(30 * time.Second):
		t.Fatalf("v3 client of %s not disconnected", dev1)
	}
	if _, err := d2.c.Publish(ctxT(t), &paho.Publish{Topic: ReadingsTopic(dev2), QoS: 1, Payload: []byte(`{}`)}); err != nil {
		t.Errorf("other device's connection: %v", err)
	}
}

// Two devices using the same MQTT client id must not take over each
// other's session.
func TestSameClientIDDifferentDevices(t *testing.T) {
	f := startBroker(t, newTestIngester(t, false), nil)
	var clients []*paho.Client
	for _, cred := range [][2]string{{dev1, secret1}, {dev2, secret2}} {
		conn, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn})
		if _, err := c.Connect(ctxT(t), &paho.Connect{ClientID: "shared-id", KeepAlive: 30, CleanStart: true,
			Username: cred[0], UsernameFlag: true, Password: []byte(cred[1]), PasswordFlag: true}); err != nil {
			t.Fatalf("connect %s: %v", cred[0], err)
		}
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
		clients = append(clients, c)
	}
	for i, c := range clients {
		dev := []string{dev1, dev2}[i]
		if _, err := c.Publish(ctxT(t), &paho.Publish{Topic: ReadingsTopic(dev), QoS: 1, Payload: []byte(`{}`)}); err != nil {
			t.Errorf("%s publish: %v", dev, err)
		}
	}
}

func TestStartAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	opts := DefaultOptions()
	opts.Addr = ln.Addr().String()
	opts.Auth = &testAuth{}
	opts.Ingester = newTestIngester(t, false)
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Start()
	if err == nil {
		t.Fatalf("Start on a taken address succeeded")
	}
	for _, want := range []string{opts.Addr, "--mqtt"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestWillOutsideOwnTopicsRefused(t *testing.T) {
	tests := []struct {
		topic string
		code  byte
	}{
		{"vigil/v1/devices/dev2/status", 0x87},
		{ReadingsTopic(dev1), 0x87},
		{"vigil/v1/devices/dev1/status", 0x00},
	}
	f := startBroker(t, newTestIngester(t, false), nil)
	for _, tt := range tests {
		conn, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn})
		ca, _ := c.Connect(ctxT(t), &paho.Connect{ClientID: "will", KeepAlive: 30, CleanStart: true,
			Username: dev1, UsernameFlag: true, Password: []byte(secret1), PasswordFlag: true,
			WillMessage: &paho.WillMessage{Topic: tt.topic, Payload: []byte("offline"), QoS: 1}})
		if ca == nil || ca.ReasonCode != tt.code {
			t.Errorf("will on %s: CONNACK %+v, want reason %#x", tt.topic, ca, tt.code)
		}
		_ = c.Disconnect(&paho.Disconnect{})
		_ = conn.Close()
	}
	if got, want := f.metric(t, "vigil_mqtt_acl_denied_total", map[string]string{"action": "publish"}), 2.0; got != want {
		t.Errorf("acl denied publish got %v, want %v", got, want)
	}
}

// A payload over MaxPayload is refused by the broker without reaching the
// ingester.
func TestPayloadTooLarge(t *testing.T) {
	f := startBroker(t, newTestIngester(t, false), nil, func(o *Options) { o.MaxPayload = 64 })
	v5 := mustConnectV5(t, f.addr, dev1, secret1)
	for _, qos := range []byte{1, 2} {
		pr, _ := v5.c.Publish(ctxT(t), &paho.Publish{Topic: ReadingsTopic(dev1), QoS: qos, Payload: make([]byte, 65)})
		if pr == nil || pr.ReasonCode != 0x95 {
			t.Errorf("qos %d: response %+v, want reason 0x95", qos, pr)
		}
	}
	pr, err := v5.c.Publish(ctxT(t), &paho.Publish{Topic: ReadingsTopic(dev1), QoS: 1, Payload: make([]byte, 64)})
	if err != nil || pr.ReasonCode != 0 {
		t.Errorf("payload at the limit: %+v, %v", pr, err)
	}
	if got, want := len(f.ing.messages()), 1; got != want {
		t.Errorf("ingester got %d messages, want %d", got, want)
	}
}

func TestTLS(t *testing.T) {
	cert := selfSigned(t)
	f := startBroker(t, newTestIngester(t, false), nil, func(o *Options) {
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	conn, err := tls.Dial("tcp", f.addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("tls dial: %v", err)
	}
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	// KeepAlive 0: paho.golang writes a packet with several Write calls
	// (net.Buffers) and its pinger writes PINGREQ from another goroutine —
	// on a TLS connection the two can interleave and corrupt the PUBLISH
	// (on TCP the packet goes out in one writev). No pinger, no race.
	if _, err := c.Connect(ctxT(t), &paho.Connect{ClientID: "tls", KeepAlive: 0, CleanStart: true,
		Username: dev1, UsernameFlag: true, Password: []byte(secret1), PasswordFlag: true}); err != nil {
		t.Fatalf("connect over TLS: %v", err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	if _, err := c.Publish(ctxT(t), &paho.Publish{Topic: ReadingsTopic(dev1), QoS: 1, Payload: []byte(`{}`)}); err != nil {
		t.Fatalf("publish over TLS: %v", err)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// A connection at its in-flight limit is not read further until an
// acknowledgement has been written; nothing is lost or deadlocked.
func TestInFlightLimitBackpressure(t *testing.T) {
	ing := newTestIngester(t, true)
	f := startBroker(t, ing, nil)
	f.b.inflight = 2 // before any connection
	v3, _ := mustConnectV3(t, f.addr, dev1, secret1)
	var toks []paho3Token
	for i := range 3 {
		toks = append(toks, v3.Publish(ReadingsTopic(dev1), 1, false, fmt.Appendf(nil, `{"seq":%d}`, i)))
	}
	ing.waitMessages(t, 2)
	time.Sleep(50 * time.Millisecond) // a third submission would show up here
	if got := len(ing.messages()); got != 2 {
		t.Fatalf("ingester got %d messages at an in-flight limit of 2", got)
	}
	ing.release()
	for i, tok := range toks {
		waitToken(t, tok)
		if err := tok.Error(); err != nil {
			t.Errorf("publish %d: %v", i, err)
		}
	}
	if got := len(ing.messages()); got != 3 {
		t.Errorf("ingester got %d messages, want 3", got)
	}
}
