package alerting

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/mapping"
	"github.com/vigil-iomt/vigil/internal/rules"
)

// BacktestSource is the history a backtest reads, and rule windows are
// filled from at start; the embedded store implements it.
type BacktestSource interface {
	FindPatients(ctx context.Context, f vigil.PatientFilter) ([]*vigil.Patient, int, error)
	FindObservations(ctx context.Context, f vigil.ObservationFilter) ([]*vigil.Observation, string, error)
}

// BacktestRequest asks what a rule would have done over stored history.
type BacktestRequest struct {
	Rule     vigil.Rule `json:"rule"`
	From     time.Time  `json:"from"`
	To       time.Time  `json:"to"`
	Patients []string   `json:"patients,omitempty"` // empty: every patient
}

// BacktestAlert is one alert the rule would have raised.
type BacktestAlert struct {
	Patient  string     `json:"patient"`
	Since    time.Time  `json:"since"` // the condition began
	Fired    time.Time  `json:"fired"`
	Resolved *time.Time `json:"resolved,omitempty"` // nil: still open at To
	Value    float64    `json:"value"`
	Unit     string     `json:"unit,omitempty"`
	Detail   string     `json:"detail,omitempty"`
}

// BacktestReport is the answer: how many alerts, for whom and when.
type BacktestReport struct {
	Rule       string          `json:"rule"`
	From       time.Time       `json:"from"`
	To         time.Time       `json:"to"`
	Patients   int             `json:"patients"` // patients with data the rule reads
	Readings   int             `json:"readings"` // readings replayed
	Alerts     int             `json:"alerts"`
	PerPatient map[string]int  `json:"perPatient"`
	Unknown    int             `json:"unknown"`             // evaluations whose result was unknown (data absent)
	List       []BacktestAlert `json:"list"`                // in firing order, at most MaxBacktestList
	Truncated  bool            `json:"truncated,omitempty"` // List was cut
}

// Backtest bounds.
const (
	MaxBacktestRange    = 31 * 24 * time.Hour
	MaxBacktestList     = 1000
	maxBacktestReadings = 2_000_000
	backtestTick        = time.Minute
)

// Backtest runs a rule over stored history — through the same lifecycle
// as live alerts (its For, hysteresis of resolveAfter, one open alert per
// patient), patient by patient, at the readings' device times — and
// reports the alerts it would have raised between From and To. Values
// from the rule's longest window before From warm its windows up;
// alerts that fire before From are not reported. Timed rules (age,
// missing) are also evaluated every minute of device time. Device alarms
// are not replayed: alarm() is false in a backtest. Nothing is stored or
// notified. It returns EINVALID for a bad rule or range.
func Backtest(ctx context.Context, src BacktestSource, table *mapping.Table, resolveAfter time.Duration, req BacktestRequest) (*BacktestReport, error) {
	env, err := rules.NewEnv(table)
	if err != nil {
		return nil, err
	}
	c, err := env.Compile(req.Rule)
	if err != nil {
		return nil, err
	}
	switch {
	case req.From.IsZero() || req.To.IsZero() || !req.From.Before(req.To):
		return nil, vigil.FieldErrorf("from", "invalid", "a backtest needs from before to (RFC 3339 times)")
	case req.To.Sub(req.From) > MaxBacktestRange:
		return nil, vigil.FieldErrorf("to", "too-long", "a backtest covers at most %d days; run several", int(MaxBacktestRange/(24*time.Hour)))
	}
	patients := req.Patients
	if len(patients) == 0 {
		if patients, err = allPatients(ctx, src); err != nil {
			return nil, err
		}
	}
	warm := time.Duration(0)
	for _, d := range c.Windows {
		warm = max(warm, d)
	}
	rep := &BacktestReport{Rule: req.Rule.ID, From: req.From, To: req.To, PerPatient: map[string]int{}, List: []BacktestAlert{}}
	for _, p := range patients {
		rs, err := history(ctx, src, p, c, req.From.Add(-warm), req.To)
		if err != nil {
			return nil, err
		}
		if len(rs) == 0 {
			continue
		}
		rep.Patients++
		rep.Readings += len(rs)
		if rep.Readings > maxBacktestReadings {
			return nil, vigil.FieldErrorf("to", "too-much", "more than %d readings to replay: narrow the range or name the patients", maxBacktestReadings)
		}
		if err := replayPatient(ctx, c, table, resolveAfter, rs, req, rep); err != nil {
			return nil, err
		}
	}
	slices.SortStableFunc(rep.List, func(a, b BacktestAlert) int { return a.Fired.Compare(b.Fired) })
	if len(rep.List) > MaxBacktestList {
		rep.List, rep.Truncated = rep.List[:MaxBacktestList], true
	}
	return rep, nil
}

func allPatients(ctx context.Context, src BacktestSource) ([]string, error) {
	var out []string
	const page = 500
	for off := 0; ; off += page {
		ps, total, err := src.FindPatients(ctx, vigil.PatientFilter{Offset: off, Limit: page})
		if err != nil {
			return nil, fmt.Errorf("backtest: list patients: %w", err)
		}
		for _, p := range ps {
			out = append(out, p.ID)
		}
		if len(ps) == 0 || off+len(ps) >= total {
			return out, nil
		}
	}
}

