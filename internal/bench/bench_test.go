package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/broker"
)

type accept struct{}

func (accept) Submit(_ context.Context, _ vigil.Message, done func(vigil.IngestResult)) {
	done(vigil.IngestResult{Readings: []vigil.ReadingOutcome{{}}})
}
func (accept) Ingest(context.Context, vigil.Message) vigil.IngestResult { return vigil.IngestResult{} }

type anyDevice struct{}

func (anyDevice) Device(_ context.Context, id, secret string) (*vigil.Device, error) {
	if secret != "pw-"+id {
		return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "bad secret")
	}
	return &vigil.Device{ID: id}, nil
}

func opts(addr string) Options {
	return Options{
		Addr: addr, Publishers: 4, InFlight: 8, Duration: 2 * time.Second,
		Creds: func(i int) (string, string) { return fmt.Sprint("d", i), fmt.Sprint("pw-d", i) },
		Topic: func(i int) string { return fmt.Sprintf("vigil/v1/devices/d%d/readings", i) },
		Payload: func(i int, seq uint64) []byte {
			return fmt.Appendf(nil, `{"id":"%d","time":"2026-11-24T00:00:00Z","values":[]}`, seq)
		},
	}
}

func check(t *testing.T, r Report) {
	t.Helper()
	if r.Acked == 0 || r.PerSecond <= 0 || r.Sent < r.Acked-uint64(r.Publishers*r.InFlight) {
		t.Fatalf("nothing measured: %s", r)
	}
	if !(r.P50 <= r.P90 && r.P90 <= r.P99 && r.P99 <= r.Max) || r.Max == 0 {
		t.Fatalf("latency quantiles out of order: %s", r)
	}
	t.Log(r)
}

