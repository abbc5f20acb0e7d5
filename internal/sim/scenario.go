package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/news2"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

// ScenarioOptions configure a clinical scenario run: simulated patients
// through Vigil's real alerting (thresholds, NEWS2 bands, hysteresis)
// on a real embedded store, on a simulated clock.
type ScenarioOptions struct {
	Dir           string  // data directory for the store (a temporary one)
	Stable        int     // stable, noisy patients
	Deteriorating int     // patients with a sepsis-like course
	Hours         float64 // how long the stable patients are watched (24)
	Seed          uint64
	// Progress, when set, is called with the share done (0 to 1).
	Progress func(done float64)
}

// ScenarioPatient is what happened to one patient.
type ScenarioPatient struct {
	ID           string         `json:"id"`
	Deteriorates bool           `json:"deteriorates"`
	Alerts       map[string]int `json:"alerts"`             // by rule
	MediumAt     *float64       `json:"mediumAt,omitempty"` // minutes after onset of the course when NEWS2 medium fired
	HighAt       *float64       `json:"highAt,omitempty"`   // … NEWS2 high
}

// ScenarioReport sums a scenario up.
type ScenarioReport struct {
	StablePatients int     `json:"stablePatients"`
	StableHours    float64 `json:"stableHours"`
	// FalseAlerts are alerts of stable patients (every one is false).
	FalseAlerts           int            `json:"falseAlerts"`
	FalseAlertsByRule     map[string]int `json:"falseAlertsByRule"`
	FalseAlertsPerPatDay  float64        `json:"falseAlertsPerPatientDay"`
	DeterioratingPatients int            `json:"deterioratingPatients"`
	// MediumBeforeHigh counts deteriorating patients whose NEWS2 medium
	// alert fired before the high one (and both fired).
	MediumBeforeHigh int `json:"mediumBeforeHigh"`
	// LeadMinutes is the median time from NEWS2 medium to high.
	LeadMinutes float64           `json:"leadMinutes"`
	Patients    []ScenarioPatient `json:"patients"`
}

