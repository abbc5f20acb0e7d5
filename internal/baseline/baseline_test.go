package baseline

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

var day0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// circadian returns a heart rate: 58 asleep (00:00–06:00), 80 awake, with noise.
func circadian(rng *rand.Rand, t time.Time) float64 {
	base := 80.0
	if t.Hour() < 6 {
		base = 58
	}
	return base + rng.NormFloat64()*2.5
}

func hrReading(t time.Time, v float64) *vigil.Reading {
	return &vigil.Reading{PatientID: "p1", DeviceID: "w1", ID: t.Format(time.RFC3339), Time: t, Received: t,
		Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: v, Unit: "/min"}}}
}

type env struct {
	t     *testing.T
	store *pebble.Store
	now   time.Time
	e     *alerting.Engine
	d     *Detector
}

func newEnv(t *testing.T) *env {
	t.Helper()
	o := pebble.DefaultOptions()
	o.CompactInterval = -1
	s, err := pebble.Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	v := &env{t: t, store: s, now: day0}
	ao := alerting.DefaultOptions()
	ao.Now = func() time.Time { return v.now }
	ao.Thresholds = []vigil.Threshold{}
	if v.e, err = alerting.New(context.Background(), s, nil, ao); err != nil {
		t.Fatal(err)
	}
	v.d = New(Options{Alerts: v.e, Location: time.UTC, Now: func() time.Time { return v.now }})
	return v
}

func (v *env) feed(from time.Time, minutes int, hr func(time.Time) float64) {
	for i := range minutes {
		t := from.Add(time.Duration(i) * time.Minute)
		v.now = t
		v.d.Observe(context.Background(), []*vigil.Reading{hrReading(t, hr(t))})
	}
}

func (v *env) alerts() []*vigil.Alert {
	as, err := v.e.Alerts(context.Background(), vigil.AlertFilter{PatientID: "p1"})
	if err != nil {
		v.t.Fatal(err)
	}
	return as
}

// A heart rate of 80 is this patient's normal by day and an anomaly at
// night: the baseline knows the time of day, explains the anomaly, and
// resolves it when the value returns to normal.
func TestTimeOfDayAnomaly(t *testing.T) {
	v := newEnv(t)
	rng := rand.New(rand.NewPCG(1, 2))
	v.feed(day0, 7*24*60, func(t time.Time) float64 { return circadian(rng, t) })
	if n := len(v.alerts()); n != 0 {
		t.Fatalf("%d alerts during a normal week: %+v", n, v.alerts()[0])
	}
	night := day0.Add(7*24*time.Hour + 2*time.Hour)
	v.feed(night, 16, func(time.Time) float64 { return 80 })
	as := v.alerts()
	if len(as) != 1 || as[0].State != vigil.AlertFiring || as[0].RuleID != "device:vigil-baseline:8867-4" || as[0].Priority != vigil.PriorityLow {
		t.Fatalf("night 80: %+v", as)
	}
	if d := as[0].Detail; !strings.Contains(d, "Heart rate averaged 80.0 /min") || !strings.Contains(d, "above this patient's usual 58") ||
		!strings.Contains(d, "between 00:30 and 03:30") || !strings.Contains(d, "in the last 7 days") {
		t.Fatalf("explanation: %q", d)
	}
	if !strings.Contains(as[0].Title, "Heart rate unusually high") {
		t.Fatalf("title: %q", as[0].Title)
	}
	v.feed(night.Add(16*time.Minute), 11, func(t time.Time) float64 { return circadian(rng, t) })
	if as := v.alerts(); as[0].State != vigil.AlertResolved {
		t.Fatalf("back to normal: %+v", as[0])
	}
	v.feed(day0.Add(7*24*time.Hour+14*time.Hour), 30, func(time.Time) float64 { return 80 })
	if as := v.alerts(); len(as) != 1 {
		t.Fatalf("80 by day raised an alert: %+v", as[0])
	}
	cur := v.d.Current("p1")
	if len(cur) != 1 || cur[0].Code != vigil.LOINCHeartRate || cur[0].Median < 78 || cur[0].Median > 82 || cur[0].Days != 8 || cur[0].Window != 7 {
		t.Fatalf("current: %+v", cur)
	}
}

// With one day of history and the night of the next, values come from
// two days: not yet a baseline, nothing is flagged.
func TestNoBaselineWithoutHistory(t *testing.T) {
	v := newEnv(t)
	rng := rand.New(rand.NewPCG(3, 4))
	v.feed(day0, 24*60, func(t time.Time) float64 { return circadian(rng, t) })
	v.feed(day0.Add(24*time.Hour+2*time.Hour), 16, func(time.Time) float64 { return 110 })
	if as := v.alerts(); len(as) != 0 {
		t.Fatalf("alert without a baseline: %+v", as[0])
	}
	if cur := v.d.Current("p1"); len(cur) != 0 {
		t.Fatalf("current without a baseline: %+v", cur)
	}
}

// After a restart, Warm rebuilds the baselines from the store.
func TestWarmFromStore(t *testing.T) {
	v := newEnv(t)
	ctx := context.Background()
	if err := v.store.CreatePatient(ctx, &vigil.Patient{ID: "p1"}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var rs []*vigil.Reading
	for i := range 5 * 24 * 60 {
		at := day0.Add(time.Duration(i) * time.Minute)
		rs = append(rs, hrReading(at, circadian(rng, at)))
		if len(rs) == 1000 {
			if _, err := v.store.AppendReadings(ctx, rs); err != nil {
				t.Fatal(err)
			}
			rs = nil
		}
	}
	if _, err := v.store.AppendReadings(ctx, rs); err != nil {
		t.Fatal(err)
	}
	start := day0.Add(5*24*time.Hour + 3*time.Hour)
	if err := v.d.Warm(ctx, v.store, start); err != nil {
		t.Fatal(err)
	}
	v.feed(start, 16, func(time.Time) float64 { return 40 })
	as := v.alerts()
	if len(as) != 1 || !strings.Contains(as[0].Title, "unusually low") || !strings.Contains(as[0].Detail, "from 5 days") {
		t.Fatalf("after warm: %+v", as)
	}
}

// A backlog uploaded late teaches the baseline but raises nothing; the
// same values live do.
func TestBacklogDoesNotAlert(t *testing.T) {
	v := newEnv(t)
	rng := rand.New(rand.NewPCG(7, 8))
	v.feed(day0, 7*24*60, func(t time.Time) float64 { return circadian(rng, t) })
	night := day0.Add(7*24*time.Hour + 2*time.Hour)
	v.now = night.Add(3 * time.Hour) // uploaded three hours later
	for i := range 16 {
		v.d.Observe(context.Background(), []*vigil.Reading{hrReading(night.Add(time.Duration(i)*time.Minute), 80)})
	}
	if as := v.alerts(); len(as) != 0 {
		t.Fatalf("backlog raised %+v", as[0])
	}
	v.feed(night.Add(24*time.Hour), 16, func(time.Time) float64 { return 80 })
	if as := v.alerts(); len(as) != 1 {
		t.Fatalf("live: %d alerts", len(as))
	}
}