func TestAgainstEmbeddedBroker(t *testing.T) {
	bo := broker.DefaultOptions()
	bo.Addr = "127.0.0.1:0"
	bo.Auth = anyDevice{}
	bo.Ingester = accept{}
	b, err := broker.New(bo)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := Run(context.Background(), opts(b.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	check(t, r)

	// Rate limiting: 4 publishers at 50/s for 2 s is about 400 messages.
	o := opts(b.Addr().String())
	o.Rate = 50
	r, err = Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.PerSecond < 100 || r.PerSecond > 300 {
		t.Fatalf("rate 4x50/s gave %.0f/s", r.PerSecond)
	}

	// Wrong credentials: nobody connects, and Run says why.
	o = opts(b.Addr().String())
	o.Creds = func(int) (string, string) { return "d0", "wrong" }
	if _, err := Run(context.Background(), o); err == nil {
		t.Fatal("run with refused connections did not fail")
	}
}

// The peer this machine runs (Mosquitto on 127.0.0.1:1883).
func TestAgainstMosquitto(t *testing.T) {
	c, err := net.DialTimeout("tcp", "127.0.0.1:1883", time.Second)
	if err != nil {
		if os.Getenv("VIGIL_REQUIRE_ALL") != "" {
			t.Fatalf("Mosquitto is not running on 127.0.0.1:1883: %v", err)
		}
		t.Skip("no Mosquitto on 127.0.0.1:1883")
	}
	c.Close()
	o := opts("127.0.0.1:1883")
	o.Creds = nil
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	check(t, r)
}

func (anyDevice) DeviceByCert(_ context.Context, id, _ string) (*vigil.Device, error) {
	return &vigil.Device{ID: id}, nil
}

// The HTTP driver posts each device's readings with its credentials,
// InFlight at a time, and counts only 2xx answers as acknowledged.
func TestHTTPDriver(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || pass != "pw-"+user || r.URL.Path != "/api/v1/devices/"+user+"/readings" {
			http.Error(w, "no", 401)
			return
		}
		mu.Lock()
		seen[user]++
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	o := opts("")
	o.Protocol, o.URL, o.Duration = "http", srv.URL, time.Second
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	check(t, r)
	mu.Lock() // requests cut off at the end may still be answered
	devices := len(seen)
	mu.Unlock()
	if devices != 4 || r.P999 < r.P99 || r.P999 > r.Max {
		t.Fatalf("%d devices, report %s", devices, r)
	}
	// Refusals are not acknowledgements.
	o.Creds = func(i int) (string, string) { return fmt.Sprint("d", i), "wrong" }
	o.Duration = 300 * time.Millisecond
	if r, _ := Run(context.Background(), o); r.Acked != 0 || r.Errors == 0 {
		t.Fatalf("refused posts counted: %s", r)
	}
}

// The MQTT driver against a broker written here that checks what a
// broker would: never more than InFlight publishes unacknowledged on a
// connection, never a packet identifier reused before its PUBACK, every
// sequence number once. It acknowledges in bursts, out of order, and
// repeats some PUBACKs, which the driver must ignore, not count.
func TestMQTTDriverKeepsInFlight(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const inflight = 8
	var mu sync.Mutex
	var failure error
	fail := func(err error) {
		mu.Lock()
		if failure == nil {
			failure = err
		}
		mu.Unlock()
	}
	var acks sync.WaitGroup
	var ackedTotal uint64
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			acks.Add(1)
			go func() {
				defer acks.Done()
				defer nc.Close()
				c := &conn{nc: nc, w: bufio.NewWriter(nc), r: bufio.NewReader(nc)}
				if typ, _, err := c.readPacket(); err != nil || typ != 0x10 {
					fail(fmt.Errorf("expected CONNECT: %#x %v", typ, err))
					return
				}
				c.writePacket(0x20, []byte{0, 0})
				c.w.Flush()
				open := map[uint16]bool{}
				seen := map[string]bool{} // payloads, each with its sequence number
				var pending []uint16
				for {
					typ, body, err := c.readPacket()
					if err != nil || typ == 0xe0 {
						return
					}
					if typ != 0x30 {
						fail(fmt.Errorf("unexpected packet %#x", typ))
						return
					}
					tl := int(binary.BigEndian.Uint16(body))
					id := binary.BigEndian.Uint16(body[2+tl:])
					payload := string(body[2+tl+2:])
					if seen[payload] {
						fail(fmt.Errorf("message %s sent twice", payload))
						return
					}
					seen[payload] = true
					if id == 0 || open[id] {
						fail(fmt.Errorf("packet id %d reused while unacknowledged", id))
						return
					}
					open[id] = true
					if len(open) > inflight {
						fail(fmt.Errorf("%d publishes unacknowledged, allowed %d", len(open), inflight))
						return
					}
					pending = append(pending, id)
					if c.r.Buffered() > 0 && len(pending) < 3 {
						continue
					}
					// A burst, newest first, with the first one twice.
					for k := len(pending) - 1; k >= 0; k-- {
						c.writePacket(0x40, binary.BigEndian.AppendUint16(nil, pending[k]))
						delete(open, pending[k])
						mu.Lock()
						ackedTotal++
						mu.Unlock()
					}
					c.writePacket(0x40, binary.BigEndian.AppendUint16(nil, pending[0]))
					pending = pending[:0]
					if err := c.w.Flush(); err != nil {
						return
					}
				}
			}()
		}
	}()
	o := opts(ln.Addr().String())
	o.InFlight, o.Duration = inflight, time.Second
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	acks.Wait()
	mu.Lock()
	defer mu.Unlock()
	if failure != nil {
		t.Fatal(failure) // before check: a broken driver shows here first
	}
	check(t, r)
	// Counted acknowledgements are the measured part of those the broker sent once.
	if r.Acked > ackedTotal || r.Acked > r.Sent {
		t.Fatalf("driver counted %d acknowledgements of %d sent; the broker acknowledged %d in all", r.Acked, r.Sent, ackedTotal)
	}
}
