package alerting

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

// The engine on the real embedded store: alerts survive a restart of the
// store, are restored, and keep their lifecycle.
func TestOnPebbleAcrossRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	o := pebble.DefaultOptions()
	o.CompactInterval = -1
	open := func() *pebble.Store {
		s, err := pebble.Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	if err := s.CreatePatient(ctx, &vigil.Patient{ID: "p1"}); err != nil {
		t.Fatal(err)
	}
	h1 := newHarness(t, s, nil)
	r := reading("p1", "fever", 0, vigil.LOINCBodyTemp, 39.5)
	r.Values[0].Unit = "Cel"
	if _, err := s.AppendReadings(ctx, []*vigil.Reading{r}); err != nil {
		t.Fatal(err)
	}
	h1.feed(r)
	as := h1.alerts("p1")
	if len(as) != 1 || as[0].State != vigil.AlertFiring {
		t.Fatalf("before restart: %v", states(as))
	}
	if _, err := h1.e.Acknowledge(ctx, as[0].ID, "nurse1", "seen"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open()
	defer s.Close()
	h2 := newHarness(t, s, nil)
	if got := metricValue(t, h2.e.openG); got != 1 {
		t.Fatalf("after restart vigil_alerts_open = %v, want 1", got)
	}
	got, err := s.FindAlertByID(ctx, as[0].ID)
	if err != nil || got.State != vigil.AlertAcknowledged || len(got.History) < 2 || got.History[len(got.History)-1].By != "nurse1" {
		t.Fatalf("stored alert: %+v %v", got, err)
	}
	n := reading("p1", "normal", time.Minute, vigil.LOINCBodyTemp, 37.0)
	h2.feed(n)
	if st := states(h2.alerts("p1")); !slices.Equal(st, []string{"temp-high:resolved"}) {
		t.Fatalf("after a normal value: %v", st)
	}
}
