package adherence

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

var london, _ = time.LoadLocation("Europe/London")

func sched() vigil.MedicationSchedule {
	return vigil.MedicationSchedule{ID: "metformin", Name: "Metformin 500 mg", Times: []string{"08:00", "20:00"}, WindowMinutes: 60,
		Device: "bottle-1", TimeZone: "Europe/London", Start: time.Date(2026, 7, 1, 0, 0, 0, 0, london)}
}

func opened(id string, t time.Time) *vigil.DeviceEvent {
	return &vigil.DeviceEvent{DeviceID: "bottle-1", ID: id, PatientID: "p1", Type: vigil.EventBottleOpened, Time: t.UTC()}
}

func at(day, h, m int) time.Time { return time.Date(2026, 7, day, h, m, 0, 0, london) } // BST, UTC+1

func TestEvaluate(t *testing.T) {
	evs := []*vigil.DeviceEvent{
		opened("a", at(1, 8, 5)),   // dose 1 08:00 taken
		opened("b", at(1, 20, 59)), // dose 1 20:00 taken at the edge of the window
		opened("c", at(2, 7, 30)),  // dose 2 08:00 taken…
		opened("d", at(2, 7, 40)),  // …and a second opening takes nothing more
		// dose 2 20:00 missed (opened at 21:01, one minute late)
		opened("e", at(2, 21, 1)),
		{DeviceID: "other", ID: "f", Type: vigil.EventBottleOpened, Time: at(3, 8, 0).UTC()}, // another bottle
	}
	rep := Evaluate(sched(), evs, at(1, 0, 0), at(4, 0, 0), at(3, 8, 30))
	// Day 3: 08:00 is still pending at 08:30 (window to 09:00), 20:00 pending.
	if rep.Scheduled != 6 || rep.Taken != 3 || rep.Missed != 1 || rep.Pending != 2 || rep.Adherence != 75 {
		t.Fatalf("report: %+v", rep)
	}
	if d := rep.Doses[0]; !d.Time.Equal(at(1, 8, 0)) || d.Status != Taken || !d.TakenAt.Equal(at(1, 8, 5)) {
		t.Fatalf("first dose: %+v", d)
	}
	if rep.Doses[3].Status != Missed {
		t.Fatalf("day 2 evening: %+v", rep.Doses[3])
	}
	// Before Start nothing is scheduled.
	s := sched()
	s.Start = at(2, 12, 0)
	if rep := Evaluate(s, evs, at(1, 0, 0), at(3, 0, 0), at(3, 0, 0)); rep.Scheduled != 1 {
		t.Fatalf("from start: %+v", rep)
	}
}

func TestValidate(t *testing.T) {
	ok := sched()
	ok.WindowMinutes = 0
	if err := Validate(&ok, 0); err != nil || ok.WindowMinutes != 60 {
		t.Fatalf("valid: %v %+v", err, ok)
	}
	for _, edit := range []func(*vigil.MedicationSchedule){
		func(m *vigil.MedicationSchedule) { m.Times = []string{"8am"} },
		func(m *vigil.MedicationSchedule) { m.Times = []string{"24:00"} },
		func(m *vigil.MedicationSchedule) { m.TimeZone = "Mars/Olympus" },
		func(m *vigil.MedicationSchedule) { m.Device = "" },
		func(m *vigil.MedicationSchedule) { m.Name = "" },
	} {
		m := sched()
		edit(&m)
		if err := Validate(&m, 2); vigil.ErrorCode(err) != vigil.EINVALID || !strings.HasPrefix(vigil.ErrorMessage(err), "") || !strings.HasPrefix(err.(*vigil.Error).Field, "medications[2].") {
			t.Errorf("%+v: %v", m, err)
		}
	}
}

// The monitor raises one alert per missed dose's medication, and the next
// opening resolves it.
func TestMonitor(t *testing.T) {
	ctx := context.Background()
	o := pebble.DefaultOptions()
	o.CompactInterval = -1
	s, err := pebble.Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := &vigil.Patient{ID: "p1", Medications: []vigil.MedicationSchedule{sched()}}
	if err := s.CreatePatient(ctx, p); err != nil {
		t.Fatal(err)
	}
	now := at(1, 7, 0)
	ao := alerting.DefaultOptions()
	ao.Now = func() time.Time { return now }
	e, err := alerting.New(ctx, s, nil, ao)
	if err != nil {
		t.Fatal(err)
	}
	mo := &Monitor{Store: s, Alerts: e}
	check := func(t2 time.Time) {
		now = t2
		if err := mo.Check(ctx, now); err != nil {
			t.Fatal(err)
		}
	}
	alerts := func() []*vigil.Alert {
		as, err := e.Alerts(ctx, vigil.AlertFilter{PatientID: "p1"})
		if err != nil {
			t.Fatal(err)
		}
		return as
	}
	check(at(1, 7, 0)) // sets the mark
	if _, err := s.AppendEvents(ctx, []*vigil.DeviceEvent{opened("a", at(1, 8, 10))}); err != nil {
		t.Fatal(err)
	}
	for m := 1; m <= 150; m++ { // every minute until 09:30
		check(at(1, 7, 0).Add(time.Duration(m) * time.Minute))
	}
	if as := alerts(); len(as) != 0 {
		t.Fatalf("dose taken, yet %+v", as[0])
	}
	for m := 1; m <= 12*60; m++ { // until 21:30: the 20:00 dose is missed at 21:00
		check(at(1, 9, 30).Add(time.Duration(m) * time.Minute))
	}
	as := alerts()
	if len(as) != 1 || as[0].State != vigil.AlertFiring || as[0].RuleID != "device:vigil-adherence:metformin" ||
		!strings.Contains(as[0].Title, "Missed dose: Metformin 500 mg at 20:00") || !strings.Contains(as[0].Detail, "between 19:00 and 21:00") {
		t.Fatalf("missed: %+v", as)
	}
	ev := opened("late", at(1, 21, 45))
	mo.Opened(ctx, p, ev)
	if as := alerts(); as[0].State != vigil.AlertResolved {
		t.Fatalf("after a late opening: %+v", as[0])
	}
}
