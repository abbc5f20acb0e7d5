package alerting

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/live"
)

func escalating(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, clock: &clock{t: t0}, store: newMemStore(), hub: &live.Hub{}, reg: prometheus.NewRegistry()}
	opts := DefaultOptions()
	opts.Now = h.clock.Now
	opts.Escalation = []time.Duration{5 * time.Minute, 10 * time.Minute}
	e, err := New(context.Background(), h.store, h.hub, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	return h
}

func TestEscalation(t *testing.T) {
	ctx := context.Background()
	h := escalating(t)
	h.feed(reading("p1", "fever", 0, vigil.LOINCBodyTemp, 39.5))
	a := h.alerts("p1")[0]
	raised := a.Raised
	tier := func() int { return h.alerts("p1")[0].Tier }
	for _, c := range []struct {
		at   time.Duration
		want int
	}{{4 * time.Minute, 0}, {5 * time.Minute, 1}, {14 * time.Minute, 1}, {15 * time.Minute, 2}, {2 * time.Hour, 2}} {
		h.clock.Set(raised.Add(c.at))
		h.e.Tick(ctx)
		if got := tier(); got != c.want {
			t.Fatalf("at +%v: tier %d, want %d", c.at, got, c.want)
		}
	}
	hist := h.alerts("p1")[0].History
	if len(hist) != 3 || hist[1].State != vigil.EventEscalated || hist[2].Note != "unacknowledged: escalated to tier 2" {
		t.Fatalf("history: %+v", hist)
	}

	// An acknowledged alert does not escalate.
	h2 := escalating(t)
	h2.feed(reading("p1", "fever", 0, vigil.LOINCBodyTemp, 39.5))
	b := h2.alerts("p1")[0]
	if _, err := h2.e.Acknowledge(ctx, b.ID, "nurse1", ""); err != nil {
		t.Fatal(err)
	}
	h2.clock.Set(b.Raised.Add(time.Hour))
	h2.e.Tick(ctx)
	if got := h2.alerts("p1")[0]; got.Tier != 0 || got.State != vigil.AlertAcknowledged {
		t.Fatalf("acknowledged alert escalated: %+v", got)
	}
}

func TestSnooze(t *testing.T) {
	ctx := context.Background()
	h := escalating(t)
	h.feed(reading("p1", "fever", 0, vigil.LOINCBodyTemp, 39.5))
	a := h.alerts("p1")[0]
	if _, err := h.e.Snooze(ctx, a.ID, "nurse1", 30*time.Second, ""); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Fatalf("30 s snooze: %v", err)
	}
	if _, err := h.e.Acknowledge(ctx, a.ID, "nurse1", "seen"); err != nil {
		t.Fatal(err)
	}
	s, err := h.e.Snooze(ctx, a.ID, "nurse1", 10*time.Minute, "")
	if err != nil || s.SnoozedUntil.IsZero() {
		t.Fatalf("snooze: %+v %v", s, err)
	}
	h.clock.Set(s.SnoozedUntil.Add(-time.Second))
	h.e.Tick(ctx)
	if got := h.alerts("p1")[0]; got.State != vigil.AlertAcknowledged || got.Tier != 0 {
		t.Fatalf("during snooze: %+v", got)
	}
	h.clock.Set(s.SnoozedUntil)
	h.e.Tick(ctx)
	got := h.alerts("p1")[0]
	if got.State != vigil.AlertFiring || !got.SnoozedUntil.IsZero() || got.History[len(got.History)-1].State != vigil.EventWoke {
		t.Fatalf("after snooze: %+v", got)
	}
	// Snoozing a resolved alert is refused.
	h.feed(reading("p1", "normal", 20*time.Minute, vigil.LOINCBodyTemp, 37))
	if _, err := h.e.Snooze(ctx, a.ID, "nurse1", 10*time.Minute, ""); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Fatalf("snooze resolved: %v", err)
	}
}

