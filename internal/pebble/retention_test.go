package pebble

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Readings past their retention are rolled up (1-minute and 1-hour min,
// max, mean, count) and removed, the newer ones stay; a late sample for
// an expired range joins its rollup; rollups and resolved alerts expire
// on their own schedule, open alerts never.
func TestRetentionRollsUpThenRemoves(t *testing.T) {
	ctx := context.Background()
	o := DefaultOptions()
	o.CompactInterval = -1
	o.Retention = Retention{Readings: 24 * time.Hour, Rollups: 30 * 24 * time.Hour, Alerts: 7 * 24 * time.Hour}
	s, err := Open(filepath.Join(t.TempDir(), "store"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	old := now.Add(-72 * time.Hour) // 3 days ago, on a 2-hour boundary
	var rs []*vigil.Reading
	for i := range 3 * 3600 { // 3 hours at 1 Hz, HR = 60 + (i/60)%30
		ts := old.Add(time.Duration(i) * time.Second)
		rs = append(rs, &vigil.Reading{DeviceID: "mon", ID: fmt.Sprint("o", i), PatientID: "p1", Time: ts, Received: ts,
			Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: float64(60 + (i/60)%30), Unit: "/min"}}})
	}
	for i := range 60 { // recent: kept
		ts := now.Add(-time.Hour + time.Duration(i)*time.Second)
		rs = append(rs, &vigil.Reading{DeviceID: "mon", ID: fmt.Sprint("n", i), PatientID: "p1", Time: ts, Received: ts,
			Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 70, Unit: "/min"}}})
	}
	if _, err := s.AppendReadings(ctx, rs); err != nil {
		t.Fatal(err)
	}
	o.Now = func() time.Time { return now }
	if _, err := s.Compact(ctx); err != nil { // fold the old ones into chunks first
		t.Fatal(err)
	}
	for _, a := range []*vigil.Alert{
		{ID: "a-old-resolved", PatientID: "p1", RuleID: "r", State: vigil.AlertResolved, Raised: now.Add(-10 * 24 * time.Hour), Updated: now},
		{ID: "a-old-open", PatientID: "p1", RuleID: "r2", State: vigil.AlertFiring, Raised: now.Add(-10 * 24 * time.Hour), Updated: now},
		{ID: "a-new-resolved", PatientID: "p1", RuleID: "r3", State: vigil.AlertResolved, Raised: now.Add(-time.Hour), Updated: now},
	} {
		if err := s.SaveAlert(ctx, a); err != nil {
			t.Fatal(err)
		}
	}

	st, err := s.EnforceRetention(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if st.Samples != 3*3600 || st.Alerts != 1 {
		t.Fatalf("retention: %+v", st)
	}
	left, err := s.ReadSeries(ctx, "p1", vigil.LOINCHeartRate, "", time.Time{}, now.Add(time.Hour), 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || len(left[0].T) != 60 {
		t.Fatalf("raw samples left: %+v", left)
	}
	hours, err := s.ReadRollups(ctx, "p1", vigil.LOINCHeartRate, RollupHour, time.Time{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(hours) != 1 || len(hours[0].Rollups) != 3 {
		t.Fatalf("hour rollups: %+v", hours)
	}
	h0 := hours[0].Rollups[0]
	if !h0.Start.Equal(old) || h0.Count != 3600 || h0.Min != 60 || h0.Max != 89 || math.Abs(h0.Mean-74.5) > 1e-9 {
		t.Fatalf("first hour: %+v", h0)
	}
	mins, err := s.ReadRollups(ctx, "p1", vigil.LOINCHeartRate, RollupMinute, old, old.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(mins[0].Rollups) != 180 || mins[0].Rollups[1].Min != 61 || mins[0].Rollups[1].Count != 60 {
		t.Fatalf("minute rollups: %d, second %+v", len(mins[0].Rollups), mins[0].Rollups[1])
	}
	// A late sample for the expired range joins its rollup.
	late := &vigil.Reading{DeviceID: "mon", ID: "late", PatientID: "p1", Time: old.Add(30 * time.Second), Received: now,
		Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 200, Unit: "/min"}}}
	if _, err := s.AppendReadings(ctx, []*vigil.Reading{late}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EnforceRetention(ctx, now); err != nil {
		t.Fatal(err)
	}
	mins, _ = s.ReadRollups(ctx, "p1", vigil.LOINCHeartRate, RollupMinute, old, old.Add(time.Minute))
	if r := mins[0].Rollups[0]; r.Count != 61 || r.Max != 200 {
		t.Fatalf("late sample not merged: %+v", r)
	}
	// Alerts: the old resolved one went, the open one stays.
	if _, err := s.FindAlertByID(ctx, "a-old-resolved"); vigil.ErrorCode(err) != vigil.ENOTFOUND {
		t.Fatalf("old resolved alert: %v", err)
	}
	for _, id := range []string{"a-old-open", "a-new-resolved"} {
		if _, err := s.FindAlertByID(ctx, id); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	// Rollups expire after theirs.
	if _, err := s.EnforceRetention(ctx, now.Add(40*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if hours, _ := s.ReadRollups(ctx, "p1", vigil.LOINCHeartRate, RollupHour, time.Time{}, now); len(hours) != 0 {
		t.Fatalf("rollups past their retention: %+v", hours)
	}
}
