package storetest

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

// testRetention: readings past their retention are rolled up (1-minute and
// 1-hour min, max, mean, count) and removed, newer ones stay; a late sample
// for an expired range joins its rollup; rollups and resolved alerts
// expire on their own schedule, open alerts never.
func testRetention(t *testing.T, h Harness) {
	s := h.OpenRetaining(t, vigil.Retention{Readings: 24 * time.Hour, Rollups: 30 * 24 * time.Hour, Alerts: 7 * 24 * time.Hour})
	closeStore(t, s)
	lc := s.(vigil.Lifecycle)
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	old := now.Add(-72 * time.Hour) // on a 2-hour boundary
	var rs []*vigil.Reading
	for i := range 3 * 3600 { // 3 hours at 1 Hz, HR 60 + minute % 30
		ts := old.Add(time.Duration(i) * time.Second)
		rs = append(rs, &vigil.Reading{DeviceID: "mon", ID: fmt.Sprint("o", i), PatientID: "p1", Time: ts, Received: ts,
			Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: float64(60 + (i/60)%30), Unit: "/min"}}})
	}
	for i := range 60 {
		ts := now.Add(-time.Hour + time.Duration(i)*time.Second)
		rs = append(rs, &vigil.Reading{DeviceID: "mon", ID: fmt.Sprint("n", i), PatientID: "p1", Time: ts, Received: ts,
			Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 70, Unit: "/min"}}})
	}
	for i := 0; i < len(rs); i += 2000 {
		_, err := s.AppendReadings(ctx, rs[i:min(i+2000, len(rs))])
		must(t, err)
	}
	if h.Settle != nil {
		h.Settle(t, s)
	}
	for _, a := range []*vigil.Alert{
		{ID: "a-old-resolved", PatientID: "p1", RuleID: "r", State: vigil.AlertResolved, Raised: now.Add(-10 * 24 * time.Hour), Updated: now},
		{ID: "a-old-open", PatientID: "p1", RuleID: "r2", State: vigil.AlertFiring, Raised: now.Add(-10 * 24 * time.Hour), Updated: now},
		{ID: "a-new-resolved", PatientID: "p1", RuleID: "r3", State: vigil.AlertResolved, Raised: now.Add(-time.Hour), Updated: now},
	} {
		must(t, s.SaveAlert(ctx, a))
	}
	st, err := lc.EnforceRetention(ctx, now)
	must(t, err)
	if st.Samples != 3*3600 || st.Alerts != 1 {
		t.Fatalf("retention: %+v", st)
	}
	obs, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Limit: 1000})
	must(t, err)
	if len(obs) != 60 {
		t.Fatalf("%d raw observations left, want the 60 recent ones", len(obs))
	}
	hours, err := lc.ReadRollups(ctx, "p1", vigil.LOINCHeartRate, vigil.RollupHour, time.Time{}, now)
	must(t, err)
	if len(hours) != 1 || len(hours[0].Rollups) != 3 || hours[0].Device != "mon" || hours[0].Unit != "/min" {
		t.Fatalf("hour rollups: %+v", hours)
	}
	if h0 := hours[0].Rollups[0]; !h0.Start.Equal(old) || h0.Count != 3600 || h0.Min != 60 || h0.Max != 89 || math.Abs(h0.Mean-74.5) > 1e-9 {
		t.Fatalf("first hour: %+v", h0)
	}
	mins, err := lc.ReadRollups(ctx, "p1", vigil.LOINCHeartRate, vigil.RollupMinute, old, old.Add(3*time.Hour))
	must(t, err)
	if len(mins) != 1 || len(mins[0].Rollups) != 180 || mins[0].Rollups[1].Min != 61 || mins[0].Rollups[1].Count != 60 {
		t.Fatalf("minute rollups: %+v", mins)
	}
	// A late sample for the expired range joins its rollup.
	_, err = s.AppendReadings(ctx, []*vigil.Reading{{DeviceID: "mon", ID: "late", PatientID: "p1", Time: old.Add(30 * time.Second), Received: now,
		Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 200, Unit: "/min"}}}})
	must(t, err)
	_, err = lc.EnforceRetention(ctx, now)
	must(t, err)
	mins, err = lc.ReadRollups(ctx, "p1", vigil.LOINCHeartRate, vigil.RollupMinute, old, old.Add(time.Minute))
	must(t, err)
	if r := mins[0].Rollups[0]; r.Count != 61 || r.Max != 200 {
		t.Fatalf("late sample not merged: %+v", r)
	}
	wantCode(t, func() error { _, err := s.FindAlertByID(ctx, "a-old-resolved"); return err }(), vigil.ENOTFOUND)
	for _, id := range []string{"a-old-open", "a-new-resolved"} {
		if _, err := s.FindAlertByID(ctx, id); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	_, err = lc.EnforceRetention(ctx, now.Add(40*24*time.Hour))
	must(t, err)
	if hours, _ := lc.ReadRollups(ctx, "p1", vigil.LOINCHeartRate, vigil.RollupHour, time.Time{}, now); len(hours) != 0 {
		t.Fatalf("rollups past their retention: %+v", hours)
	}
	if _, err := lc.ReadRollups(ctx, "p1", vigil.LOINCHeartRate, time.Second, time.Time{}, now); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Fatalf("a resolution not kept: %v", err)
	}
}

