package alerting

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/live"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// clock is an injected clock the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

type harness struct {
	t     *testing.T
	clock *clock
	store vigil.AlertStore
	hub   *live.Hub
	sub   *live.Subscription
	reg   *prometheus.Registry
	e     *Engine
}

// newHarness starts an engine on store with the given thresholds (nil:
// the defaults) and a hub subscription that records alert events.
func newHarness(t *testing.T, store vigil.AlertStore, ths []vigil.Threshold) *harness {
	t.Helper()
	h := &harness{t: t, clock: &clock{t: t0}, store: store, hub: &live.Hub{}, reg: prometheus.NewRegistry()}
	h.sub = h.hub.Subscribe(1000, nil)
	t.Cleanup(h.sub.Close)
	opts := DefaultOptions()
	opts.Now = h.clock.Now
	opts.Registerer = h.reg
	if ths != nil {
		opts.Thresholds = ths
	}
	e, err := New(context.Background(), store, h.hub, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.e = e
	return h
}

// reading returns a reading of patient with one measurement at t0+at.
func reading(patient, id string, at time.Duration, code string, v float64) *vigil.Reading {
	return &vigil.Reading{
		DeviceID:  "dev-" + patient,
		ID:        id,
		PatientID: patient,
		Time:      t0.Add(at),
		Received:  t0.Add(at),
		Values:    []vigil.Measurement{{Code: code, Value: v, Unit: "%"}},
	}
}

// feed observes rs one call each, with the clock one second after the
// reading's device time.
func (h *harness) feed(rs ...*vigil.Reading) {
	h.t.Helper()
	for _, r := range rs {
		h.clock.Set(r.Time.Add(time.Second))
		h.e.Observe(context.Background(), []*vigil.Reading{r})
	}
}

// events drains the alert events published so far.
func (h *harness) events() []*vigil.Alert {
	var out []*vigil.Alert
	for {
		select {
		case ev := <-h.sub.C:
			if ev.Type == live.TypeAlert {
				out = append(out, ev.Data.(*vigil.Alert))
			}
		default:
			return out
		}
	}
}

// alerts returns every stored alert of patient, oldest first.
func (h *harness) alerts(patient string) []*vigil.Alert {
	h.t.Helper()
	as, err := h.e.Alerts(context.Background(), vigil.AlertFilter{PatientID: patient})
	if err != nil {
		h.t.Fatalf("Alerts: %v", err)
	}
	slices.Reverse(as)
	return as
}

func states(as []*vigil.Alert) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.RuleID+":"+a.State)
	}
	return out
}

// violating returns a value that breaks t by a clear margin.
func violating(t vigil.Threshold) float64 {
	if t.Below != nil {
		return *t.Below - 1
	}
	return *t.Above + 1
}

func TestFiresOnlyAfterDuration(t *testing.T) {
	for _, th := range DefaultThresholds() {
		t.Run(th.ID, func(t *testing.T) {
			h := newHarness(t, newMemStore(), nil)
			v := violating(th)
			// Readings every For/4 (or just one when For is 0): nothing
			// fires until the span reaches For.
			step := th.For / 4
			n := 4
			if th.For == 0 {
				n = 0
			}
			for i := 0; i < n; i++ {
				h.feed(reading("p1", fmt.Sprint("r", i), time.Duration(i)*step, th.Code, v))
				if got := h.alerts("p1"); len(got) != 0 {
					t.Fatalf("after %v of violation: alerts %v, want none", time.Duration(i)*step, states(got))
				}
			}
			h.feed(reading("p1", "last", th.For, th.Code, v))
			got := h.alerts("p1")
			if want := []string{th.ID + ":firing"}; !slices.Equal(states(got), want) {
				t.Fatalf("after %v: alerts %v, want %v", th.For, states(got), want)
			}
			a := got[0]
			if !a.Since.Equal(t0) || a.Value != v || a.ReadingID != "last" || a.Priority != th.Priority || a.Code != th.Code {
				t.Errorf("alert = %+v; want since %v, value %v, reading last, priority %s", a, t0, v, th.Priority)
			}
			if ev := h.events(); len(ev) != 1 || ev[0].ID != a.ID || ev[0].State != vigil.AlertFiring {
				t.Errorf("hub events = %v, want the firing alert once", states(ev))
			}
			if got := metricValue(t, h.e.raised.WithLabelValues(th.ID, th.Priority)); got != 1 {
				t.Errorf("vigil_alerts_raised_total = %v, want 1", got)
			}
			if got := metricValue(t, h.e.openG); got != 1 {
				t.Errorf("vigil_alerts_open = %v, want 1", got)
			}
		})
	}
}

