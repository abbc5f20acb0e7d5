package alerting

import (
	"slices"
	"sort"
	"time"

	"github.com/vigil-iomt/vigil"
)

// RuleStats are alarm-fatigue figures for one rule over a period.
type RuleStats struct {
	Rule            string        `json:"rule"`
	Alerts          int           `json:"alerts"`
	PerPatientDay   float64       `json:"perPatientDay"`
	Acknowledged    int           `json:"acknowledged"`
	AckedInTarget   float64       `json:"ackedWithinTarget"` // share of alerts acknowledged within the target
	AckP50          time.Duration `json:"ackP50"`
	AckP90          time.Duration `json:"ackP90"`
	ResolvedUnacked int           `json:"resolvedUnacknowledged"` // went away before anyone acknowledged: candidates for noise
}

// Stats are alarm-fatigue figures for a period.
type Stats struct {
	From        time.Time     `json:"from"`
	To          time.Time     `json:"to"`
	PatientDays float64       `json:"patientDays"`
	Target      time.Duration `json:"ackTarget"`
	Total       RuleStats     `json:"total"`
	Rules       []RuleStats   `json:"rules"`
}

// ComputeStats summarizes the alerts raised in [from, to) for patients
// monitored patient-days in that period. Device-alarm rules are grouped
// as "device-alarm".
func ComputeStats(as []*vigil.Alert, from, to time.Time, patients int, target time.Duration) Stats {
	days := to.Sub(from).Hours() / 24
	s := Stats{From: from, To: to, PatientDays: float64(patients) * days, Target: target}
	type acc struct {
		n, acked, inTarget, resolvedUnacked int
		ackTimes                            []time.Duration
	}
	by := map[string]*acc{}
	total := &acc{}
	for _, a := range as {
		if a.Raised.Before(from) || !a.Raised.Before(to) {
			continue
		}
		rule := a.RuleID
		if len(rule) > len(DeviceRulePrefix) && rule[:len(DeviceRulePrefix)] == DeviceRulePrefix {
			rule = "device-alarm"
		}
		r := by[rule]
		if r == nil {
			r = &acc{}
			by[rule] = r
		}
		var ackAt, resolvedAt time.Time
		for _, h := range a.History {
			if h.State == vigil.AlertAcknowledged && ackAt.IsZero() {
				ackAt = h.Time
			}
			if h.State == vigil.AlertResolved && resolvedAt.IsZero() {
				resolvedAt = h.Time
			}
		}
		for _, x := range []*acc{r, total} {
			x.n++
			switch {
			case !ackAt.IsZero():
				d := ackAt.Sub(a.Raised)
				x.acked++
				x.ackTimes = append(x.ackTimes, d)
				if d <= target {
					x.inTarget++
				}
			case !resolvedAt.IsZero():
				x.resolvedUnacked++
			}
		}
	}
	mk := func(rule string, x *acc) RuleStats {
		rs := RuleStats{Rule: rule, Alerts: x.n, Acknowledged: x.acked, ResolvedUnacked: x.resolvedUnacked}
		if s.PatientDays > 0 {
			rs.PerPatientDay = float64(x.n) / s.PatientDays
		}
		if x.n > 0 {
			rs.AckedInTarget = float64(x.inTarget) / float64(x.n)
		}
		if len(x.ackTimes) > 0 {
			slices.Sort(x.ackTimes)
			q := func(p float64) time.Duration { return x.ackTimes[int(p*float64(len(x.ackTimes)-1)+0.5)] }
			rs.AckP50, rs.AckP90 = q(0.5), q(0.9)
		}
		return rs
	}
	s.Total = mk("all", total)
	for rule, x := range by {
		s.Rules = append(s.Rules, mk(rule, x))
	}
	sort.Slice(s.Rules, func(i, j int) bool {
		return s.Rules[i].Alerts > s.Rules[j].Alerts || s.Rules[i].Alerts == s.Rules[j].Alerts && s.Rules[i].Rule < s.Rules[j].Rule
	})
	return s
}
