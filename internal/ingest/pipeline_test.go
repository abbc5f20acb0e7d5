package ingest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/mapping"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

var ctx = context.Background()

var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

type env struct {
	store *pebble.Store
	p     *Pipeline
	mu    sync.Mutex
	seen  [][]*vigil.Reading
}

func setup(t testing.TB, mod func(*Options)) *env {
	t.Helper()
	so := pebble.DefaultOptions()
	so.CompactInterval = -1
	st, err := pebble.Open(t.TempDir(), so)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{store: st}
	for _, p := range []string{"p1", "p2"} {
		if err := st.CreatePatient(ctx, &vigil.Patient{ID: p}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"mon", "idle"} {
		if err := st.CreateDevice(ctx, &vigil.Device{ID: d, Kind: vigil.DeviceBedsideMonitor}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.AssignDevice(ctx, "mon", "p1", now.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Now = func() time.Time { return now }
	o.OnStored = []func(context.Context, []*vigil.Reading){func(_ context.Context, rs []*vigil.Reading) {
		e.mu.Lock()
		e.seen = append(e.seen, rs)
		e.mu.Unlock()
	}}
	if mod != nil {
		mod(&o)
	}
	e.p = New(st, mapping.DefaultTable(), o)
	t.Cleanup(func() {
		e.p.Close()
		st.Close()
	})
	return e
}

func (e *env) send(source, device, body string) vigil.IngestResult {
	return e.p.Ingest(ctx, vigil.Message{DeviceID: device, Source: source, Topic: "t", Payload: []byte(body), Received: now})
}

func msg(id string, t time.Time, values string) string {
	return fmt.Sprintf(`{"id":%q,"time":%q,"values":[%s]}`, id, t.Format(time.RFC3339Nano), values)
}

const hr72 = `{"code":"8867-4","value":72,"unit":"/min"}`

func TestAcceptAndDedup(t *testing.T) {
	e := setup(t, nil)
	body := msg("r1", now.Add(-time.Second), hr72+`,{"code":"59408-5","value":97,"unit":"%"}`)
	r := e.send("http", "mon", body)
	if r.Err != nil || len(r.Readings) != 1 || r.Readings[0].Err != nil || r.Readings[0].Duplicate || r.Readings[0].ID != "r1" {
		t.Fatalf("first: %+v", r)
	}
	r = e.send("http", "mon", body)
	if r.Err != nil || !r.Readings[0].Duplicate {
		t.Fatalf("re-sent: %+v", r)
	}
	// An array with a new and a known id.
	r = e.send("mqtt", "mon", "["+msg("r2", now, hr72)+","+body+"]")
	if r.Err != nil || r.Readings[0].Duplicate || !r.Readings[1].Duplicate {
		t.Fatalf("array: %+v", r)
	}
	obs, _, err := e.store.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1"})
	if err != nil || len(obs) != 3 {
		t.Fatalf("stored %d observations (%v), want 3", len(obs), err)
	}
	e.p.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, rs := range e.seen {
		n += len(rs)
	}
	if n != 2 {
		t.Fatalf("OnStored saw %d readings, want 2 (duplicates excluded)", n)
	}
}

func TestRejections(t *testing.T) {
	e := setup(t, func(o *Options) { o.MaxPayload = 2048 })
	ok := msg("ok", now, hr72)
	for _, c := range []struct {
		name, device, body string
		wholeMsg           bool // message-level error
		code, field, why   string
	}{
		{"malformed json", "mon", `{"id":"x",`, true, vigil.EINVALID, "", "malformed"},
		{"not an object", "mon", `42`, true, vigil.EINVALID, "", "malformed"},
		{"empty body", "mon", ``, true, vigil.EINVALID, "", "malformed"},
		{"empty array", "mon", `[]`, true, vigil.EINVALID, "", "empty"},
		{"too large", "mon", `{"id":"` + strings.Repeat("x", 3000) + `"}`, true, vigil.ETOOLARGE, "", "too-large"},
		{"unknown device", "ghost", ok, true, vigil.EINVALID, "device", "unknown-device"},
		{"unassigned device", "idle", ok, false, vigil.EINVALID, "time", "unassigned"},
		{"no id", "mon", `{"time":"` + now.Format(time.RFC3339) + `","values":[` + hr72 + `]}`, false, vigil.EINVALID, "id", "required"},
		{"id wrong type", "mon", `{"id":7,"time":"` + now.Format(time.RFC3339) + `","values":[` + hr72 + `]}`, false, vigil.EINVALID, "id", "wrong-type"},
		{"no time", "mon", `{"id":"a","values":[` + hr72 + `]}`, false, vigil.EINVALID, "time", "required"},
		{"bad time", "mon", `{"id":"a","time":"yesterday","values":[` + hr72 + `]}`, false, vigil.EINVALID, "time", "invalid"},
		{"time without offset", "mon", `{"id":"a","time":"2026-11-24T12:00:00","values":[` + hr72 + `]}`, false, vigil.EINVALID, "time", "invalid"},
		{"future", "mon", msg("a", now.Add(time.Hour), hr72), false, vigil.EINVALID, "time", "future"},
		{"too old", "mon", msg("a", now.Add(-40*24*time.Hour), hr72), false, vigil.EINVALID, "time", "too-old"},
		{"no values", "mon", msg("a", now, ""), false, vigil.EINVALID, "values", "required"},
		{"unknown code", "mon", msg("a", now, `{"code":"0000-0","value":1,"unit":"/min"}`), false, vigil.EINVALID, "values[0].code", "unknown-code"},
		{"unit mismatch", "mon", msg("a", now, `{"code":"8867-4","value":72,"unit":"%"}`), false, vigil.EINVALID, "values[0].unit", "unit-mismatch"},
		{"spo2 120", "mon", msg("a", now, hr72+`,{"code":"59408-5","value":120,"unit":"%"}`), false, vigil.EINVALID, "values[1].value", "implausible"},
		{"hr 900", "mon", msg("a", now, `{"code":"8867-4","value":900,"unit":"/min"}`), false, vigil.EINVALID, "values[0].value", "implausible"},
		{"value missing", "mon", msg("a", now, `{"code":"8867-4","unit":"/min"}`), false, vigil.EINVALID, "values[0].value", "required"},
		{"value a string", "mon", msg("a", now, `{"code":"8867-4","value":"72","unit":"/min"}`), false, vigil.EINVALID, "values[0].value", "wrong-type"},
		{"value too large", "mon", msg("a", now, `{"code":"8867-4","value":1e400,"unit":"/min"}`), false, vigil.EINVALID, "values[0].value", "not-a-number"},
		{"value not an object", "mon", msg("a", now, `72`), false, vigil.EINVALID, "values[0]", "wrong-type"},
		{"values an object", "mon", `{"id":"a","time":"` + now.Format(time.RFC3339) + `","values":` + hr72 + `}`, false, vigil.EINVALID, "values", "wrong-type"},
		{"battery a string", "mon", `{"id":"a","time":"` + now.Format(time.RFC3339) + `","battery":"full","values":[` + hr72 + `]}`, false, vigil.EINVALID, "battery", "wrong-type"},
		{"code a number", "mon", msg("a", now, `{"code":8867,"value":72,"unit":"/min"}`), false, vigil.EINVALID, "values[0].code", "wrong-type"},
		{"trailing garbage", "mon", ok + `x`, true, vigil.EINVALID, "", "malformed"},
		{"code twice", "mon", msg("a", now, hr72+","+hr72), false, vigil.EINVALID, "values[1].code", "duplicate"},
		{"unknown system", "mon", msg("a", now, `{"system":"urn:x","code":"1","value":1,"unit":"/min"}`), false, vigil.EINVALID, "values[0].system", "unknown-system"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.send("http", c.device, c.body)
			err := r.Err
			if !c.wholeMsg {
				if r.Err != nil || len(r.Readings) != 1 {
					t.Fatalf("want one refused reading, got %+v", r)
				}
				err = r.Readings[0].Err
			}
			ve, _ := err.(*vigil.Error)
			if ve == nil || ve.Code != c.code || ve.Field != c.field || ve.Reason != c.why {
				t.Fatalf("got %#v, want code %s field %q reason %s", err, c.code, c.field, c.why)
			}
			if ve.Message == "" {
				t.Fatal("no message")
			}
		})
	}
	// Nothing of it was stored, and a good message still goes through.
	if r := e.send("http", "mon", ok); r.Err != nil || r.Readings[0].Err != nil {
		t.Fatalf("good message after bad ones: %+v", r)
	}
	obs, _, _ := e.store.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1"})
	if len(obs) != 1 {
		t.Fatalf("%d observations stored, want 1", len(obs))
	}
	// In an array, the field names the element.
	r := e.send("http", "mon", "["+msg("b1", now, hr72)+","+msg("b2", now, `{"code":"8867-4","value":900,"unit":"/min"}`)+"]")
	if r.Readings[0].Err != nil || vigil.ErrorReason(r.Readings[1].Err) != "implausible" || r.Readings[1].Err.(*vigil.Error).Field != "[1].values[0].value" || r.Readings[1].ID != "b2" {
		t.Fatalf("array refusal: %+v", r)
	}
}

func TestDeadLettersForMQTT(t *testing.T) {
	e := setup(t, nil)
	e.send("mqtt", "mon", `{"id":`)
	e.send("mqtt", "mon", msg("a", now, `{"code":"59408-5","value":120,"unit":"%"}`))
	e.send("http", "mon", `{"id":`) // HTTP clients are answered: no dead letter
	ds, err := e.store.FindDeadLetters(ctx, vigil.DeadLetterFilter{})
	if err != nil || len(ds) != 2 {
		t.Fatalf("dead letters: %d %v", len(ds), err)
	}
	if ds[0].Reason != "implausible" || ds[0].Field != "values[0].value" || ds[0].DeviceID != "mon" || ds[1].Reason != "malformed" || string(ds[1].Payload) != `{"id":` {
		t.Fatalf("dead letters: %+v %+v", ds[0], ds[1])
	}
}

func TestPatientFromAssignmentAtReadingTime(t *testing.T) {
	e := setup(t, nil)
	move := now.Add(-time.Hour)
	if err := e.store.AssignDevice(ctx, "mon", "p2", move); err != nil {
		t.Fatal(err)
	}
	e.p.InvalidateDevice("mon")
	r := e.send("http", "mon", "["+msg("before", move.Add(-time.Minute), hr72)+","+msg("after", move.Add(time.Minute), hr72)+"]")
	if r.Err != nil || r.Rejected() != 0 {
		t.Fatalf("%+v", r)
	}
	for p, want := range map[string]string{"p1": "before", "p2": "after"} {
		obs, _, _ := e.store.FindObservations(ctx, vigil.ObservationFilter{PatientID: p})
		if len(obs) != 1 {
			t.Fatalf("%s has %d observations", p, len(obs))
		}
		_ = want
	}
}

// Done callbacks come in Submit order even under concurrency and mixed
// good, bad and duplicate messages.
func TestInOrderCompletion(t *testing.T) {
	e := setup(t, nil)
	const n = 2000
	var mu sync.Mutex
	var got []int
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		body := msg(fmt.Sprint("r", i%1500), now.Add(-time.Duration(i)*time.Millisecond), hr72)
		if i%10 == 3 {
			body = "{bad"
		}
		e.p.Submit(ctx, vigil.Message{DeviceID: "mon", Source: "http", Payload: []byte(body), Received: now}, func(vigil.IngestResult) {
			mu.Lock()
			got = append(got, i)
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	for i, v := range got {
		if v != i {
			t.Fatalf("completion %d was message %d", i, v)
		}
	}
}

func TestCloseDrainsAndRefusesAfter(t *testing.T) {
	e := setup(t, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for i := 0; i < 500; i++ {
		wg.Add(1)
		e.p.Submit(ctx, vigil.Message{DeviceID: "mon", Source: "mqtt", Payload: []byte(msg(fmt.Sprint(i), now, hr72)), Received: now}, func(r vigil.IngestResult) {
			if r.Err == nil && r.Rejected() == 0 {
				mu.Lock()
				acked++
				mu.Unlock()
			}
			wg.Done()
		})
	}
	if err := e.p.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	r := e.send("mqtt", "mon", msg("late", now, hr72))
	if vigil.ErrorCode(r.Err) != vigil.EUNAVAILABLE {
		t.Fatalf("after close: %+v", r)
	}
	obs, _, _ := e.store.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Limit: 1000})
	if acked != 500 || len(obs) != 1 { // all at the same time: one sample, 500 ids
		t.Fatalf("acked %d, stored %d", acked, len(obs))
	}
}

// BenchmarkIngest measures the whole path (parse, validate, map, group
// commit with fsync, dedup) on the real store, with up to 1024 messages
// in flight, as one busy MQTT connection pipelines them.
func BenchmarkIngest(b *testing.B) {
	e := setup(b, nil)
	body := func(i int) []byte {
		return []byte(msg(fmt.Sprint("r", i), now.Add(-time.Duration(i)*time.Millisecond), hr72+`,{"code":"59408-5","value":97,"unit":"%"}`))
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 1024)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		wg.Add(1)
		e.p.Submit(ctx, vigil.Message{DeviceID: "mon", Source: "mqtt", Payload: body(i), Received: now}, func(r vigil.IngestResult) {
			if r.Err != nil || r.Rejected() > 0 {
				b.Error(r)
			}
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}

// gatedStore holds every commit until its gate opens.
type gatedStore struct {
	Store
	gate chan struct{}
}

func (g gatedStore) AppendReadings(ctx context.Context, rs []*vigil.Reading) ([]vigil.AppendResult, error) {
	<-g.gate
	return g.Store.AppendReadings(ctx, rs)
}

// Overload: while the disk lags, messages whose sender can be told to
// retry are refused at once (EUNAVAILABLE, reason overloaded) instead of
// queueing without bound; the others wait their turn; nothing queued is
// lost, and ingest takes messages again once the queue drains.
func TestShedsWhenOverloaded(t *testing.T) {
	e := setup(t, nil)
	g := gatedStore{Store: e.store, gate: make(chan struct{})}
	o := DefaultOptions()
	o.Now = func() time.Time { return now }
	o.QueueSize = 8
	o.MaxQueueBytes = 1 << 20
	p := New(g, mapping.DefaultTable(), o)
	defer p.Close()

	var wg sync.WaitGroup
	results := make([]vigil.IngestResult, 7)
	for i := range results {
		wg.Add(1)
		p.Submit(ctx, vigil.Message{DeviceID: "mon", Source: "mllp", Payload: []byte(msg(fmt.Sprint("q", i), now.Add(-time.Duration(i)*time.Second), hr72)), Received: now},
			func(r vigil.IngestResult) { results[i] = r; wg.Done() })
		if i == 0 {
			waitTaken(t, p)
		}
	}
	// One message is in the blocked commit, six wait: the queue (8) is
	// three-quarters full.
	shed := ingestWithin(t, p, g.gate, vigil.Message{DeviceID: "mon", Source: "http", Shed: true, Payload: []byte(msg("s", now, hr72)), Received: now})
	if vigil.ErrorCode(shed.Err) != vigil.EUNAVAILABLE || vigil.ErrorReason(shed.Err) != "overloaded" {
		t.Fatalf("overloaded, sheddable: %v", shed.Err)
	}
	close(g.gate)
	wg.Wait()
	for i, r := range results {
		if r.Err != nil || r.Rejected() != 0 {
			t.Fatalf("queued message %d: %+v", i, r)
		}
	}
	if r := p.Ingest(ctx, vigil.Message{DeviceID: "mon", Source: "http", Shed: true, Payload: []byte(msg("s", now, hr72)), Received: now}); r.Err != nil || r.Rejected() != 0 {
		t.Fatalf("after the queue drained: %+v", r)
	}

	// The byte budget: one large message waiting is enough.
	g2 := gatedStore{Store: e.store, gate: make(chan struct{})}
	o.QueueSize, o.MaxQueueBytes = 1000, 200
	p2 := New(g2, mapping.DefaultTable(), o)
	defer p2.Close()
	var big []string
	for i := range 5 {
		big = append(big, msg(fmt.Sprint("b", i), now.Add(-time.Duration(i)*time.Minute), hr72))
	}
	wg.Add(2)
	for i := range 2 { // the first goes to the blocked commit, the second waits
		p2.Submit(ctx, vigil.Message{DeviceID: "mon", Source: "mllp", Payload: []byte("[" + strings.Join(big, ",") + "]"), Received: now}, func(vigil.IngestResult) { wg.Done() })
		if i == 0 {
			waitTaken(t, p2)
		}
	}
	if r := ingestWithin(t, p2, g2.gate, vigil.Message{DeviceID: "mon", Source: "http", Shed: true, Payload: []byte(msg("s2", now, hr72)), Received: now}); vigil.ErrorReason(r.Err) != "overloaded" {
		t.Fatalf("over the byte budget: %v", r.Err)
	}
	close(g2.gate)
	wg.Wait()

	// A commit that hangs: one message waiting behind it longer than
	// MaxQueueDelay is enough.
	g3 := gatedStore{Store: e.store, gate: make(chan struct{})}
	o.QueueSize, o.MaxQueueBytes, o.MaxQueueDelay = 1000, 1<<20, 100*time.Millisecond
	p3 := New(g3, mapping.DefaultTable(), o)
	defer p3.Close()
	wg.Add(2)
	for i := range 2 {
		p3.Submit(ctx, vigil.Message{DeviceID: "mon", Source: "mllp", Payload: []byte(msg(fmt.Sprint("h", i), now.Add(-time.Duration(i)*time.Hour), hr72)), Received: now}, func(vigil.IngestResult) { wg.Done() })
		if i == 0 {
			waitTaken(t, p3)
		}
	}
	time.Sleep(150 * time.Millisecond)
	if r := ingestWithin(t, p3, g3.gate, vigil.Message{DeviceID: "mon", Source: "http", Shed: true, Payload: []byte(msg("s3", now, hr72)), Received: now}); vigil.ErrorReason(r.Err) != "overloaded" {
		t.Fatalf("behind a hung commit: %v", r.Err)
	}
	close(g3.gate)
	wg.Wait()
	if r := p3.Ingest(ctx, vigil.Message{DeviceID: "mon", Source: "http", Shed: true, Payload: []byte(msg("s3", now, hr72)), Received: now}); r.Err != nil {
		t.Fatalf("once the commit finished: %v", r.Err)
	}
}

// waitTaken waits until the commit loop has taken everything queued.
func waitTaken(t *testing.T, p *Pipeline) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(p.queue) > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the commit loop never took the first message")
		}
	}
	time.Sleep(20 * time.Millisecond) // into the gated AppendReadings
}

// ingestWithin is Ingest that fails the test (opening the gate) if the
// answer waits: a message that should be shed at once.
func ingestWithin(t *testing.T, p *Pipeline, gate chan struct{}, m vigil.Message) vigil.IngestResult {
	t.Helper()
	ch := make(chan vigil.IngestResult, 1)
	p.Submit(ctx, m, func(r vigil.IngestResult) { ch <- r })
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		close(gate)
		t.Fatal("a sheddable message waited behind the blocked commit instead of being refused")
		return vigil.IngestResult{}
	}
}

// A device whose clock runs ahead (within the 5 minutes accepted) is
// stored with both its time and the receive time, and counted.
func TestDeviceClockAhead(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := setup(t, func(o *Options) { o.Registerer = reg })
	for i, ahead := range []time.Duration{time.Minute, time.Second, -time.Minute} {
		if r := e.send("mqtt", "mon", msg(fmt.Sprint("c", i), now.Add(ahead), hr72)); r.Err != nil || r.Rejected() != 0 {
			t.Fatalf("reading %s ahead: %+v", ahead, r)
		}
	}
	if got := testutil.ToFloat64(e.p.m.clockAhead.WithLabelValues("mqtt")); got != 1 {
		t.Fatalf("device clock ahead counted %v times, want 1 (only the reading a minute ahead)", got)
	}
}

// slowStore takes a random few milliseconds over each commit and counts
// how many are under way at once.
type slowStore struct {
	Store
	mu        sync.Mutex
	rng       *rand.Rand
	now, most int
}

func (s *slowStore) AppendReadings(ctx context.Context, rs []*vigil.Reading) ([]vigil.AppendResult, error) {
	s.mu.Lock()
	s.now++
	s.most = max(s.most, s.now)
	d := time.Duration(s.rng.IntN(4000)) * time.Microsecond
	s.mu.Unlock()
	time.Sleep(d)
	defer func() { s.mu.Lock(); s.now--; s.mu.Unlock() }()
	return s.Store.AppendReadings(ctx, rs)
}

// With several commits under way (a PostgreSQL store), answers and the
// OnStored hooks still come in Submit order, and every reading is stored.
func TestConcurrentCommitsAnswerInOrder(t *testing.T) {
	e := setup(t, nil)
	slow := &slowStore{Store: e.store, rng: rand.New(rand.NewPCG(5, 6))}
	var mu sync.Mutex
	var hooked []string
	o := DefaultOptions()
	o.Now = func() time.Time { return now }
	o.Commits = 4
	o.OnStored = []func(context.Context, []*vigil.Reading){func(_ context.Context, rs []*vigil.Reading) {
		mu.Lock()
		for _, r := range rs {
			hooked = append(hooked, r.ID)
		}
		mu.Unlock()
	}}
	p := New(slow, mapping.DefaultTable(), o)
	const n = 300
	var answered []int
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		p.Submit(ctx, vigil.Message{DeviceID: "mon", Source: "mqtt", Payload: []byte(msg(fmt.Sprint("c", i), now.Add(-time.Duration(n-i)*time.Second), hr72)), Received: now},
			func(r vigil.IngestResult) {
				if r.Err != nil || r.Rejected() > 0 {
					t.Errorf("message %d: %+v", i, r)
				}
				mu.Lock()
				answered = append(answered, i)
				mu.Unlock()
				wg.Done()
			})
		if i%7 == 0 {
			time.Sleep(time.Millisecond) // several group commits
		}
	}
	wg.Wait()
	p.Close()
	if slow.most < 2 {
		t.Fatalf("at most %d commit under way: Commits is not used", slow.most)
	}
	for i, a := range answered {
		if a != i {
			t.Fatalf("answer %d was for message %d: not in Submit order", i, a)
		}
	}
	if len(hooked) != n {
		t.Fatalf("%d readings reached OnStored, want %d", len(hooked), n)
	}
	for i, id := range hooked {
		if id != fmt.Sprint("c", i) {
			t.Fatalf("OnStored saw %s at %d: not in Submit order", id, i)
		}
	}
	obs, _, err := e.store.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Limit: 1000})
	if err != nil || len(obs) != n {
		t.Fatalf("%d stored (%v), want %d", len(obs), err, n)
	}
}