// spo2 returns a SpO2 reading of p1 at t0+at seconds.
func spo2(id string, atSec int, v float64) *vigil.Reading {
	return reading("p1", id, time.Duration(atSec)*time.Second, vigil.LOINCSpO2, v)
}

func TestScenarios(t *testing.T) {
	spo2Only := []vigil.Threshold{DefaultThresholds()[0]} // spo2-low, < 92 for 60 s
	tests := []struct {
		name  string
		feed  []*vigil.Reading
		batch bool // observe all readings in one call (clock after the last)
		want  []string
	}{
		{
			name: "reset by a normal value",
			feed: []*vigil.Reading{spo2("a", 0, 88), spo2("b", 30, 97), spo2("c", 40, 88), spo2("d", 90, 88)},
			want: nil, // 40 → 90 is only 50 s
		},
		{
			name: "fires after the reset once the new run spans For",
			feed: []*vigil.Reading{spo2("a", 0, 88), spo2("b", 30, 97), spo2("c", 40, 88), spo2("d", 100, 88)},
			want: []string{"spo2-low:firing"},
		},
		{
			name: "no duplicate while the condition continues",
			feed: []*vigil.Reading{spo2("a", 0, 88), spo2("b", 60, 88), spo2("c", 120, 85), spo2("d", 180, 80)},
			want: []string{"spo2-low:firing"},
		},
		{
			name: "the same reading delivered twice raises once",
			feed: []*vigil.Reading{spo2("a", 0, 88), spo2("b", 60, 88), spo2("b", 60, 88), spo2("c", 70, 97), spo2("b", 60, 88), spo2("a", 0, 88)},
			want: []string{"spo2-low:resolved"},
		},
		{
			name: "resolves when back in range, raises again on a new run",
			feed: []*vigil.Reading{spo2("a", 0, 88), spo2("b", 60, 88), spo2("c", 70, 97), spo2("d", 80, 88), spo2("e", 140, 88)},
			want: []string{"spo2-low:resolved", "spo2-low:firing"},
		},
		{
			name:  "out-of-order batch is taken in device-time order",
			feed:  []*vigil.Reading{spo2("c", 60, 88), spo2("a", 0, 88), spo2("b", 30, 88)},
			batch: true,
			want:  []string{"spo2-low:firing"},
		},
		{
			name: "a reading older than the newest applied is ignored",
			feed: []*vigil.Reading{spo2("a", 0, 88), spo2("c", 60, 97), spo2("b", 59, 88), spo2("d", 61, 88), spo2("e", 100, 88)},
			want: nil, // the run restarts at 61 s; 61 → 100 is 39 s
		},
		{
			name: "a value exactly at the bound is in range",
			feed: []*vigil.Reading{spo2("a", 0, 92), spo2("b", 60, 92)},
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, newMemStore(), spo2Only)
			if tt.batch {
				h.clock.Set(t0.Add(2 * time.Minute))
				h.e.Observe(context.Background(), tt.feed)
			} else {
				h.feed(tt.feed...)
			}
			if got := states(h.alerts("p1")); !slices.Equal(got, tt.want) {
				t.Errorf("alerts = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLateReadingDoesNotFire(t *testing.T) {
	th := DefaultThresholds()
	h := newHarness(t, newMemStore(), th)
	// A home thermometer uploads a fever reading an hour late: nothing fires.
	h.clock.Set(t0.Add(time.Hour))
	h.e.Observe(context.Background(), []*vigil.Reading{reading("p1", "late", 0, vigil.LOINCBodyTemp, 39.8)})
	if got := h.alerts("p1"); len(got) != 0 {
		t.Fatalf("late fever raised %v, want nothing", states(got))
	}
	// A late SpO2 run spanning 60 s stays pending; the first fresh
	// violating reading that continues it fires, with Since in the late data.
	late := []*vigil.Reading{spo2("a", 0, 88), spo2("b", 60, 88), spo2("c", 120, 88)}
	h.e.Observe(context.Background(), late)
	if got := h.alerts("p1"); len(got) != 0 {
		t.Fatalf("late SpO2 run raised %v, want nothing", states(got))
	}
	h.e.Observe(context.Background(), []*vigil.Reading{spo2("fresh", 3599, 88)})
	got := h.alerts("p1")
	if want := []string{"spo2-low:firing"}; !slices.Equal(states(got), want) {
		t.Fatalf("after a fresh reading: alerts %v, want %v", states(got), want)
	}
	if !got[0].Since.Equal(t0) {
		t.Errorf("Since = %v, want %v", got[0].Since, t0)
	}
	// A fresh in-range value resolves it.
	h.e.Observe(context.Background(), []*vigil.Reading{spo2("ok", 3600, 97)})
	if got, want := states(h.alerts("p1")), []string{"spo2-low:resolved"}; !slices.Equal(got, want) {
		t.Errorf("after in-range: alerts %v, want %v", got, want)
	}
}

func TestStaleReadingResolves(t *testing.T) {
	h := newHarness(t, newMemStore(), nil)
	h.feed(reading("p1", "fever", 0, vigil.LOINCBodyTemp, 39.5))
	// The next value, uploaded two hours late, is normal: the alert resolves.
	h.clock.Set(t0.Add(3 * time.Hour))
	h.e.Observe(context.Background(), []*vigil.Reading{reading("p1", "normal", time.Hour, vigil.LOINCBodyTemp, 37.0)})
	if got, want := states(h.alerts("p1")), []string{"temp-high:resolved"}; !slices.Equal(got, want) {
		t.Errorf("alerts %v, want %v", got, want)
	}
}

func TestPatientsAndRulesAreIndependent(t *testing.T) {
	h := newHarness(t, newMemStore(), nil)
	h.clock.Set(t0.Add(time.Minute))
	h.e.Observe(context.Background(), []*vigil.Reading{
		reading("p1", "t1", 0, vigil.LOINCBodyTemp, 39.5),
		reading("p2", "t1", 0, vigil.LOINCBodyTemp, 37.0),
		{DeviceID: "bp", ID: "1", PatientID: "p2", Time: t0, Values: []vigil.Measurement{
			{Code: vigil.LOINCSystolic, Value: 82, Unit: "mm[Hg]"}, {Code: vigil.LOINCDiastolic, Value: 50, Unit: "mm[Hg]"}}},
		{DeviceID: "unassigned", ID: "1", Time: t0, Values: []vigil.Measurement{{Code: vigil.LOINCBodyTemp, Value: 41}}},
	})
	if got, want := states(h.alerts("p1")), []string{"temp-high:firing"}; !slices.Equal(got, want) {
		t.Errorf("p1 alerts %v, want %v", got, want)
	}
	if got, want := states(h.alerts("p2")), []string{"sbp-low:firing"}; !slices.Equal(got, want) {
		t.Errorf("p2 alerts %v, want %v", got, want)
	}
	if got := len(h.alerts("")); got != 2 {
		t.Errorf("%d alerts in all, want 2 (an unassigned reading raises nothing)", got)
	}
}

func TestAcknowledgeThenResolve(t *testing.T) {
	h := newHarness(t, newMemStore(), nil)
	ctx := context.Background()
	h.feed(reading("p1", "fever", 0, vigil.LOINCBodyTemp, 39.5))
	fired := h.alerts("p1")[0]

	if _, err := h.e.Acknowledge(ctx, "nope", "nurse1", ""); vigil.ErrorCode(err) != vigil.ENOTFOUND {
		t.Errorf("ack unknown: err %v, want %s", err, vigil.ENOTFOUND)
	}
	if _, err := h.e.Acknowledge(ctx, fired.ID, "", ""); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Errorf("ack without user: err %v, want %s", err, vigil.EINVALID)
	}
	h.clock.Set(t0.Add(2 * time.Minute))
	acked, err := h.e.Acknowledge(ctx, fired.ID, "nurse1", "cooling, paracetamol given")
	if err != nil {
		t.Fatalf("Acknowledge: %v", err)
	}
	if acked.State != vigil.AlertAcknowledged || !acked.Updated.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("acknowledged alert = %+v", acked)
	}
	again, err := h.e.Acknowledge(ctx, fired.ID, "nurse2", "")
	if err != nil || len(again.History) != 2 {
		t.Errorf("second ack: %v, history %v; want no change", err, again.History)
	}
	// Still violating: no new alert while acknowledged.
	h.feed(reading("p1", "fever2", 5*time.Minute, vigil.LOINCBodyTemp, 39.9))
	h.feed(reading("p1", "normal", 10*time.Minute, vigil.LOINCBodyTemp, 37.2))

	got := h.alerts("p1")
	if len(got) != 1 {
		t.Fatalf("alerts %v, want one", states(got))
	}
	want := []vigil.AlertEvent{
		{Time: t0.Add(time.Second), State: vigil.AlertFiring},
		{Time: t0.Add(2 * time.Minute), State: vigil.AlertAcknowledged, By: "nurse1", Note: "cooling, paracetamol given"},
		{Time: t0.Add(10*time.Minute + time.Second), State: vigil.AlertResolved},
	}
	if !slices.Equal(got[0].History, want) {
		t.Errorf("history = %+v\nwant %+v", got[0].History, want)
	}
	if ev := states(h.events()); !slices.Equal(ev, []string{"temp-high:firing", "temp-high:acknowledged", "temp-high:resolved"}) {
		t.Errorf("hub events %v", ev)
	}
	if _, err := h.e.Acknowledge(ctx, fired.ID, "nurse1", ""); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Errorf("ack resolved: err %v, want %s", err, vigil.EINVALID)
	}
	if got := metricValue(t, h.e.openG); got != 0 {
		t.Errorf("vigil_alerts_open = %v, want 0", got)
	}
}