// testErasure: everything of the patient goes, the other patient and the
// devices stay, the device can serve a new patient.
func testErasure(t *testing.T, h Harness) {
	s := h.OpenRetaining(t, vigil.Retention{})
	closeStore(t, s)
	lc := s.(vigil.Lifecycle)
	t0 := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	for _, p := range []string{"p1", "p2"} {
		must(t, s.CreatePatient(ctx, &vigil.Patient{ID: p, Family: "F" + p}))
	}
	must(t, s.CreateDevice(ctx, &vigil.Device{ID: "mon", Kind: vigil.DeviceBedsideMonitor}))
	must(t, s.CreateUser(ctx, &vigil.User{ID: "portal-p1", Role: vigil.RolePatient, PatientID: "p1"}))
	must(t, s.AssignDevice(ctx, "mon", "p1", t0))
	_, err := s.AppendReadings(ctx, []*vigil.Reading{
		{DeviceID: "mon", ID: "1", PatientID: "p1", Time: t0.Add(time.Minute), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 80, Unit: "/min"}, {Code: vigil.LOINCSpO2, Value: 97, Unit: "%"}}},
		{DeviceID: "other", ID: "1", PatientID: "p2", Time: t0.Add(time.Minute), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 60, Unit: "/min"}}},
	})
	must(t, err)
	must(t, s.SaveAlert(ctx, &vigil.Alert{ID: "a1", PatientID: "p1", RuleID: "r", State: vigil.AlertFiring, Raised: t0, Updated: t0}))
	_, err = s.AppendEvents(ctx, []*vigil.DeviceEvent{{DeviceID: "mon", ID: "e1", PatientID: "p1", Type: "bottle-opened", Time: t0, Received: t0}})
	must(t, err)
	must(t, s.AddReview(ctx, &vigil.Review{ID: "v1", PatientID: "p1", By: "dr", At: t0, Minutes: 5, Logged: t0}))

	rep, err := lc.ErasePatient(ctx, "p1")
	must(t, err)
	if rep.Series != 2 || rep.Alerts != 1 || rep.Events != 1 || rep.Reviews != 1 || rep.Users != 1 || rep.Assignments != 1 {
		t.Fatalf("erasure report: %+v", rep)
	}
	_, err = s.FindPatientByID(ctx, "p1")
	wantCode(t, err, vigil.ENOTFOUND)
	_, err = s.FindUserByID(ctx, "portal-p1")
	wantCode(t, err, vigil.ENOTFOUND)
	if obs, _, _ := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1"}); len(obs) != 0 {
		t.Fatalf("%d observations left", len(obs))
	}
	if as, _ := s.FindAlerts(ctx, vigil.AlertFilter{PatientID: "p1"}); len(as) != 0 {
		t.Fatalf("%d alerts left", len(as))
	}
	if es, _ := s.FindEvents(ctx, "p1", time.Time{}, t0.Add(time.Hour)); len(es) != 0 {
		t.Fatalf("%d events left", len(es))
	}
	if rs, _ := s.FindReviews(ctx, "p1", time.Time{}, t0.Add(time.Hour)); len(rs) != 0 {
		t.Fatalf("%d reviews left", len(rs))
	}
	if as, _ := s.Assignments(ctx, "mon"); len(as) != 0 {
		t.Fatalf("assignments left: %+v", as)
	}
	if obs, _, _ := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p2"}); len(obs) != 1 {
		t.Fatalf("p2's observations: %d", len(obs))
	}
	if _, err := s.FindDeviceByID(ctx, "mon"); err != nil {
		t.Fatal(err)
	}
	_, err = lc.ErasePatient(ctx, "p1")
	wantCode(t, err, vigil.ENOTFOUND)
	// The device serves a new patient.
	must(t, s.CreatePatient(ctx, &vigil.Patient{ID: "p3"}))
	must(t, s.AssignDevice(ctx, "mon", "p3", t0.Add(time.Hour)))
	_, err = s.AppendReadings(ctx, []*vigil.Reading{{DeviceID: "mon", ID: "2", PatientID: "p3", Time: t0.Add(2 * time.Hour), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 70, Unit: "/min"}}}})
	must(t, err)
	if obs, _, _ := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p3"}); len(obs) != 1 {
		t.Fatalf("p3's observations: %d", len(obs))
	}
}