// BenchmarkPrepareBatch decodes, validates and normalizes one message of
// 5,000 readings (no store): the per-reading cost of a batch upload.
func BenchmarkPrepareBatch(b *testing.B) {
	e := setup(b, nil)
	var buf strings.Builder
	buf.WriteByte('[')
	for i := range 5000 {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(msg(fmt.Sprint("b", i), now.Add(-time.Duration(5000-i)*time.Second), hr72))
	}
	buf.WriteByte(']')
	m := vigil.Message{DeviceID: "mon", Source: "http", Payload: []byte(buf.String()), Received: now}
	b.ReportAllocs()
	for b.Loop() {
		j := &job{m: m}
		e.p.prepare(ctx, j)
		if j.res.Err != nil || len(j.readings) != 5000 {
			b.Fatal(j.res.Err, len(j.readings))
		}
	}
}

// Every reading is counted once by outcome, and the latency histograms
// hold one observation per stored reading, exposed as a client_golang
// histogram observed reading by reading would be.
func TestMetricsCountEveryReading(t *testing.T) {
	reg := prometheus.NewRegistry()
	const took = 30 * time.Millisecond
	e := setup(t, func(o *Options) {
		o.Registerer = reg
		o.Now = func() time.Time { return now.Add(took) }
	})
	bad := `{"id":"r3","time":"` + now.Format(time.RFC3339) + `","values":[{"code":"8867-4","value":72,"unit":"kg"}]}`
	if r := e.send("http", "mon", "["+msg("r1", now, hr72)+","+msg("r2", now, hr72)+","+bad+"]"); r.Err != nil || r.Rejected() != 1 {
		t.Fatalf("batch: %+v", r)
	}
	if r := e.send("http", "mon", msg("r1", now, hr72)); r.Err != nil || !r.Readings[0].Duplicate {
		t.Fatalf("re-sent: %+v", r)
	}
	e.p.Close()
	for outcome, want := range map[string]float64{"accepted": 2, "duplicate": 1, "rejected": 1} {
		if got := testutil.ToFloat64(e.p.m.readings.WithLabelValues("http", outcome)); got != want {
			t.Errorf("%s readings counted %v, want %v", outcome, got, want)
		}
	}
	for _, h := range []*countHistogram{e.p.m.durable, e.p.m.evaluated} {
		got, err := testutil.CollectAndFormat(h, expfmt.TypeTextPlain, h.name)
		if err != nil {
			t.Fatal(err)
		}
		// The same observations through prometheus.NewHistogram.
		ref := prometheus.NewHistogram(prometheus.HistogramOpts{Name: h.name, Help: h.help, Buckets: h.upper})
		ref.Observe(took.Seconds())
		ref.Observe(took.Seconds())
		want, err := testutil.CollectAndFormat(ref, expfmt.TypeTextPlain, h.name)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || string(got) != string(want) {
			t.Errorf("%s exposed\n%s\nwant (client_golang's histogram, observed reading by reading)\n%s", h.name, got, want)
		}
	}
}

