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
		UpdatePatient(ctx context.Context, p *vigil.Patient, version int) error
	}
	Alerts      *alerting.Engine
	Now         func() time.Time
	StaleAfter  time.Duration // parameters older than this do not count (default 1 h)
	MinInterval time.Duration // recompute a patient at most this often (default 5 s)
	Logger      *slog.Logger
	// Publish, when set, receives every recomputed score (for live views).
	Publish func(u Update)

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
	if e.Publish != nil {
		e.Publish(Update{PatientID: patientID, Result: res})
	}
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
		if e.Publish != nil {
			e.Publish(Update{PatientID: p, Result: res})
		}
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

// Inputs are what a nurse records for NEWS2; omitted fields keep their
// value. Time defaults to now.
type Inputs struct {
	Consciousness string    `json:"consciousness,omitempty"` // ACVPU: A, C, V, P or U
	OnOxygen      *bool     `json:"onOxygen,omitempty"`
	SpO2Scale     int       `json:"spo2Scale,omitempty"` // 1 or 2 (a clinician's prescription)
	Time          time.Time `json:"time,omitzero"`
}

// Record validates and stores a patient's NEWS2 inputs (in the patient
// record, retrying a concurrent update), then recomputes the score and
// updates the band alerts. prescriber is false for nurses: only a
// clinician may prescribe SpO2 scale 2.
func (e *Evaluator) Record(ctx context.Context, patientID string, in Inputs, prescriber bool) (Result, error) {
	e.defaults()
	switch in.Consciousness {
	case "", "A", "C", "V", "P", "U":
	default:
		return Result{}, vigil.FieldErrorf("consciousness", "invalid", "consciousness is ACVPU: A (alert), C (new confusion), V (voice), P (pain) or U (unresponsive)")
	}
	if in.SpO2Scale != 0 && in.SpO2Scale != 1 && in.SpO2Scale != 2 {
		return Result{}, vigil.FieldErrorf("spo2Scale", "invalid", "spo2Scale is 1 or 2")
	}
	if in.SpO2Scale == 2 && !prescriber {
		return Result{}, vigil.Errorf(vigil.EFORBIDDEN, "SpO2 scale 2 is a clinician's prescription")
	}
	t := in.Time
	if t.IsZero() {
		t = e.Now().UTC()
	}
	if t.After(e.Now().Add(5 * time.Minute)) {
		return Result{}, vigil.FieldErrorf("time", "future", "time is in the future")
	}
	for attempt := 0; ; attempt++ {
		pt, err := e.Store.FindPatientByID(ctx, patientID)
		if err != nil {
			return Result{}, err
		}
		if in.Consciousness != "" {
			pt.Consciousness, pt.ConsciousAt = in.Consciousness, t
		}
		if in.OnOxygen != nil {
			pt.OnOxygen, pt.OxygenAt = in.OnOxygen, t
		}
		if in.SpO2Scale != 0 {
			pt.SpO2Scale = in.SpO2Scale
		}
		err = e.Store.UpdatePatient(ctx, pt, pt.Version)
		if vigil.ErrorCode(err) == vigil.ECONFLICT && attempt < 3 {
			continue
		}
		if err != nil {
			return Result{}, err
		}
		break
	}
	return e.Reevaluate(ctx, patientID)
}

// Update is a patient's freshly computed NEWS2, as published to live
// views (Evaluator.Publish).
type Update struct {
	PatientID string `json:"patient"`
	Result
}