func TestEscalateByHand(t *testing.T) {
	ctx := context.Background()
	h := escalating(t)
	h.feed(reading("p1", "fever", 0, vigil.LOINCBodyTemp, 39.5))
	a := h.alerts("p1")[0]
	if _, err := h.e.Escalate(ctx, a.ID, "", "x"); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Fatalf("escalate without a user: %v", err)
	}
	if _, err := h.e.Escalate(ctx, "nope", "nurse1", ""); vigil.ErrorCode(err) != vigil.ENOTFOUND {
		t.Fatalf("escalate unknown: %v", err)
	}
	if _, err := h.e.Snooze(ctx, a.ID, "nurse1", 10*time.Minute, ""); err != nil {
		t.Fatal(err)
	}
	got, err := h.e.Escalate(ctx, a.ID, "nurse1", "patient grey and clammy")
	if err != nil {
		t.Fatal(err)
	}
	last := got.History[len(got.History)-1]
	if got.Tier != 1 || !got.SnoozedUntil.IsZero() || got.State != vigil.AlertFiring ||
		last.State != vigil.EventEscalated || last.By != "nurse1" || last.Note != "patient grey and clammy" {
		t.Fatalf("escalated: %+v", got)
	}
	if stored := h.alerts("p1")[0]; stored.Tier != 1 {
		t.Fatalf("stored tier %d", stored.Tier)
	}
	// An acknowledged alert can be escalated too (the nurse is with the
	// patient and needs the doctor); the default note says so.
	if _, err := h.e.Acknowledge(ctx, a.ID, "nurse1", ""); err != nil {
		t.Fatal(err)
	}
	got, err = h.e.Escalate(ctx, a.ID, "nurse1", "")
	if err != nil || got.Tier != 2 || got.State != vigil.AlertAcknowledged || got.History[len(got.History)-1].Note != "escalated by hand to tier 2" {
		t.Fatalf("escalate acknowledged: %+v %v", got, err)
	}
	for got.Tier < MaxTier {
		if got, err = h.e.Escalate(ctx, a.ID, "nurse1", ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.e.Escalate(ctx, a.ID, "nurse1", ""); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Fatalf("past the highest tier: %v", err)
	}
	h.feed(reading("p1", "normal", 20*time.Minute, vigil.LOINCBodyTemp, 37))
	if _, err := h.e.Escalate(ctx, a.ID, "nurse1", ""); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Fatalf("escalate resolved: %v", err)
	}
}

