package alerting

import (
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

func TestComputeStats(t *testing.T) {
	from := t0
	alert := func(rule string, raisedMin int, ackAfter, resolveAfter time.Duration) *vigil.Alert {
		r := from.Add(time.Duration(raisedMin) * time.Minute)
		a := &vigil.Alert{RuleID: rule, Raised: r, History: []vigil.AlertEvent{{Time: r, State: vigil.AlertFiring}}}
		if ackAfter > 0 {
			a.History = append(a.History, vigil.AlertEvent{Time: r.Add(ackAfter), State: vigil.AlertAcknowledged})
		}
		if resolveAfter > 0 {
			a.History = append(a.History, vigil.AlertEvent{Time: r.Add(resolveAfter), State: vigil.AlertResolved})
		}
		return a
	}
	as := []*vigil.Alert{
		alert("spo2-low", 1, time.Minute, 0),
		alert("spo2-low", 2, 3*time.Minute, 0),
		alert("spo2-low", 3, 10*time.Minute, 0),
		alert("spo2-low", 4, 0, 30*time.Second), // resolved before anyone looked
		alert("device:m1:ALM-1", 5, 2*time.Minute, 0),
		alert("temp-high", -10, time.Minute, 0), // before the period
	}
	s := ComputeStats(as, from, from.Add(48*time.Hour), 5, 5*time.Minute)
	if s.PatientDays != 10 || s.Total.Alerts != 5 || s.Total.Acknowledged != 4 || s.Total.ResolvedUnacked != 1 {
		t.Fatalf("total: %+v", s)
	}
	spo2 := s.Rules[0]
	if spo2.Rule != "spo2-low" || spo2.Alerts != 4 || spo2.PerPatientDay != 0.4 || spo2.AckedInTarget != 0.5 || spo2.AckP50 != 3*time.Minute || spo2.AckP90 != 10*time.Minute {
		t.Fatalf("spo2: %+v", spo2)
	}
	if s.Rules[1].Rule != "device-alarm" {
		t.Fatalf("device alarms grouped: %+v", s.Rules)
	}
}