func TestRestoreAfterRestart(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	h1 := newHarness(t, store, nil)
	h1.feed(reading("p1", "fever", 0, vigil.LOINCBodyTemp, 39.5))
	h1.feed(reading("p2", "fever", 0, vigil.LOINCBodyTemp, 39.5))
	p2 := h1.alerts("p2")[0]
	if _, err := h1.e.Acknowledge(ctx, p2.ID, "nurse1", ""); err != nil {
		t.Fatal(err)
	}

	// Restart: the open alerts are loaded, not raised again, and resolve.
	h2 := newHarness(t, store, nil)
	if got := metricValue(t, h2.e.openG); got != 2 {
		t.Errorf("after restart vigil_alerts_open = %v, want 2", got)
	}
	h2.feed(reading("p1", "fever2", time.Minute, vigil.LOINCBodyTemp, 40.0))
	if got, want := states(h2.alerts("p1")), []string{"temp-high:firing"}; !slices.Equal(got, want) {
		t.Errorf("p1 after restart and another fever: %v, want %v", got, want)
	}
	h2.feed(reading("p2", "normal", time.Minute, vigil.LOINCBodyTemp, 37.0))
	if got, want := states(h2.alerts("p2")), []string{"temp-high:resolved"}; !slices.Equal(got, want) {
		t.Errorf("p2 after restart and a normal value: %v, want %v", got, want)
	}
	// New ids stay after the old ones even if the clock went back.
	h2.clock.Set(t0.Add(-time.Hour))
	h2.e.Observe(ctx, []*vigil.Reading{reading("p3", "x", -time.Hour, vigil.LOINCBodyTemp, 39.5)})
	p3 := h2.alerts("p3")
	if len(p3) != 1 || p3[0].ID <= p2.ID {
		t.Errorf("alert after restart with an earlier clock: %v, want an id after %s", p3, p2.ID)
	}
}

