package broker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
)

// testAuth knows a fixed set of device credentials.
type testAuth struct {
	secrets map[string]string // device id -> secret
	err     error             // when set, returned for every call (e.g. EUNAVAILABLE)
}

func (a *testAuth) Device(ctx context.Context, id, secret string) (*vigil.Device, error) {
	if a.err != nil {
		return nil, a.err
	}
	if s, ok := a.secrets[id]; !ok || s != secret {
		return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "bad device credentials")
	}
	return &vigil.Device{ID: id}, nil
}

// testIngester records submitted messages. It calls done in submission
// order from its own goroutine (as the pipeline's committer does); while
// held, done calls wait until release. result decides each outcome.
type testIngester struct {
	result func(vigil.Message) vigil.IngestResult // nil: every message stored

	mu       sync.Mutex
	msgs     []vigil.Message
	held     bool
	waiting  []func()
	changed  chan struct{} // closed and replaced on every Submit
	run      chan func()
	stopOnce sync.Once
}

func newTestIngester(t *testing.T, held bool) *testIngester {
	ing := &testIngester{held: held, changed: make(chan struct{}), run: make(chan func(), 4096)}
	go func() {
		for f := range ing.run {
			f()
		}
	}()
	t.Cleanup(func() { ing.stopOnce.Do(func() { close(ing.run) }) })
	return ing
}

func (g *testIngester) Submit(ctx context.Context, m vigil.Message, done func(vigil.IngestResult)) {
	r := vigil.IngestResult{Readings: []vigil.ReadingOutcome{{ID: "r1"}}}
	if g.result != nil {
		r = g.result(m)
	}
	call := func() { done(r) }
	g.mu.Lock()
	g.msgs = append(g.msgs, m)
	if g.held {
		g.waiting = append(g.waiting, call)
	} else {
		g.run <- call
	}
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}

func (g *testIngester) Ingest(ctx context.Context, m vigil.Message) vigil.IngestResult {
	ch := make(chan vigil.IngestResult, 1)
	g.Submit(ctx, m, func(r vigil.IngestResult) { ch <- r })
	return <-ch
}

// release lets every held and future done call run, in order.
func (g *testIngester) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held = false
	for _, f := range g.waiting {
		g.run <- f
	}
	g.waiting = nil
}

func (g *testIngester) messages() []vigil.Message {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]vigil.Message(nil), g.msgs...)
}

// waitMessages waits until at least n messages were submitted.
func (g *testIngester) waitMessages(t *testing.T, n int) []vigil.Message {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		g.mu.Lock()
		got, ch := len(g.msgs), g.changed
		g.mu.Unlock()
		if got >= n {
			return g.messages()
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("ingester got %d messages, want %d", got, n)
		}
	}
}

const (
	dev1, secret1 = "dev1", "secret-1"
	dev2, secret2 = "dev2", "secret-2"
)

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type fixture struct {
	b    *Broker
	ing  *testIngester
	reg  *prometheus.Registry
	logs *logBuffer
	addr string
}

// startBroker starts a broker on 127.0.0.1:0 with devices dev1 and dev2.
func startBroker(t *testing.T, ing *testIngester, auth *testAuth, mods ...func(*Options)) *fixture {
	t.Helper()
	if auth == nil {
		auth = &testAuth{secrets: map[string]string{dev1: secret1, dev2: secret2}}
	}
	f := &fixture{ing: ing, reg: prometheus.NewRegistry(), logs: &logBuffer{}}
	opts := DefaultOptions()
	opts.Addr = "127.0.0.1:0"
	opts.Auth = auth
	opts.Ingester = ing
	opts.Registerer = f.reg
	opts.Logger = slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, m := range mods {
		m(&opts)
	}
	b, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", f.logs.String())
		}
		ing.release()
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	f.b, f.addr = b, b.Addr().String()
	return f
}

