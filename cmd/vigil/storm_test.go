package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
)

// TestReconnectStorm connects 10,000 devices, restarts the server under
// them, and has all of them connect again at once: every one must be
// back — CONNACK and one reading acknowledged — within 30 s of the new
// server listening (the bar), and every acknowledged reading is
// stored exactly once.
//
// It needs 10,000 goroutines' worth of connections in the server, more
// than the race detector allows (8,128), so `make test` runs it in a
// second, race-free pass.
func TestReconnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("storm test is not short")
	}
	if raceEnabled {
		t.Skip("runs without -race (the race detector caps a process at 8,128 goroutines): make test runs it in its own pass")
	}
	const devices = 10000
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	registerDevices(t, dir, 1, t0) // the data directory, its keys and patient cp0
	secrets := addDevices(t, dir, devices, t0)

	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	srv := startChild(t, dir, "--mqtt", addr, "--mqtt-rate", "-1")
	defer func() { srv.cmd.Process.Kill(); srv.cmd.Wait() }()

	fleet := newFleet(devices, secrets)
	start := time.Now()
	if err := fleet.connectAndPublish(addr, t0, 0, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("first connect of %d devices, one reading each acknowledged: %v", devices, time.Since(start).Round(time.Millisecond))

	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.cmd.Wait()
	fleet.closeAll()
	srv = startChild(t, dir, "--mqtt", addr, "--mqtt-rate", "-1")
	start = time.Now()
	if err := fleet.connectAndPublish(addr, t0, 1, 30*time.Second); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	took := time.Since(start)
	t.Logf("reconnect storm: all %d devices back, one reading each acknowledged, %v after the new server listened", devices, took.Round(time.Millisecond))
	fleet.closeAll()
	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.cmd.Wait()

	st := openStore(t, dir)
	counts := storedCounts(t, st, 0, t0, time.Millisecond)
	for round := range 2 {
		for d := range devices {
			if n := counts[int64(100000+round*devices+d)]; n != 1 {
				t.Fatalf("device %d's reading of round %d stored %d times", d, round, n)
			}
		}
	}
}

// addDevices registers wearables sd0… assigned to patient cp0 from before
// t0, straight into the stopped server's store, and returns their secrets.
func addDevices(t *testing.T, dir string, n int, t0 time.Time) []string {
	t.Helper()
	st := openStore(t, dir)
	defer st.Close() // before the server opens it
	svc := &admin.Service{Store: st}
	secrets := make([]string, n)
	ctx := context.Background()
	for i := range n {
		id := fmt.Sprintf("sd%d", i)
		var err error
		if secrets[i], err = svc.AddDevice(ctx, &vigil.Device{ID: id, Kind: vigil.DeviceWearable}); err != nil {
			t.Fatal(err)
		}
		if err := svc.Assign(ctx, id, "cp0", t0.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	return secrets
}

// fleet is n MQTT 3.1.1 devices driven by 64 goroutines, each pipelining
// its share of connections (one goroutine per connection would be what
// the race detector cannot take).
type fleet struct {
	secrets []string
	conns   []net.Conn
}

func newFleet(n int, secrets []string) *fleet {
	return &fleet{secrets: secrets, conns: make([]net.Conn, n)}
}

func (f *fleet) closeAll() {
	for i, c := range f.conns {
		if c != nil {
			c.Close()
			f.conns[i] = nil
		}
	}
}

// connectAndPublish connects every device (retrying refusals and broken
// connections, as devices do, until limit), then publishes one QoS 1
// reading from each — device d's of round r at t0 + 100000+r·n+d ms — and
// waits for every PUBACK.
func (f *fleet) connectAndPublish(addr string, t0 time.Time, round int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	n := len(f.conns)
	var done atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	const workers = 64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []int
			for i := w; i < n; i += workers {
				mine = append(mine, i)
			}
			for len(mine) > 0 && time.Now().Before(deadline) {
				// Connect all of this worker's devices at once, then
				// collect the CONNACKs.
				for _, i := range mine {
					c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
					if err != nil {
						continue
					}
					id := fmt.Sprintf("sd%d", i)
					c.Write(connectPacket(id, id, f.secrets[i]))
					f.conns[i] = c
				}
				var again []int
				for _, i := range mine {
					c := f.conns[i]
					if c == nil {
						again = append(again, i)
						continue
					}
					c.SetDeadline(deadline)
					ack := make([]byte, 4)
					if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
						firstErr.CompareAndSwap(nil, fmt.Errorf("device %d: CONNACK % x, %v", i, ack, err))
						c.Close()
						f.conns[i] = nil
						again = append(again, i)
					}
				}
				// Publish one reading on each connected device, then
				// collect the PUBACKs.
				for _, i := range mine {
					if c := f.conns[i]; c != nil {
						seq := 100000 + round*n + i
						c.Write(publishPacket(fmt.Sprintf("vigil/v1/devices/sd%d/readings", i), uint16(1+i%60000), heartRate(seq, t0)))
					}
				}
				for _, i := range mine {
					c := f.conns[i]
					if c == nil {
						continue
					}
					ack := make([]byte, 4)
					if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x40 || binary.BigEndian.Uint16(ack[2:]) != uint16(1+i%60000) {
						firstErr.CompareAndSwap(nil, fmt.Errorf("device %d: PUBACK % x, %v", i, ack, err))
						c.Close()
						f.conns[i] = nil
						again = append(again, i)
						continue
					}
					done.Add(1)
				}
				if mine = again; len(mine) > 0 {
					time.Sleep(100 * time.Millisecond) // devices back off before trying again
				}
			}
		}()
	}
	wg.Wait()
	if got := int(done.Load()); got < n {
		return fmt.Errorf("%d of %d devices back with a reading acknowledged within %v; first failure: %v", got, n, limit, firstErr.Load())
	}
	return nil
}

// publishPacket is an MQTT 3.1.1 PUBLISH at QoS 1.
func publishPacket(topic string, id uint16, payload string) []byte {
	body := binary.BigEndian.AppendUint16(nil, uint16(len(topic)))
	body = append(body, topic...)
	body = binary.BigEndian.AppendUint16(body, id)
	return mqttPacket(0x32, append(body, payload...))
}