// countHistogram puts each observation in the bucket client_golang's
// histogram would (bounds inclusive), n at a time.
func TestCountHistogramMatchesClientGolang(t *testing.T) {
	buckets := []float64{.001, .01, .1, 1}
	h := newCountHistogram("h_seconds", "h", buckets)
	ref := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h_seconds", Help: "h", Buckets: buckets})
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		v := []float64{0, .001, .01, .1, 1, 2, rng.Float64() * 1.5, rng.Float64() / 100}[rng.IntN(8)]
		n := rng.IntN(4)
		h.ObserveN(v, n)
		for range n {
			ref.Observe(v)
		}
	}
	got, _ := testutil.CollectAndFormat(h, expfmt.TypeTextPlain, "h_seconds")
	want, _ := testutil.CollectAndFormat(ref, expfmt.TypeTextPlain, "h_seconds")
	if len(got) == 0 || string(got) != string(want) {
		t.Fatalf("exposed\n%s\nwant\n%s", got, want)
	}
}

// Preparing a message of one reading of one value — most MQTT messages —
// takes few allocations: the decode buffers are pooled, the outcome,
// reading and index live in the job, the reading and its value share one.
func TestPrepareOneReadingAllocations(t *testing.T) {
	e := setup(t, nil)
	payload := []byte(msg("r1", now.Add(-time.Second), hr72))
	e.p.prepare(ctx, &job{m: vigil.Message{DeviceID: "mon", Source: "mqtt", Payload: payload, Received: now}}) // assignments cached
	allocs := testing.AllocsPerRun(200, func() {
		j := &job{m: vigil.Message{DeviceID: "mon", Source: "mqtt", Payload: payload, Received: now}}
		e.p.prepare(ctx, j)
		if j.res.Err != nil || len(j.readings) != 1 {
			t.Fatalf("prepared: %+v", j.res)
		}
	})
	if !raceEnabled && allocs >= 4 {
		t.Errorf("%v allocations to prepare one reading, want 3 (the job, the reading's id, the reading with its value)", allocs)
	}
}