// waitLog waits until the broker's log contains s and returns the log.
func (f *fixture) waitLog(t *testing.T, s string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := f.logs.String()
		if strings.Contains(l, s) {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("log does not contain %q:\n%s", s, l)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// metric returns the value of a counter or gauge with the given labels.
func (f *fixture) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

// wireConn records the MQTT packets a client receives, in wire order, by
// decoding a copy of the bytes read. It embeds *net.TCPConn so that paho's
// multi-buffer writes stay single writev calls (a wrapper's Write would
// let concurrent writers interleave).
type wireConn struct {
	*net.TCPConn
	inW *io.PipeWriter

	mu      sync.Mutex
	in      []*packets.ControlPacket
	changed chan struct{}
}

func newWireConn(c net.Conn) *wireConn {
	w := &wireConn{TCPConn: c.(*net.TCPConn), changed: make(chan struct{})}
	inR, inW := io.Pipe()
	w.inW = inW
	go w.decode(inR)
	return w
}

func (w *wireConn) decode(r *io.PipeReader) {
	for {
		p, err := packets.ReadPacket(r)
		if err != nil {
			_ = r.CloseWithError(err)
			return
		}
		w.mu.Lock()
		w.in = append(w.in, p)
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
}

func (w *wireConn) Read(b []byte) (int, error) {
	n, err := w.TCPConn.Read(b)
	if n > 0 {
		_, _ = w.inW.Write(b[:n])
	}
	if err != nil {
		_ = w.inW.CloseWithError(err)
	}
	return n, err
}

// received returns the packets of type typ read so far.
func (w *wireConn) received(typ byte) []*packets.ControlPacket {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*packets.ControlPacket
	for _, p := range w.in {
		if p.Type == typ {
			out = append(out, p)
		}
	}
	return out
}

// waitReceived waits until n packets of type typ were read.
func (w *wireConn) waitReceived(t *testing.T, typ byte, n int) []*packets.ControlPacket {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		ch := w.changed
		w.mu.Unlock()
		if got := w.received(typ); len(got) >= n {
			return got
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("received %d packets of type %d, want %d", len(w.received(typ)), typ, n)
		}
	}
}

// v5client is a connected MQTT 5 client with its wire recorder.
type v5client struct {
	c           *paho.Client
	wire        *wireConn
	disconnects chan *paho.Disconnect
}

// connectV5 connects an MQTT 5 client; it returns the CONNACK and error of
// paho's Connect.
func connectV5(t *testing.T, addr, user, pass string) (*v5client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	v := &v5client{wire: newWireConn(conn), disconnects: make(chan *paho.Disconnect, 1)}
	v.c = paho.NewClient(paho.ClientConfig{
		Conn:          v.wire,
		PacketTimeout: 60 * time.Second,
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case v.disconnects <- d:
			default:
			}
		},
	})
	if os.Getenv("PAHO_DEBUG") != "" {
		v.c.SetDebugLogger(log.New(os.Stderr, "PAHO "+user+" ", log.Lmicroseconds))
	}
	cp := &paho.Connect{ClientID: fmt.Sprintf("%s-%s", t.Name(), user), KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(pass), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca, err := v.c.Connect(ctx, cp)
	t.Cleanup(func() {
		_ = v.c.Disconnect(&paho.Disconnect{})
		_ = v.wire.Close()
	})
	return v, ca, err
}

func mustConnectV5(t *testing.T, addr, user, pass string) *v5client {
	t.Helper()
	v, ca, err := connectV5(t, addr, user, pass)
	if err != nil {
		t.Fatalf("connect v5 as %q: %v (connack %+v)", user, err, ca)
	}
	return v
}

// connectV3 connects an MQTT 3.1.1 client. lost receives the connection-
// lost error.
func connectV3(t *testing.T, addr, user, pass string) (paho3.Client, paho3.Token, chan error) {
	t.Helper()
	lost := make(chan error, 1)
	o := paho3.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(fmt.Sprintf("%s-%s-v3", t.Name(), user)).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetCleanSession(true).
		SetKeepAlive(30 * time.Second).
		SetWriteTimeout(30 * time.Second).
		SetConnectionLostHandler(func(_ paho3.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	if user != "" {
		o.SetUsername(user).SetPassword(pass)
	}
	c := paho3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(30 * time.Second) {
		t.Fatalf("v3 connect as %q: timeout", user)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, tok, lost
}

func mustConnectV3(t *testing.T, addr, user, pass string) (paho3.Client, chan error) {
	t.Helper()
	c, tok, lost := connectV3(t, addr, user, pass)
	if err := tok.Error(); err != nil {
		t.Fatalf("connect v3 as %q: %v", user, err)
	}
	return c, lost
}

func waitToken(t *testing.T, tok paho3.Token) {
	t.Helper()
	if !tok.WaitTimeout(30 * time.Second) {
		t.Fatalf("token did not complete")
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type (
	paho3ConnectToken   = paho3.ConnectToken
	paho3SubscribeToken = paho3.SubscribeToken
	paho3Token          = paho3.Token
)

// waitMetric waits until a metric reaches want (the broker updates some
// metrics just after the client has seen the packet).
func (f *fixture) waitMetric(t *testing.T, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := f.metric(t, name, labels)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v got %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (a *testAuth) DeviceByCert(ctx context.Context, id, serial string) (*vigil.Device, error) {
	return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "no certificates in these tests")
}