func TestRestorePendingState(t *testing.T) {
	store := restoringStore{newMemStore()}
	store.patients = []*vigil.Patient{{ID: "p1"}, {ID: "p2"}}
	obs := func(atSec int, v float64) *vigil.Observation {
		return &vigil.Observation{PatientID: "p1", Code: vigil.LOINCSpO2, Value: v, Time: t0.Add(time.Duration(atSec) * time.Second)}
	}
	store.obs = map[string]map[string][]*vigil.Observation{
		// Newest first, as the store returns them: 88 % since 20 s (after a
		// normal value at 10 s).
		"p1": {vigil.LOINCSpO2: {obs(50, 88), obs(40, 87), obs(30, 88), obs(20, 89), obs(10, 96)}},
		"p2": {vigil.LOINCBPPanel: {{PatientID: "p2", Code: vigil.LOINCBPPanel, Time: t0,
			Components: []vigil.Measurement{{Code: vigil.LOINCSystolic, Value: 80}, {Code: vigil.LOINCDiastolic, Value: 40}}}}},
	}
	h := newHarness(t, store, nil)
	if got := h.alerts(""); len(got) != 0 {
		t.Fatalf("restore raised %v, want nothing", states(got))
	}
	// Replaying the newest stored reading again changes nothing.
	h.feed(spo2("r50", 50, 88))
	h.feed(reading("p2", "bp0", 0, vigil.LOINCSystolic, 80))
	if got := h.alerts(""); len(got) != 0 {
		t.Fatalf("redelivered reading raised %v, want nothing", states(got))
	}
	h.feed(spo2("r79", 79, 88))
	if got := h.alerts("p1"); len(got) != 0 {
		t.Fatalf("59 s after the restored run began: %v, want nothing", states(got))
	}
	h.feed(spo2("r80", 80, 88))
	got := h.alerts("p1")
	if want := []string{"spo2-low:firing"}; !slices.Equal(states(got), want) {
		t.Fatalf("60 s after the restored run began: %v, want %v", states(got), want)
	}
	if !got[0].Since.Equal(t0.Add(20 * time.Second)) {
		t.Errorf("Since = %v, want t0+20s", got[0].Since)
	}
}

