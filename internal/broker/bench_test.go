package broker

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/vigil-iomt/vigil"
)

// groupCommitIngester stands in for the pipeline's committer: it takes
// every message submitted while the previous "commit" was in flight, waits
// one simulated fsync, then calls their done callbacks in order.
type groupCommitIngester struct {
	fsync time.Duration

	mu      sync.Mutex
	queue   []func()
	wake    chan struct{}
	stop    chan struct{}
	batches int
}

func newGroupCommitIngester(fsync time.Duration) *groupCommitIngester {
	g := &groupCommitIngester{fsync: fsync, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	go g.run()
	return g
}

func (g *groupCommitIngester) run() {
	for {
		select {
		case <-g.wake:
		case <-g.stop:
			return
		}
		g.mu.Lock()
		batch := g.queue
		g.queue = nil
		g.batches++
		g.mu.Unlock()
		time.Sleep(g.fsync)
		for _, f := range batch {
			f()
		}
	}
}

func (g *groupCommitIngester) Submit(ctx context.Context, m vigil.Message, done func(vigil.IngestResult)) {
	g.mu.Lock()
	g.queue = append(g.queue, func() { done(vigil.IngestResult{Readings: []vigil.ReadingOutcome{{ID: "x"}}}) })
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

func (g *groupCommitIngester) Ingest(ctx context.Context, m vigil.Message) vigil.IngestResult {
	ch := make(chan vigil.IngestResult, 1)
	g.Submit(ctx, m, func(r vigil.IngestResult) { ch <- r })
	return <-ch
}

// BenchmarkOneConnectionInFlight measures QoS 1 readings per second over a
// single connection that keeps up to `window` messages unacknowledged,
// with a simulated 300 µs group-commit fsync. A broker that acknowledged
// inside the publish hook would be capped near 1/fsync ≈ 3,300 msg/s.
func BenchmarkOneConnectionInFlight(b *testing.B) {
	for _, window := range []int{1, 64, 1024} {
		b.Run("window="+strconv.Itoa(window), func(b *testing.B) {
			ing := newGroupCommitIngester(300 * time.Microsecond)
			defer close(ing.stop)
			opts := DefaultOptions()
			opts.Addr = "127.0.0.1:0"
			opts.Auth = &testAuth{secrets: map[string]string{dev1: secret1}}
			opts.Ingester = ing
			br, err := New(opts)
			if err != nil {
				b.Fatal(err)
			}
			if err := br.Start(); err != nil {
				b.Fatal(err)
			}
			defer br.Close()

			conn, err := net.Dial("tcp", br.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			connect := packets.NewControlPacket(packets.CONNECT)
			cp := connect.Content.(*packets.Connect)
			cp.ClientID, cp.CleanStart, cp.KeepAlive = "bench", true, 60
			cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = dev1, true, []byte(secret1), true
			if _, err := connect.WriteTo(conn); err != nil {
				b.Fatal(err)
			}
			r := bufio.NewReader(conn)
			if _, err := packets.ReadPacket(r); err != nil {
				b.Fatal(err)
			}

			slots := make(chan struct{}, window)
			acked := make(chan error, 1)
			go func() {
				for range b.N {
					p, err := packets.ReadPacket(r)
					if err != nil {
						acked <- err
						return
					}
					if p.Type == packets.PUBACK {
						<-slots
					}
				}
				acked <- nil
			}()
			payload := []byte(`{"id":"r","time":"2026-01-01T00:00:00Z","values":[{"code":"8867-4","value":72,"unit":"/min"}]}`)
			w := bufio.NewWriter(conn)
			b.ResetTimer()
			for i := range b.N {
				slots <- struct{}{}
				pub := packets.NewControlPacket(packets.PUBLISH)
				p := pub.Content.(*packets.Publish)
				p.QoS, p.PacketID, p.Topic, p.Payload = 1, uint16(i%60000+1), ReadingsTopic(dev1), payload
				if _, err := pub.WriteTo(w); err != nil {
					b.Fatal(err)
				}
				if len(slots) == cap(slots) || i == b.N-1 {
					if err := w.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := w.Flush(); err != nil {
				b.Fatal(err)
			}
			if err := <-acked; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			ing.mu.Lock()
			b.ReportMetric(float64(b.N)/float64(max(ing.batches, 1)), "msg/commit")
			ing.mu.Unlock()
		})
	}
}