func TestHysteresis(t *testing.T) {
	h := &harness{t: t, clock: &clock{t: t0}, store: newMemStore(), hub: &live.Hub{}, reg: prometheus.NewRegistry()}
	opts := DefaultOptions()
	opts.Now = h.clock.Now
	opts.ResolveAfter = 2 * time.Minute
	e, err := New(context.Background(), h.store, h.hub, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	h.feed(reading("p1", "f1", 0, vigil.LOINCBodyTemp, 39.5))
	state := func() string { return h.alerts("p1")[0].State }
	h.feed(reading("p1", "n1", time.Minute, vigil.LOINCBodyTemp, 37.0))
	if state() != vigil.AlertFiring {
		t.Fatal("resolved at the first in-range value despite hysteresis")
	}
	h.feed(reading("p1", "f2", 2*time.Minute, vigil.LOINCBodyTemp, 39.6)) // flaps back: the clock restarts
	h.feed(reading("p1", "n2", 3*time.Minute, vigil.LOINCBodyTemp, 37.0))
	h.feed(reading("p1", "n3", 4*time.Minute, vigil.LOINCBodyTemp, 37.0))
	if state() != vigil.AlertFiring {
		t.Fatal("resolved after 1 minute in range")
	}
	h.feed(reading("p1", "n4", 5*time.Minute, vigil.LOINCBodyTemp, 37.0))
	if as := h.alerts("p1"); len(as) != 1 || as[0].State != vigil.AlertResolved {
		t.Fatalf("after 2 minutes in range: %v", states(as))
	}
}

func TestDeviceOffline(t *testing.T) {
	ctx := context.Background()
	h := &harness{t: t, clock: &clock{t: t0}, store: newMemStore(), hub: &live.Hub{}, reg: prometheus.NewRegistry()}
	opts := DefaultOptions()
	opts.Now = h.clock.Now
	opts.OfflineAfter = func(dev string) time.Duration {
		if dev == "dev-p1" {
			return 10 * time.Minute
		}
		return 0 // e.g. a home cuff: no offline alerts
	}
	e, err := New(ctx, h.store, h.hub, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	h.feed(reading("p1", "r1", 0, vigil.LOINCHeartRate, 70), reading("p2", "r2", 0, vigil.LOINCHeartRate, 70))
	h.clock.Set(t0.Add(9 * time.Minute))
	h.e.Tick(ctx)
	if as := h.alerts("p1"); len(as) != 0 {
		t.Fatalf("offline after 9 minutes: %v", states(as))
	}
	h.clock.Set(t0.Add(11 * time.Minute))
	h.e.Tick(ctx)
	h.e.Tick(ctx) // once per silence
	as := h.alerts("p1")
	if len(as) != 1 || as[0].RuleID != "device:dev-p1:offline" || as[0].State != vigil.AlertFiring || as[0].Priority != vigil.PriorityMedium {
		t.Fatalf("offline alert: %+v", as)
	}
	if as := h.alerts("p2"); len(as) != 0 {
		t.Fatalf("device without offline detection alerted: %v", states(as))
	}
	// The device reports again: the alert resolves.
	h.feed(reading("p1", "r3", 12*time.Minute, vigil.LOINCHeartRate, 70))
	if as := h.alerts("p1"); as[0].State != vigil.AlertResolved {
		t.Fatalf("after the device came back: %v", states(as))
	}
}

func TestPatientOverride(t *testing.T) {
	h := newHarness(t, newMemStore(), nil)
	below := 86.0
	if err := h.e.SetOverrides("p1", []vigil.ThresholdOverride{{Rule: "nope", Below: &below, Reason: "x", Expires: t0.Add(time.Hour)}}); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Fatalf("unknown rule: %v", err)
	}
	if err := h.e.SetOverrides("p1", []vigil.ThresholdOverride{{Rule: "spo2-low", Below: &below, Expires: t0.Add(time.Hour)}}); vigil.ErrorReason(err) != "required" {
		t.Fatalf("no reason: %v", err)
	}
	if err := h.e.SetOverrides("p1", []vigil.ThresholdOverride{{Rule: "spo2-low", Below: &below, Reason: "COPD, target 88–92 %", Expires: t0.Add(2 * time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	// 89 % is normal for p1 (override) but not for p2 (default limit).
	for i := 0; i < 5; i++ {
		at := time.Duration(i) * time.Minute
		h.feed(reading("p1", fmt.Sprint("a", i), at, vigil.LOINCSpO2, 89), reading("p2", fmt.Sprint("b", i), at, vigil.LOINCSpO2, 89))
	}
	if as := h.alerts("p1"); len(as) != 0 {
		t.Fatalf("p1 alerted despite the override: %v", states(as))
	}
	if as := h.alerts("p2"); len(as) != 1 {
		t.Fatalf("p2 without override: %v", states(as))
	}
	// After expiry the default limit applies again.
	for i := 0; i < 5; i++ {
		h.feed(reading("p1", fmt.Sprint("c", i), 3*time.Hour+time.Duration(i)*time.Minute, vigil.LOINCSpO2, 89))
	}
	if as := h.alerts("p1"); len(as) != 1 {
		t.Fatalf("after expiry: %v", states(as))
	}
}

func TestLowBattery(t *testing.T) {
	h := newHarness(t, newMemStore(), []vigil.Threshold{})
	batt := func(id string, at time.Duration, pct float64) *vigil.Reading {
		r := reading("p1", id, at, vigil.LOINCHeartRate, 70)
		r.Battery = &pct
		return r
	}
	h.feed(batt("a", 0, 45))
	if st, ok := h.e.DeviceStatus("dev-p1"); !ok || *st.Battery != 45 || st.Patient != "p1" {
		t.Fatalf("status: %+v %v", st, ok)
	}
	h.feed(batt("b", time.Minute, 18))
	as := h.alerts("p1")
	if len(as) != 1 || as[0].RuleID != "device:dev-p1:battery-low" || as[0].Priority != vigil.PriorityLow || !strings.Contains(as[0].Title, "battery at 18 %") {
		t.Fatalf("at 18 %%: %+v", as)
	}
	h.feed(batt("c", 2*time.Minute, 25)) // not charged enough: stays open
	h.feed(batt("d", 3*time.Minute, 10)) // still one alert
	if st := states(h.alerts("p1")); !slices.Equal(st, []string{"device:dev-p1:battery-low:firing"}) {
		t.Fatalf("between: %v", st)
	}
	h.feed(batt("e", 4*time.Minute, 95))
	if st := states(h.alerts("p1")); !slices.Equal(st, []string{"device:dev-p1:battery-low:resolved"}) {
		t.Fatalf("charged: %v", st)
	}
	if _, ok := h.e.DeviceStatus("nobody"); ok {
		t.Fatal("status of a device never seen")
	}
}