func TestSaveFailureIsRetried(t *testing.T) {
	store := newMemStore()
	h := newHarness(t, store, nil)
	store.failing = true
	h.feed(reading("p1", "a", 0, vigil.LOINCBodyTemp, 39.5))
	if got := metricValue(t, h.e.saveErrs); got != 1 {
		t.Errorf("save errors = %v, want 1", got)
	}
	if ev := h.events(); len(ev) != 0 {
		t.Errorf("published %v although the alert was not stored", states(ev))
	}
	store.failing = false
	h.feed(reading("p1", "b", time.Minute, vigil.LOINCBodyTemp, 39.6))
	got := h.alerts("p1")
	if len(got) != 1 || got[0].ReadingID != "b" || !got[0].Since.Equal(t0) {
		t.Errorf("after the store recovered: %+v, want one alert from reading b since t0", got)
	}
}

func TestAlertIDsAreTimeOrderedAndUnique(t *testing.T) {
	h := newHarness(t, newMemStore(), nil)
	seen := make(map[string]bool)
	prev := ""
	for i := 0; i < 1000; i++ {
		id := h.e.newID(t0) // a clock that does not move
		if seen[id] || id <= prev {
			t.Fatalf("id %d = %s after %s: not unique and increasing", i, id, prev)
		}
		seen[id], prev = true, id
	}
	later := h.e.newID(t0.Add(time.Second))
	if later <= prev {
		t.Errorf("id at a later time %s <= %s", later, prev)
	}
}

