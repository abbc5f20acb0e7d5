package news2

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/alerting"
)

// Evaluator recomputes NEWS2 for every patient whose readings were just
// stored and keeps one alert per response band open while the band holds:
// low-medium (a single parameter scoring 3), medium (5–6) and high (≥ 7).
type Evaluator struct {
	Store interface {
		vigil.ObservationStore
		vigil.ReadingStore
		FindPatientByID(ctx context.Context, id string) (*vigil.Patient, error)
	}
	Alerts      *alerting.Engine
	Now         func() time.Time
	StaleAfter  time.Duration // parameters older than this do not count (default 1 h)
	MinInterval time.Duration // recompute a patient at most this often (default 5 s)
	Logger      *slog.Logger

	mu   sync.Mutex
	last map[string]time.Time
}

// DeviceID is the device id NEWS2 alerts carry.
const DeviceID = "vigil-news2"

func (e *Evaluator) defaults() {
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.StaleAfter <= 0 {
		e.StaleAfter = time.Hour
	}
	if e.MinInterval <= 0 {
		e.MinInterval = 5 * time.Second
	}
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
}

// Compute returns a patient's current NEWS2.
func (e *Evaluator) Compute(ctx context.Context, patientID string) (Result, error) {
	e.defaults()
	latest, err := e.Store.LatestObservations(ctx, patientID, Codes, 1)
	if err != nil {
		return Result{}, err
	}
	var in Input
	FromObservations(latest, &in)
	p, err := e.Store.FindPatientByID(ctx, patientID)
	if err != nil {
		return Result{}, err
	}
	in.Scale2 = p.SpO2Scale == 2
	if p.Consciousness != "" {
		in.ACVPU = &Value{Text: p.Consciousness, Time: p.ConsciousAt}
	}
	if p.OnOxygen != nil {
		in.OnOxygen, in.OxygenTime = p.OnOxygen, p.OxygenAt
	}
	return Score(in, e.Now(), e.StaleAfter), nil
}

// Reevaluate computes a patient's NEWS2 now (after a nurse recorded an
// input) and updates the band alerts.
func (e *Evaluator) Reevaluate(ctx context.Context, patientID string) (Result, error) {
	res, err := e.Compute(ctx, patientID)
	if err != nil {
		return res, err
	}
	e.apply(ctx, patientID, res, e.Now())
	e.record(ctx, patientID, res)
	return res, nil
}

// record stores a complete score as an observation, so NEWS2 is trended
// (FHIR: Observation with SNOMED CT 1104051000000101).
func (e *Evaluator) record(ctx context.Context, patientID string, r Result) {
	if !r.Complete {
		return
	}
	now := e.Now().UTC().Truncate(time.Millisecond)
	rd := &vigil.Reading{DeviceID: DeviceID, ID: fmt.Sprintf("%s-%d", patientID, now.UnixMilli()), PatientID: patientID, Time: now, Received: now, Source: "news2",
		Values: []vigil.Measurement{{Code: vigil.LOINCNEWS2, Value: float64(r.Total), Unit: "{score}"}}}
	if _, err := e.Store.AppendReadings(ctx, []*vigil.Reading{rd}); err != nil {
		e.Logger.Error("NEWS2 score could not be stored", "err", err)
	}
}

// Observe is an ingest OnStored hook.
func (e *Evaluator) Observe(ctx context.Context, rs []*vigil.Reading) {
	e.defaults()
	now := e.Now()
	patients := map[string]time.Time{}
	for _, r := range rs {
		if t, ok := patients[r.PatientID]; !ok || r.Received.Before(t) {
			patients[r.PatientID] = r.Received
		}
	}
	for p, received := range patients {
		e.mu.Lock()
		if e.last == nil {
			e.last = map[string]time.Time{}
		}
		if now.Sub(e.last[p]) < e.MinInterval {
			e.mu.Unlock()
			continue
		}
		e.last[p] = now
		e.mu.Unlock()
		res, err := e.Compute(ctx, p)
		if err != nil {
			e.Logger.Error("NEWS2 computation failed", "err", err)
			continue
		}
		e.apply(ctx, p, res, received)
		e.record(ctx, p, res)
	}
}

// apply opens and closes the band alerts.
func (e *Evaluator) apply(ctx context.Context, patient string, r Result, received time.Time) {
	type band struct {
		id, priority, title string
		active              bool
	}
	suffix := ""
	if !r.Complete {
		suffix = " (" + r.Note + ")"
	}
	for _, b := range []band{
		{"news2-high", vigil.PriorityHigh, fmt.Sprintf("NEWS2 %d: high, emergency response", r.Total), r.Band == BandHigh},
		{"news2-medium", vigil.PriorityMedium, fmt.Sprintf("NEWS2 %d: medium, urgent response", r.Total), r.Band == BandMedium},
		{"news2-single-3", vigil.PriorityLow, fmt.Sprintf("NEWS2: a single parameter scores 3 (total %d), urgent ward-based response", r.Total), r.Band == BandLowMedium},
	} {
		if _, err := e.Alerts.DeviceAlarm(ctx, alerting.DeviceAlarm{
			PatientID: patient, DeviceID: DeviceID, AlarmID: b.id, Code: vigil.LOINCNEWS2, Title: b.title + suffix,
			Priority: b.priority, Value: float64(r.Total), Unit: "{score}", Time: e.Now(), Received: received, Active: b.active,
		}); err != nil {
			e.Logger.Error("NEWS2 alert could not be stored", "err", err)
		}
	}
}