// Scenario runs the cohort. Every patient wears a monitor reporting HR,
// SpO2, RR and temperature every 30 s and a cuff measuring BP every 15
// minutes; a nurse records "alert, on air" every hour. Deteriorating
// patients are followed for three hours.
func Scenario(ctx context.Context, o ScenarioOptions) (*ScenarioReport, error) {
	if o.Hours <= 0 {
		o.Hours = 24
	}
	so := pebble.DefaultOptions()
	so.CompactInterval = -1
	start := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	now := start
	clock := func() time.Time { return now }
	so.Now = clock
	store, err := pebble.Open(o.Dir, so)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	ao := alerting.DefaultOptions()
	ao.Now, ao.ResolveAfter = clock, time.Minute
	eng, err := alerting.New(ctx, store, nil, ao)
	if err != nil {
		return nil, err
	}
	ev := &news2.Evaluator{Store: store, Alerts: eng, Now: clock}

	type pat struct {
		id string
		p  *physio
		bp Vitals
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x5ce))
	var pats []*pat
	air := false
	for i := range o.Stable + o.Deteriorating {
		det := i >= o.Stable
		id := fmt.Sprintf("s%03d", i+1)
		if det {
			id = fmt.Sprintf("d%03d", i-o.Stable+1)
		}
		if err := store.CreatePatient(ctx, &vigil.Patient{ID: id, Consciousness: "A", ConsciousAt: start, OnOxygen: &air, OxygenAt: start}); err != nil {
			return nil, err
		}
		pats = append(pats, &pat{id: id, p: newPhysio(rand.New(rand.NewPCG(rng.Uint64(), uint64(i))), det)})
	}
	const step = 30 * time.Second
	stableEnd := time.Duration(o.Hours * float64(time.Hour))
	detEnd := 3 * time.Hour
	end := stableEnd
	if o.Deteriorating > 0 {
		end = max(end, detEnd)
	}
	for el := time.Duration(0); el <= end; el += step {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		now = start.Add(el)
		if el > 0 && el%time.Hour == 0 { // nurse round
			for _, p := range pats {
				pt, err := store.FindPatientByID(ctx, p.id)
				if err != nil {
					return nil, err
				}
				pt.ConsciousAt, pt.OxygenAt = now, now
				if err := store.UpdatePatient(ctx, pt, pt.Version); err != nil {
					return nil, err
				}
			}
		}
		var rs []*vigil.Reading
		for _, p := range pats {
			if (p.p.deteriorates && el > detEnd) || (!p.p.deteriorates && el > stableEnd) {
				continue
			}
			v := p.p.step(now, el)
			r := &vigil.Reading{DeviceID: "mon-" + p.id, ID: fmt.Sprintf("%d", el/time.Second), PatientID: p.id, Time: now, Received: now,
				Values: []vigil.Measurement{
					{Code: vigil.LOINCHeartRate, Value: v.HR, Unit: "/min"}, {Code: vigil.LOINCSpO2, Value: v.SpO2, Unit: "%"},
					{Code: vigil.LOINCRespRate, Value: v.RR, Unit: "/min"}, {Code: vigil.LOINCBodyTemp, Value: v.Temp, Unit: "Cel"},
				}}
			rs = append(rs, r)
			if el%(15*time.Minute) == 0 {
				rs = append(rs, &vigil.Reading{DeviceID: "cuff-" + p.id, ID: fmt.Sprintf("%d", el/time.Second), PatientID: p.id, Time: now, Received: now,
					Values: []vigil.Measurement{{Code: vigil.LOINCSystolic, Value: v.SBP, Unit: "mm[Hg]"}, {Code: vigil.LOINCDiastolic, Value: v.DBP, Unit: "mm[Hg]"}}})
			}
		}
		if len(rs) > 0 {
			if _, err := store.AppendReadings(ctx, rs); err != nil {
				return nil, err
			}
			eng.Observe(ctx, rs)
			ev.Observe(ctx, rs)
			eng.Tick(ctx)
		}
		if o.Progress != nil && el%(10*time.Minute) == 0 {
			o.Progress(float64(el) / float64(end))
		}
	}

	rep := &ScenarioReport{StablePatients: o.Stable, StableHours: o.Hours, FalseAlertsByRule: map[string]int{}, DeterioratingPatients: o.Deteriorating}
	var leads []float64
	for _, p := range pats {
		as, err := store.FindAlerts(ctx, vigil.AlertFilter{PatientID: p.id, Limit: 10000})
		if err != nil {
			return nil, err
		}
		sp := ScenarioPatient{ID: p.id, Deteriorates: p.p.deteriorates, Alerts: map[string]int{}}
		slices.SortFunc(as, func(a, b *vigil.Alert) int { return a.Raised.Compare(b.Raised) })
		for _, a := range as {
			sp.Alerts[a.RuleID]++
			if !p.p.deteriorates {
				rep.FalseAlerts++
				rep.FalseAlertsByRule[a.RuleID]++
				continue
			}
			m := a.Raised.Sub(start.Add(p.p.onset)).Minutes()
			switch a.RuleID {
			case "device:" + news2.DeviceID + ":news2-medium":
				if sp.MediumAt == nil {
					sp.MediumAt = &m
				}
			case "device:" + news2.DeviceID + ":news2-high":
				if sp.HighAt == nil {
					sp.HighAt = &m
				}
			}
		}
		if sp.MediumAt != nil && sp.HighAt != nil && *sp.MediumAt < *sp.HighAt {
			rep.MediumBeforeHigh++
			leads = append(leads, *sp.HighAt-*sp.MediumAt)
		}
		rep.Patients = append(rep.Patients, sp)
	}
	if o.Stable > 0 {
		rep.FalseAlertsPerPatDay = float64(rep.FalseAlerts) / (float64(o.Stable) * o.Hours / 24)
	}
	if len(leads) > 0 {
		sort.Float64s(leads)
		rep.LeadMinutes = leads[len(leads)/2]
	}
	if o.Progress != nil {
		o.Progress(1)
	}
	return rep, nil
}
