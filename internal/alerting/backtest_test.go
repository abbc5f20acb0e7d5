package alerting

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

func TestBacktest(t *testing.T) {
	ctx := context.Background()
	s := openPebble(t, t.TempDir())
	defer s.Close()
	for _, p := range []string{"p1", "p2"} {
		if err := s.CreatePatient(ctx, &vigil.Patient{ID: p}); err != nil {
			t.Fatal(err)
		}
	}
	// Two hours, one HR value a minute. p1 runs at 130 from minute 30 to
	// minute 49; p2 stays at 80 but is silent from minute 60 to 79.
	var rs []*vigil.Reading
	for m := range 120 {
		v := 80.0
		if m >= 30 && m < 50 {
			v = 130
		}
		r := reading("p1", fmt.Sprintf("a%d", m), time.Duration(m)*time.Minute, vigil.LOINCHeartRate, v)
		r.Values[0].Unit = "/min"
		rs = append(rs, r)
		if m < 60 || m >= 80 {
			r := reading("p2", fmt.Sprintf("b%d", m), time.Duration(m)*time.Minute, vigil.LOINCHeartRate, 80)
			r.Values[0].Unit = "/min"
			rs = append(rs, r)
		}
	}
	if _, err := s.AppendReadings(ctx, rs); err != nil {
		t.Fatal(err)
	}
	req := BacktestRequest{
		Rule: vigil.Rule{ID: "tachy", Title: "Sustained tachycardia", Priority: vigil.PriorityMedium, ForSeconds: 120,
			Expr: `mean("8867-4", duration("5m")) > 110`},
		From: t0, To: t0.Add(2 * time.Hour),
	}
	rep, err := Backtest(ctx, s, nil, time.Minute, req)
	if err != nil {
		t.Fatal(err)
	}
	// The window (at−5m, at] holds 5 values. Its mean passes 110 at
	// minute 33 (minute 32: 80,80,130,130,130 = 110 is not above; minute
	// 33: 80,130,130,130,130 = 120); held 2 min → fires at minute 35.
	// Back to 110 at minute 51; resolves after a further minute of
	// hysteresis, at minute 52.
	if rep.Alerts != 1 || rep.PerPatient["p1"] != 1 || rep.PerPatient["p2"] != 0 || rep.Patients != 2 || rep.Readings != 220 {
		t.Fatalf("report: %+v", rep)
	}
	a := rep.List[0]
	if a.Patient != "p1" || !a.Since.Equal(t0.Add(33*time.Minute)) || !a.Fired.Equal(t0.Add(35*time.Minute)) ||
		a.Resolved == nil || !a.Resolved.Equal(t0.Add(52*time.Minute)) || a.Value != 130 || a.Detail == "" {
		t.Fatalf("alert: %+v (resolved %v)", a, a.Resolved)
	}

	// A timed rule: no heart rate for 10 minutes — p2's gap, found on the
	// minute clock between its readings.
	req.Rule = vigil.Rule{ID: "hr-gap", Title: "No heart rate", Priority: vigil.PriorityLow, Expr: `missing("8867-4", duration("10m"))`}
	rep, err = Backtest(ctx, s, nil, 0, req)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Alerts != 1 || rep.List[0].Patient != "p2" || !rep.List[0].Fired.Equal(t0.Add(69*time.Minute)) || !rep.List[0].Resolved.Equal(t0.Add(80*time.Minute)) {
		t.Fatalf("gap report: %+v", rep)
	}

	// Only the named patients; the warm-up before From raises nothing.
	req.Patients, req.From = []string{"p1"}, t0.Add(40*time.Minute)
	req.Rule.Expr, req.Rule.ID = `mean("8867-4", duration("5m")) > 110`, "tachy"
	if rep, err = Backtest(ctx, s, nil, 0, req); err != nil || rep.Alerts != 0 || rep.Patients != 1 {
		t.Fatalf("from minute 40: %+v %v", rep, err)
	}

	for _, bad := range []BacktestRequest{
		{Rule: req.Rule, From: t0, To: t0},
		{Rule: req.Rule, From: t0, To: t0.Add(40 * 24 * time.Hour)},
		{Rule: vigil.Rule{ID: "x", Title: "x", Priority: "high", Expr: "value("}, From: t0, To: t0.Add(time.Hour)},
	} {
		if _, err := Backtest(ctx, s, nil, 0, bad); vigil.ErrorCode(err) != vigil.EINVALID {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}
