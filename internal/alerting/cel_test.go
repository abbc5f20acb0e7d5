package alerting

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/live"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

func openPebble(t *testing.T, dir string) *pebble.Store {
	t.Helper()
	o := pebble.DefaultOptions()
	o.CompactInterval = -1
	s, err := pebble.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newRuleHarness starts an engine with no thresholds and s as its rule
// store, at the harness clock.
func newRuleHarness(t *testing.T, s *pebble.Store, at time.Time) *harness {
	t.Helper()
	h := &harness{t: t, clock: &clock{t: at}, store: s, hub: &live.Hub{}, reg: prometheus.NewRegistry()}
	h.sub = h.hub.Subscribe(1000, nil)
	t.Cleanup(h.sub.Close)
	opts := DefaultOptions()
	opts.Now, opts.Registerer = h.clock.Now, h.reg
	opts.Thresholds = []vigil.Threshold{}
	opts.RuleStore = s
	e, err := New(context.Background(), s, h.hub, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.e = e
	return h
}

func hr(id string, at time.Duration, v float64) *vigil.Reading {
	r := reading("p1", id, at, vigil.LOINCHeartRate, v)
	r.Values[0].Unit = "/min"
	return r
}

func TestCELRuleLifecycle(t *testing.T) {
	ctx := context.Background()
	s := openPebble(t, t.TempDir())
	defer s.Close()
	h := newRuleHarness(t, s, t0)
	rule := vigil.Rule{ID: "tachy-trend", Title: "Heart rate high and rising", Priority: vigil.PriorityMedium, Enabled: true, ForSeconds: 60,
		Expr: `mean("8867-4", duration("5m")) > 110 && change("8867-4", duration("5m")) >= 20`, SavedBy: "dr1"}
	saved, err := h.e.SaveRule(ctx, rule)
	if err != nil || saved.Version != 1 {
		t.Fatalf("SaveRule: %+v %v", saved, err)
	}
	// One value a minute: 100, 110, … 150. The 5-minute mean passes 110 at
	// minute 2 (mean of 100,110,120 = 110 is not above), minute 3 (115):
	// pending from minute 3, firing at minute 4 (for 60 s).
	for i := range 6 {
		h.feed(hr("r"+string(rune('0'+i)), time.Duration(i)*time.Minute, 100+10*float64(i)))
		as := h.alerts("p1")
		switch {
		case i < 4 && len(as) != 0:
			t.Fatalf("minute %d: alerts %v", i, states(as))
		case i >= 4 && (len(as) != 1 || as[0].State != vigil.AlertFiring):
			t.Fatalf("minute %d: alerts %v", i, states(as))
		}
	}
	a := h.alerts("p1")[0]
	if a.RuleID != "tachy-trend" || a.Code != vigil.LOINCHeartRate || a.Value != 140 || a.Unit != "/min" ||
		!a.Since.Equal(t0.Add(3*time.Minute)) || !strings.Contains(a.Detail, "Heart rate 140 /min") || a.Priority != vigil.PriorityMedium {
		t.Fatalf("alert: %+v", a)
	}
	// Disabling the rule needs a note, then resolves its open alert.
	rule.Enabled = false
	if _, err := h.e.SaveRule(ctx, rule); vigil.ErrorCode(err) != vigil.EINVALID || !strings.Contains(err.Error(), "note") {
		t.Fatalf("change without a note: %v", err)
	}
	rule.Note = "trial over"
	if _, err := h.e.SaveRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	as := h.alerts("p1")
	if len(as) != 1 || as[0].State != vigil.AlertResolved || !strings.Contains(as[0].History[len(as[0].History)-1].Note, "disabled") {
		t.Fatalf("after disabling: %+v", as)
	}
	if len(h.e.Rules()) != 0 {
		t.Fatalf("rules in force: %+v", h.e.Rules())
	}
	hist, err := s.RuleHistory(ctx, "tachy-trend")
	if err != nil || len(hist) != 2 || hist[1].Note != "trial over" || hist[0].SavedBy != "dr1" {
		t.Fatalf("history: %+v %v", hist, err)
	}
	// A bad rule is refused with where and what.
	_, err = h.e.SaveRule(ctx, vigil.Rule{ID: "bad", Title: "x", Priority: "high", Expr: `mean("8867-4", duration("1m")) >`})
	if vigil.ErrorCode(err) != vigil.EINVALID || vigil.ErrorReason(err) != "invalid" {
		t.Fatalf("bad rule: %v", err)
	}
}

// A rule whose data is absent is unknown: it neither fires nor resolves.
func TestCELRuleUnknownChangesNothing(t *testing.T) {
	ctx := context.Background()
	s := openPebble(t, t.TempDir())
	defer s.Close()
	h := newRuleHarness(t, s, t0)
	if _, err := h.e.SaveRule(ctx, vigil.Rule{ID: "hypox", Title: "SpO2 low", Priority: vigil.PriorityHigh, Enabled: true,
		Expr: `value("59408-5") < 90 || value("8867-4") > 150`}); err != nil {
		t.Fatal(err)
	}
	h.feed(hr("a", 0, 160)) // SpO2 unknown, but the || is decided by HR
	if st := states(h.alerts("p1")); !slices.Equal(st, []string{"hypox:firing"}) {
		t.Fatalf("after HR 160: %v", st)
	}
	if _, err := h.e.SaveRule(ctx, vigil.Rule{ID: "desat", Title: "SpO2 falling", Priority: vigil.PriorityHigh, Enabled: true,
		Expr: `change("59408-5", duration("5m")) < -4`}); err != nil {
		t.Fatal(err)
	}
	h.feed(spo2("s1", 60, 97)) // one value: change is unknown
	if got := metricValue(t, h.e.unknown.WithLabelValues("desat")); got != 1 {
		t.Fatalf("unknown evaluations = %v, want 1", got)
	}
	h.feed(spo2("s2", 120, 92)) // change -5: fires
	if st := states(h.alerts("p1")); !slices.Contains(st, "desat:firing") {
		t.Fatalf("after a fall of 5: %v", st)
	}
}

// A timed rule fires on the clock when a value goes missing.
func TestCELRuleMissingOnTick(t *testing.T) {
	ctx := context.Background()
	s := openPebble(t, t.TempDir())
	defer s.Close()
	h := newRuleHarness(t, s, t0)
	if _, err := h.e.SaveRule(ctx, vigil.Rule{ID: "hr-missing", Title: "No heart rate for 5 minutes", Priority: vigil.PriorityLow, Enabled: true,
		Expr: `missing("8867-4", duration("5m"))`}); err != nil {
		t.Fatal(err)
	}
	h.feed(hr("a", 0, 80))
	h.clock.Set(t0.Add(4 * time.Minute))
	h.e.Tick(ctx)
	if len(h.alerts("p1")) != 0 {
		t.Fatal("fired before 5 minutes")
	}
	h.clock.Set(t0.Add(6 * time.Minute))
	h.e.Tick(ctx)
	if st := states(h.alerts("p1")); !slices.Equal(st, []string{"hr-missing:firing"}) {
		t.Fatalf("after 6 minutes: %v", st)
	}
	h.feed(hr("b", 7*time.Minute, 80))
	if st := states(h.alerts("p1")); !slices.Equal(st, []string{"hr-missing:resolved"}) {
		t.Fatalf("after a new value: %v", st)
	}
}

// After a restart the windows are filled from stored history, so a
// trend that began before the restart is seen on the next reading.
func TestCELRuleWindowsAfterRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openPebble(t, dir)
	if err := s.CreatePatient(ctx, &vigil.Patient{ID: "p1"}); err != nil {
		t.Fatal(err)
	}
	h := newRuleHarness(t, s, t0)
	if _, err := h.e.SaveRule(ctx, vigil.Rule{ID: "hr-rise", Title: "HR rising", Priority: vigil.PriorityMedium, Enabled: true,
		Expr: `change("8867-4", duration("10m")) > 30`}); err != nil {
		t.Fatal(err)
	}
	var rs []*vigil.Reading
	for i := range 4 {
		rs = append(rs, hr("h"+string(rune('0'+i)), time.Duration(i)*time.Minute, 80+float64(i)*5)) // 80..95
	}
	if _, err := s.AppendReadings(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openPebble(t, dir)
	defer s.Close()
	h2 := newRuleHarness(t, s, t0.Add(4*time.Minute))
	if got := len(h2.e.windows.Series("p1", vigil.LOINCHeartRate)); got != 4 {
		t.Fatalf("windows hold %d values after restart, want 4", got)
	}
	next := hr("h4", 5*time.Minute, 115) // 115 − 80 = 35 over 10 minutes
	if _, err := s.AppendReadings(ctx, []*vigil.Reading{next}); err != nil {
		t.Fatal(err)
	}
	h2.feed(next)
	if st := states(h2.alerts("p1")); !slices.Equal(st, []string{"hr-rise:firing"}) {
		t.Fatalf("after restart: %v", st)
	}
}