// history returns a patient's readings of the rule's codes in [from, to),
// one per device and time, in time order.
func history(ctx context.Context, src BacktestSource, patient string, c *rules.Compiled, from, to time.Time) ([]*vigil.Reading, error) {
	codes := slices.Clone(c.Codes)
	for i, code := range codes {
		if code == vigil.LOINCSystolic || code == vigil.LOINCDiastolic {
			codes[i] = vigil.LOINCBPPanel
		}
	}
	slices.Sort(codes)
	codes = slices.Compact(codes)
	type key struct {
		dev string
		t   int64
	}
	byKey := map[key]*vigil.Reading{}
	var out []*vigil.Reading
	f := vigil.ObservationFilter{PatientID: patient, Codes: codes, From: from, To: to, Limit: 1000}
	for {
		obs, next, err := src.FindObservations(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("backtest: history of %s: %w", patient, err)
		}
		for _, o := range obs {
			k := key{o.DeviceID, o.Time.UnixNano()}
			r := byKey[k]
			if r == nil {
				r = &vigil.Reading{PatientID: patient, DeviceID: o.DeviceID, ID: fmt.Sprintf("backtest-%d", len(out)), Time: o.Time}
				byKey[k] = r
				out = append(out, r)
			}
			if len(o.Components) > 0 {
				r.Values = append(r.Values, o.Components...)
			} else {
				r.Values = append(r.Values, vigil.Measurement{Code: o.Code, Value: o.Value, Unit: o.Unit})
			}
		}
		if len(out) > maxBacktestReadings {
			return nil, vigil.FieldErrorf("to", "too-much", "more than %d readings to replay: narrow the range or name the patients", maxBacktestReadings)
		}
		if next == "" {
			break
		}
		f.Cursor = next
	}
	slices.SortStableFunc(out, byTime)
	return out, nil
}

// replayPatient runs one patient's history through a private engine.
func replayPatient(ctx context.Context, c *rules.Compiled, table *mapping.Table, resolveAfter time.Duration, rs []*vigil.Reading, req BacktestRequest, rep *BacktestReport) error {
	store := &memAlerts{alerts: map[string]*vigil.Alert{}, index: map[string]int{}}
	var now time.Time
	e, err := New(ctx, store, nil, Options{
		Now:          func() time.Time { return now },
		Thresholds:   []vigil.Threshold{},
		Rules:        []*rules.Compiled{c},
		StaleAfter:   100 * 365 * 24 * time.Hour, // history is meant to be late
		ResolveAfter: resolveAfter,
		Table:        table,
	})
	if err != nil {
		return err
	}
	tick := func(until time.Time) {
		if !c.Timed {
			return
		}
		for t := now.Truncate(backtestTick).Add(backtestTick); !t.After(until); t = t.Add(backtestTick) {
			now = t
			e.Tick(ctx)
		}
	}
	for i, r := range rs {
		if i%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if i > 0 {
			tick(r.Time)
		}
		now = r.Time
		e.Observe(ctx, []*vigil.Reading{r})
	}
	tick(req.To.Add(-time.Nanosecond))
	var m dto.Metric
	if err := e.unknown.WithLabelValues(c.Rule.ID).Write(&m); err == nil {
		rep.Unknown += int(m.GetCounter().GetValue())
	}
	for _, a := range store.order {
		if a.Raised.Before(req.From) {
			continue // warm-up
		}
		b := BacktestAlert{Patient: a.PatientID, Since: a.Since, Fired: a.Raised, Value: a.Value, Unit: a.Unit, Detail: a.Detail}
		if a.State == vigil.AlertResolved {
			t := a.Updated
			b.Resolved = &t
		}
		rep.Alerts++
		rep.PerPatient[a.PatientID]++
		rep.List = append(rep.List, b)
	}
	return nil
}

// memAlerts is the in-memory alert store of a backtest.
type memAlerts struct {
	mu     sync.Mutex
	alerts map[string]*vigil.Alert
	order  []*vigil.Alert // by first save (firing order), latest copy
	index  map[string]int // id → position in order
}

func (s *memAlerts) SaveAlert(_ context.Context, a *vigil.Alert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := cloneAlert(a)
	if i, ok := s.index[a.ID]; ok {
		s.order[i] = b
	} else {
		s.index[a.ID] = len(s.order)
		s.order = append(s.order, b)
	}
	s.alerts[a.ID] = b
	return nil
}

func (s *memAlerts) FindAlertByID(_ context.Context, id string) (*vigil.Alert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.alerts[id]; ok {
		return cloneAlert(a), nil
	}
	return nil, vigil.Errorf(vigil.ENOTFOUND, "alert %s not found", id)
}

// FindAlerts serves the engine's start (nothing is stored yet then).
func (s *memAlerts) FindAlerts(_ context.Context, f vigil.AlertFilter) ([]*vigil.Alert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*vigil.Alert
	for i := len(s.order) - 1; i >= 0; i-- {
		a := s.order[i]
		if (f.PatientID == "" || a.PatientID == f.PatientID) && (len(f.States) == 0 || slices.Contains(f.States, a.State)) {
			out = append(out, cloneAlert(a))
		}
	}
	return out, nil
}

// Backtest runs the package's Backtest on the engine's store, with the
// engine's hysteresis and code table. It returns EUNAVAILABLE when the
// store cannot read history.
func (e *Engine) Backtest(ctx context.Context, req BacktestRequest) (*BacktestReport, error) {
	src, ok := e.store.(BacktestSource)
	if !ok {
		return nil, vigil.Errorf(vigil.EUNAVAILABLE, "this store cannot replay history")
	}
	return Backtest(ctx, src, e.table, e.resolveAfter, req)
}