func TestInvalidThresholds(t *testing.T) {
	ninety := 90.0
	tests := []struct {
		name string
		th   vigil.Threshold
	}{
		{"no id", vigil.Threshold{Code: "x", Below: &ninety, Priority: "high"}},
		{"no code", vigil.Threshold{ID: "a", Below: &ninety, Priority: "high"}},
		{"no bound", vigil.Threshold{ID: "a", Code: "x", Priority: "high"}},
		{"bad priority", vigil.Threshold{ID: "a", Code: "x", Below: &ninety, Priority: "urgent"}},
		{"negative for", vigil.Threshold{ID: "a", Code: "x", Below: &ninety, Priority: "high", For: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := DefaultOptions()
			opts.Thresholds = []vigil.Threshold{tt.th}
			_, err := New(context.Background(), newMemStore(), nil, opts)
			if got := vigil.ErrorCode(err); got != vigil.EINVALID {
				t.Errorf("New: err %v, want code %s", err, vigil.EINVALID)
			}
		})
	}
	opts := DefaultOptions()
	opts.Thresholds = append(DefaultThresholds(), DefaultThresholds()[0])
	if _, err := New(context.Background(), newMemStore(), nil, opts); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Errorf("duplicate id: err %v, want %s", err, vigil.EINVALID)
	}
}

// BenchmarkObserve measures the common case: a ward's in-range readings
// (one HR/SpO2/RR reading per patient per call).
func BenchmarkObserve(b *testing.B) {
	e, err := New(context.Background(), newMemStore(), &live.Hub{}, Options{Now: func() time.Time { return t0 }})
	if err != nil {
		b.Fatal(err)
	}
	const patients = 64
	batch := make([]*vigil.Reading, patients)
	ids := make([]string, patients)
	for p := range ids {
		ids[p] = fmt.Sprintf("p%d", p)
	}
	for p := range batch {
		batch[p] = &vigil.Reading{DeviceID: ids[p], PatientID: ids[p],
			Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 80}, {Code: vigil.LOINCSpO2, Value: 97}, {Code: vigil.LOINCRespRate, Value: 16}}}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		id, at := strconv.Itoa(i), t0.Add(time.Duration(i)*time.Second)
		for _, r := range batch {
			r.ID, r.Time = id, at
		}
		e.Observe(context.Background(), batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*patients), "ns/reading")
}

// metricValue reads a counter or gauge.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		t.Fatalf("read metric: %v", err)
	}
	if c := pb.GetCounter(); c != nil {
		return c.GetValue()
	}
	return pb.GetGauge().GetValue()
}

// failingRestore is a restore source whose observation reads fail.
type failingRestore struct{ restoringStore }

func (failingRestore) LatestObservations(context.Context, string, []string, int) (map[string][]*vigil.Observation, error) {
	return nil, vigil.Errorf(vigil.EUNAVAILABLE, "store closing")
}

func TestRestoreFailureIsNotFatal(t *testing.T) {
	store := failingRestore{restoringStore{newMemStore()}}
	store.patients = []*vigil.Patient{{ID: "p1"}}
	h := newHarness(t, store, nil)
	// The engine works; conditions start from the next readings.
	h.feed(spo2("a", 0, 88), spo2("b", 60, 88))
	if got, want := states(h.alerts("p1")), []string{"spo2-low:firing"}; !slices.Equal(got, want) {
		t.Errorf("alerts %v, want %v", got, want)
	}
}
