package jsqueue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/testenv"
)

// memStore stores readings once by device and id, as the real stores do.
type memStore struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (m *memStore) AppendReadings(_ context.Context, rs []*vigil.Reading) ([]vigil.AppendResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	res := make([]vigil.AppendResult, len(rs))
	for i, r := range rs {
		k := r.DeviceID + "/" + r.ID
		res[i].Duplicate = m.seen[k]
		m.seen[k] = true
	}
	return res, nil
}

// processed records, per patient, the sequence numbers rules saw, in order.
type processed struct {
	mu    sync.Mutex
	order map[string][]int
	by    map[string]map[string]bool // patient → workers that processed it
}

func (p *processed) observer(worker string) func(context.Context, []*vigil.Reading) {
	return func(_ context.Context, rs []*vigil.Reading) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, r := range rs {
			var seq int
			fmt.Sscan(r.ID, &seq)
			p.order[r.PatientID] = append(p.order[r.PatientID], seq)
			if p.by[r.PatientID] == nil {
				p.by[r.PatientID] = map[string]bool{}
			}
			p.by[r.PatientID][worker] = true
		}
	}
}

func (p *processed) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, o := range p.order {
		n += len(o)
	}
	return n
}

// TestPartitionsSpreadAndMove runs two workers on one stream (this
// machine's NATS): the partitions are split between them, every reading is
// processed exactly once and each patient's in the order it was
// published; when one worker stops, the other takes its partitions at
// once; when one dies (its connection gone, leases left behind), the
// other takes them once the leases expire, and order still holds.
func TestPartitionsSpreadAndMove(t *testing.T) {
	if testing.Short() {
		t.Skip("needs NATS and lease timeouts")
	}
	url, prefix := testenv.NATSPrefix(t)
	ctx := context.Background()
	open := func() *Queue {
		q, err := Open(ctx, Options{URL: url, Prefix: prefix, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	pub := open()
	defer pub.Close()
	st := &memStore{seen: map[string]bool{}}
	pr := &processed{order: map[string][]int{}, by: map[string]map[string]bool{}}
	const patients = 40
	seq := 0
	publish := func(rounds int) {
		t.Helper()
		for range rounds {
			var rs []*vigil.Reading
			for p := range patients {
				rs = append(rs, &vigil.Reading{DeviceID: fmt.Sprint("d", p), ID: fmt.Sprint(seq), PatientID: fmt.Sprint("p", p),
					Time: time.Unix(int64(seq), 0), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 70, Unit: "/min"}}})
				seq++
			}
			if _, err := pub.AppendReadings(ctx, rs); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitAll := func(limit time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(limit); pr.count() < seq; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d readings processed after %v", pr.count(), seq, limit)
			}
		}
	}
	start := func(name string) (*Queue, *worker, context.CancelFunc, chan struct{}) {
		q := open()
		w, err := q.newWorker(ctx, st, pr.observer(name))
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); w.run(wctx) }()
		return q, w, cancel, done
	}
	qa, _, stopA, doneA := start("a")
	defer qa.Close()
	qb, _, stopB, doneB := start("b")
	defer qb.Close()
	publish(25)
	// Both workers own partitions once they have balanced (within a few
	// refreshes).
	for deadline := time.Now().Add(3*LeaseRefresh + 5*time.Second); ; time.Sleep(100 * time.Millisecond) {
		a, b := ownedCount(qa), ownedCount(qb)
		if a == 8 && b == 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partitions not spread: %v and %v", a, b)
		}
	}
	publish(25)
	waitAll(30 * time.Second)

	// A stops: B has all sixteen at its next refresh and goes on.
	stopA()
	<-doneA
	publish(25)
	waitAll(2*LeaseRefresh + 10*time.Second)
	if n := ownedCount(qb); n != 16 {
		t.Fatalf("after A stopped B owns %v partitions", n)
	}

	// A second worker C joins, then dies: its connection closes with its
	// leases held. B takes them back when they expire.
	qc, _, stopC, doneC := start("c")
	for deadline := time.Now().Add(3*LeaseRefresh + 5*time.Second); ownedCount(qc) != 8; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("C never got its share: %v", ownedCount(qc))
		}
	}
	publish(10)
	waitAll(30 * time.Second)
	qc.Close() // dies
	stopC()
	<-doneC
	publish(25)
	waitAll(LeaseTTL + 2*LeaseRefresh + 15*time.Second)
	stopB()
	<-doneB

	if n := pr.count(); n != seq {
		t.Fatalf("%d processed, %d published", n, seq)
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	spread := 0
	for p, o := range pr.order {
		for i := 1; i < len(o); i++ {
			if o[i] <= o[i-1] {
				t.Fatalf("patient %s: reading %d processed after %d (out of order, or twice)", p, o[i], o[i-1])
			}
		}
		if len(pr.by[p]) > 1 {
			spread++
		}
	}
	if spread == 0 {
		t.Fatal("no patient ever moved between workers: the test proved nothing")
	}
	t.Logf("%d readings of %d patients, each in order; %d patients moved between workers", seq, patients, spread)
}

func ownedCount(q *Queue) int {
	return int(readGauge(q.owned))
}

func readGauge(g interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	g.Write(&m)
	return m.GetGauge().GetValue()
}

// TestOpenWaitsOnlyForAClusterGettingReady: a stream JetStream refuses
// (three replicas on this machine's single server) fails Open at once
// with JetStream's reason; what a cluster still electing its leaders
// answers is waited out.
func TestOpenWaitsOnlyForAClusterGettingReady(t *testing.T) {
	url, prefix := testenv.NATSPrefix(t)
	start := time.Now()
	_, err := Open(context.Background(), Options{URL: url, Prefix: prefix, Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "replicas") || time.Since(start) > 10*time.Second {
		t.Fatalf("Open with 3 replicas on one server: %v after %s, want JetStream's refusal at once", err, time.Since(start))
	}
	for _, c := range []struct {
		err   error
		ready bool
	}{
		{context.DeadlineExceeded, false},
		{fmt.Errorf("stream: %w", nats.ErrTimeout), false},
		{nats.ErrNoResponders, false},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, false},
		{&jetstream.APIError{Code: 500, ErrorCode: 10005, Description: "no suitable peers for placement"}, false},
		{jetstream.ErrJetStreamNotEnabled, false},
		{&jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamNameInUse, Description: "stream name already in use with a different configuration"}, true},
	} {
		if notReady(c.err) == c.ready {
			t.Errorf("%v: notReady %v", c.err, !c.ready)
		}
	}
}
