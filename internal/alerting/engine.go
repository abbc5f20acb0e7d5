// Package alerting raises first-cut threshold alerts from stored readings
// and moves them through their lifecycle: pending → firing → acknowledged →
// resolved (IEC 60601-1-8 priorities, rules in vigil.Threshold form).
//
// # Rule semantics
//
// The Engine keeps one state per (patient, threshold). It considers, for
// each patient, the readings that carry a measurement with the
// threshold's code, in device-time order:
//
//   - A violating value (below Below or above Above) starts the condition
//     at that reading's device time, unless it is already running; the
//     alert is then pending (in memory only, never stored).
//   - A value back in range resets the condition (the pending state is
//     dropped).
//   - When the condition has held on consecutive readings spanning at
//     least For of device time (For 0: the first violating reading), the
//     alert fires within the same Observe call: it is stored with
//     SaveAlert, then published to the hub as a live.TypeAlert event.
//     Alert.Since is the device time the condition began; Alert.Raised
//     is Vigil's time (Options.Now) of firing.
//   - There is at most one open (firing or acknowledged) alert per patient
//     and threshold: while one is open, further violating readings do not
//     raise another.
//   - An open alert resolves on the first reading back in range (first
//     cut; hysteresis is a later issue), with a history entry and a hub
//     event. Acknowledge moves a firing alert to acknowledged with who,
//     when and a note in its history.
//   - Late data: a reading whose device time is older than
//     Now-Options.StaleAfter updates the state (it can reset a pending
//     condition or resolve an open alert) but never raises a new alert, so
//     a home device uploading hours late does not raise stale alerts as if
//     they were new. If a fresh reading extends a condition that began in
//     stale data, the alert fires then.
//   - Out of order and repeated data: a reading whose device time is older
//     than the newest reading already applied to that (patient,
//     threshold) is ignored for it, and the same reading (device, id)
//     delivered twice is applied once, so redelivery never raises twice.
//
// # Restart
//
// New loads the open alerts from the store, so they are neither raised
// again nor forgotten. If the store can also list patients and their
// latest observations (vigil.PatientStore and vigil.ObservationStore, as
// the embedded store can), New replays each patient's recent values (best
// effort: a failure is logged and leaves the conditions empty) to
// restore pending conditions and the newest applied device time,
// conservatively: the replay never raises or resolves an alert by itself,
// and a restored condition starts no earlier than the oldest replayed
// value, so a restart can delay an alert but never make one fire early.
//
// # Concurrency
//
// An Engine is safe for concurrent use. It holds its one lock while it
// saves an alert transition to the store and publishes it to the hub (the
// hub never blocks and neither calls back into the Engine), so that
// transitions of one alert are stored in the order they happen. Observe
// does work in memory only unless an alert changes state.
package alerting

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/live"
	"github.com/vigil-iomt/vigil/internal/mapping"
	"github.com/vigil-iomt/vigil/internal/rules"
)

// Options configure an Engine. The zero value of each field takes the
// default noted.
type Options struct {
	// Now is Vigil's clock; nil means time.Now.
	Now func() time.Time
	// Thresholds are the rules; nil means DefaultThresholds().
	Thresholds []vigil.Threshold
	// StaleAfter: readings whose device time is older than
	// Now-StaleAfter never raise a new alert. 0 means 10 minutes.
	StaleAfter time.Duration
	// ResolveAfter is the hysteresis: an open alert resolves only after
	// the value has been back in range for this long (device time). 0:
	// at the first in-range value.
	ResolveAfter time.Duration
	// Logger receives alert transitions (alert id, rule, priority; never
	// patient data). nil discards.
	Logger *slog.Logger
	// Registerer receives the engine's metrics; nil means don't register.
	Registerer prometheus.Registerer
	// OfflineAfter returns how long a device may stay silent before a
	// "device silent" alert (0: never, e.g. for home devices that report
	// a few times a day). nil: no offline detection.
	OfflineAfter func(deviceID string) time.Duration
	// Rules are CEL rules in force (compiled with internal/rules), added
	// to those of RuleStore.
	Rules []*rules.Compiled
	// RuleStore keeps the CEL rules: New puts its enabled rules in force
	// and SaveRule saves there. nil: only Rules, and SaveRule refuses.
	RuleStore vigil.RuleStore
	// Table names codes and units in rules and their alerts; nil: the
	// built-in table.
	Table *mapping.Table
	// Escalation is the policy for unacknowledged firing alerts: after
	// Escalation[0] the alert goes to tier 1, after a further
	// Escalation[1] to tier 2, and so on. Tick applies it. nil: none.
	Escalation []time.Duration
}

// DefaultOptions returns the defaults: time.Now, DefaultThresholds, a
// 10-minute StaleAfter, no logging and no metrics registration.
func DefaultOptions() Options {
	return Options{
		Now:        time.Now,
		Thresholds: DefaultThresholds(),
		StaleAfter: 10 * time.Minute,
	}
}

// Store is what the Engine needs from storage: it keeps alerts. A store
// that also implements vigil.PatientStore and vigil.ObservationStore lets
// New restore pending conditions (see the package doc).
type Store interface {
	vigil.AlertStore
}

// restoreSource is the optional part of a store used to restore pending
// conditions after a restart.
type restoreSource interface {
	FindPatients(ctx context.Context, f vigil.PatientFilter) ([]*vigil.Patient, int, error)
	LatestObservations(ctx context.Context, patientID string, codes []string, max int) (map[string][]*vigil.Observation, error)
}

// restoreDepth is how many recent values per code New replays per patient.
const restoreDepth = 128

// maxOpenLoad bounds the open alerts New loads from the store.
const maxOpenLoad = 100_000

// Engine evaluates thresholds on stored readings and keeps the alert
// lifecycle. Create it with New.
type Engine struct {
	store        vigil.AlertStore
	hub          *live.Hub
	now          func() time.Time
	rules        []vigil.Threshold
	byCode       map[string][]int // LOINC code → indexes into rules
	staleAfter   time.Duration
	resolveAfter time.Duration
	offlineAfter func(string) time.Duration
	overrides    map[stateKey]vigil.ThresholdOverride
	seen         map[string]deviceSeen
	escalation   []time.Duration
	log          *slog.Logger

	table     *mapping.Table
	ruleEnv   *rules.Env
	ruleStore vigil.RuleStore
	ruleMu    sync.Mutex // serializes SaveRule
	celRules  []*rules.Compiled
	celByCode map[string][]int // code → indexes into celRules
	windows   *rules.Windows
	unknown   *prometheus.CounterVec

	raised   *prometheus.CounterVec
	latency  prometheus.Histogram
	openG    prometheus.Gauge
	saveErrs prometheus.Counter

	mu       sync.Mutex
	states   map[stateKey]*ruleState
	open     map[string]stateKey // open alert id → its state
	lastNano int64               // time part of the newest alert id issued
}

type stateKey struct{ patient, rule string }

// ruleState is the condition of one (patient, threshold).
type ruleState struct {
	last     time.Time // device time of the newest reading applied
	lastDev  string    // its device and id; both "" after a restore (any reading at last counts as seen)
	lastID   string
	restored bool
	pending  bool
	since    time.Time    // device time the condition began, when pending
	inRange  time.Time    // device time values came back in range while an alert is open (hysteresis)
	open     *vigil.Alert // the open alert; never modified once stored (transitions replace it)
}

// New returns an Engine that stores alerts in store and publishes their
// transitions to hub (nil: publish nowhere). It loads the store's open
// alerts and restores pending conditions (see the package doc). It
// returns EINVALID for a bad threshold, and the store's error if the open
// alerts cannot be loaded.
func New(ctx context.Context, store vigil.AlertStore, hub *live.Hub, opts Options) (*Engine, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Thresholds == nil {
		opts.Thresholds = DefaultThresholds()
	}
	if opts.StaleAfter == 0 {
		opts.StaleAfter = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := validateThresholds(opts.Thresholds); err != nil {
		return nil, fmt.Errorf("alerting thresholds: %w", err)
	}
	e := &Engine{
		store:        store,
		hub:          hub,
		now:          opts.Now,
		rules:        slices.Clone(opts.Thresholds),
		byCode:       make(map[string][]int),
		staleAfter:   opts.StaleAfter,
		escalation:   slices.Clone(opts.Escalation),
		resolveAfter: opts.ResolveAfter,
		offlineAfter: opts.OfflineAfter,
		overrides:    make(map[stateKey]vigil.ThresholdOverride),
		seen:         make(map[string]deviceSeen),
		log:          opts.Logger,
		states:       make(map[stateKey]*ruleState),
		open:         make(map[string]stateKey),
		raised: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_alerts_raised_total",
			Help: "Alerts that fired, by rule and priority.",
		}, []string{"rule", "priority"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_ingest_alert_seconds",
			Help:    "Time from receiving the reading that made an alert fire to the alert firing (stored and published), in seconds.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		openG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_alerts_open",
			Help: "Alerts currently firing or acknowledged.",
		}),
		saveErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_alert_save_errors_total",
			Help: "Alert transitions that could not be stored (retried on the next reading).",
		}),
		unknown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_rule_unknown_total",
			Help: "CEL rule evaluations whose result was unknown (data they read was absent), by rule.",
		}, []string{"rule"}),
		table:     opts.Table,
		ruleStore: opts.RuleStore,
	}
	if e.table == nil {
		e.table = mapping.DefaultTable()
	}
	var err error
	if e.ruleEnv, err = rules.NewEnv(e.table); err != nil {
		return nil, err
	}
	for i, t := range e.rules {
		e.byCode[t.Code] = append(e.byCode[t.Code], i)
	}
	if r := opts.Registerer; r != nil {
		for _, c := range []prometheus.Collector{e.raised, e.latency, e.openG, e.saveErrs, e.unknown} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("register alerting metrics: %w", err)
			}
		}
	}
	if err := e.load(ctx); err != nil {
		return nil, err
	}
	if rs, ok := store.(restoreSource); ok {
		// Best effort: without it, conditions simply start again from
		// the next readings (later alerts, never earlier ones).
		if err := e.restore(ctx, rs); err != nil {
			e.log.Warn("alerting: pending conditions not restored", "err", err)
		}
	}
	celRules := slices.Clone(opts.Rules)
	if e.ruleStore != nil {
		stored, err := e.loadRules(ctx)
		if err != nil {
			return nil, err
		}
		celRules = append(celRules, stored...)
	}
	e.mu.Lock()
	e.installRules(ctx, celRules)
	e.mu.Unlock()
	e.openG.Set(float64(len(e.open)))
	return e, nil
}

// load reads the open alerts and seeds the id clock from the newest alert.
func (e *Engine) load(ctx context.Context) error {
	newest, err := e.store.FindAlerts(ctx, vigil.AlertFilter{Limit: 1})
	if err != nil {
		return fmt.Errorf("load newest alert: %w", err)
	}
	open, err := e.store.FindAlerts(ctx, vigil.AlertFilter{States: []string{vigil.AlertFiring, vigil.AlertAcknowledged}, Limit: maxOpenLoad})
	if err != nil {
		return fmt.Errorf("load open alerts: %w", err)
	}
	for _, a := range append(newest, open...) {
		if n, ok := idNanos(a.ID); ok && n > e.lastNano {
			e.lastNano = n
		}
	}
	for _, a := range open {
		k := stateKey{a.PatientID, a.RuleID}
		st := e.state(k)
		if st.open != nil && st.open.Raised.After(a.Raised) {
			continue // two open alerts for one rule: keep the newer; the older stays ackable through the store
		}
		if st.open != nil {
			delete(e.open, st.open.ID)
		}
		st.open = a
		e.open[a.ID] = k
	}
	return nil
}

// restore replays each patient's latest values to rebuild pending
// conditions, without raising or resolving anything.
func (e *Engine) restore(ctx context.Context, rs restoreSource) error {
	// Stores return systolic and diastolic values as one blood pressure
	// panel with components: ask for the panel instead.
	codes := make([]string, 0, len(e.byCode)+1)
	for c := range e.byCode {
		if c == vigil.LOINCSystolic || c == vigil.LOINCDiastolic {
			c = vigil.LOINCBPPanel
		}
		codes = append(codes, c)
	}
	slices.Sort(codes)
	codes = slices.Compact(codes)
	const page = 500
	for off := 0; ; off += page {
		ps, total, err := rs.FindPatients(ctx, vigil.PatientFilter{Offset: off, Limit: page})
		if err != nil {
			return fmt.Errorf("restore alert state: list patients: %w", err)
		}
		for _, p := range ps {
			latest, err := rs.LatestObservations(ctx, p.ID, codes, restoreDepth)
			if err != nil {
				return fmt.Errorf("restore alert state: latest observations: %w", err)
			}
			e.replay(p.ID, latest)
		}
		if len(ps) == 0 || off+len(ps) >= total {
			return nil
		}
	}
}

// point is one value at one device time.
type point struct {
	t time.Time
	v float64
}

func (e *Engine) replay(patientID string, latest map[string][]*vigil.Observation) {
	series := make(map[string][]point)
	for code, obs := range latest {
		for _, o := range obs {
			if o.Code == vigil.LOINCBPPanel || code == vigil.LOINCBPPanel {
				for _, c := range o.Components {
					series[c.Code] = append(series[c.Code], point{o.Time, c.Value})
				}
				continue
			}
			series[o.Code] = append(series[o.Code], point{o.Time, o.Value})
		}
	}
	for code, pts := range series {
		slices.SortFunc(pts, func(a, b point) int { return a.t.Compare(b.t) })
		pts = slices.CompactFunc(pts, func(a, b point) bool { return a.t.Equal(b.t) })
		for _, i := range e.byCode[code] {
			t := &e.rules[i]
			st := e.state(stateKey{patientID, t.ID})
			for _, p := range pts {
				if p.t.Before(st.last) {
					continue
				}
				st.last, st.lastDev, st.lastID, st.restored = p.t, "", "", true
				if !violates(t, p.v) {
					st.pending = false
				} else if st.open == nil && !st.pending {
					st.pending, st.since = true, p.t
				}
			}
		}
	}
}

func (e *Engine) state(k stateKey) *ruleState {
	st := e.states[k]
	if st == nil {
		st = &ruleState{}
		e.states[k] = st
	}
	return st
}

// Observe evaluates newly stored readings (in any order; each patient's
// readings are taken in device-time order) and makes the resulting alert
// transitions: stored, then published to the hub, before it returns. It
// is called by the ingest pipeline after each durable commit. It never
// blocks on hub subscribers; it waits on the store only when an alert
// changes state. A transition that cannot be stored is logged, counted in
// vigil_alert_save_errors_total and retried on the next reading that
// calls for it.
func (e *Engine) Observe(ctx context.Context, rs []*vigil.Reading) {
	if !slices.IsSortedFunc(rs, byTime) {
		rs = slices.Clone(rs)
		slices.SortStableFunc(rs, byTime)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := false
	for _, r := range rs {
		if r == nil || r.PatientID == "" {
			continue
		}
		e.noteSeen(ctx, r)
		for _, m := range r.Values {
			if m.Textual() {
				continue // thresholds compare numbers
			}
			for _, i := range e.byCode[m.Code] {
				if e.apply(ctx, &e.rules[i], r, m) {
					changed = true
				}
			}
		}
		if e.observeRules(ctx, r) {
			changed = true
		}
	}
	if changed {
		e.openG.Set(float64(len(e.open)))
	}
}

func byTime(a, b *vigil.Reading) int {
	if a == nil || b == nil {
		return 0
	}
	return a.Time.Compare(b.Time)
}

// apply runs one measurement through one threshold (or the patient's
// override of it) and reports whether an alert changed state. e.mu is held.
func (e *Engine) apply(ctx context.Context, t *vigil.Threshold, r *vigil.Reading, m vigil.Measurement) bool {
	k := stateKey{r.PatientID, t.ID}
	t = e.effective(k, t)
	c := cond{id: t.ID, code: t.Code, title: t.Title, priority: t.Priority, wait: t.For}
	s := sample{t: r.Time, dev: r.DeviceID, id: r.ID, received: r.Received, value: m.Value, unit: m.Unit}
	return e.step(ctx, k, c, s, violates(t, m.Value))
}

// effective is the threshold as it applies to the patient: the patient's
// unexpired override of it, or the threshold itself. e.mu is held.
func (e *Engine) effective(k stateKey, t *vigil.Threshold) *vigil.Threshold {
	if o, ok := e.overrides[k]; ok && e.now().Before(o.Expires) {
		return &vigil.Threshold{ID: t.ID, Code: t.Code, Below: o.Below, Above: o.Above, For: t.For, Priority: t.Priority, Title: t.Title + " (patient-specific limit)"}
	}
	return t
}

// Thresholds returns the threshold rules as they apply to the patient now
// (with the patient's unexpired overrides), for charts.
func (e *Engine) Thresholds(patientID string) []vigil.Threshold {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]vigil.Threshold, 0, len(e.rules))
	for i := range e.rules {
		out = append(out, *e.effective(stateKey{patientID, e.rules[i].ID}, &e.rules[i]))
	}
	return out
}

// cond is the rule a step advances.
type cond struct {
	id, code, title, priority string
	wait                      time.Duration // the rule's For
}

// sample is what one evaluation saw.
type sample struct {
	t        time.Time // device time (Vigil's clock for a clock evaluation)
	dev, id  string    // the reading's device and id; "" for a clock evaluation
	clock    bool      // evaluated on the clock, not on a reading
	received time.Time
	value    float64
	unit     string
	detail   func() string // explains a firing alert; nil: none
}

// step advances the condition of one (patient, rule) with one evaluation
// (violating: the condition holds) and reports whether an alert changed
// state. It is the one lifecycle of thresholds and CEL rules: pending,
// firing after the rule's For, one open alert, hysteresis, no new alert
// from late data, out-of-order and repeated readings ignored. e.mu is held.
func (e *Engine) step(ctx context.Context, k stateKey, c cond, s sample, violating bool) bool {
	st := e.state(k)
	if !s.clock {
		switch {
		case s.t.Before(st.last):
			return false // older than what this rule has seen: out of order
		case s.t.Equal(st.last) && (st.restored || st.lastDev == s.dev && st.lastID == s.id):
			return false // the same reading again, or one a restore already replayed
		}
		st.last, st.lastDev, st.lastID, st.restored = s.t, s.dev, s.id, false
	}
	if !violating {
		st.pending = false
		if st.open == nil {
			return false
		}
		if st.inRange.IsZero() {
			st.inRange = s.t
		}
		if s.t.Sub(st.inRange) < e.resolveAfter {
			return false // hysteresis: back in range, not yet for long enough
		}
		st.inRange = time.Time{}
		return e.resolve(ctx, k, st)
	}
	st.inRange = time.Time{}
	if st.open != nil {
		return false // one open alert per patient and rule
	}
	if !st.pending {
		st.pending, st.since = true, s.t
	}
	if s.t.Sub(st.since) < c.wait {
		return false
	}
	now := e.now().UTC()
	if s.t.Before(now.Add(-e.staleAfter)) {
		return false // late data never raises a new alert; stays pending
	}
	a := &vigil.Alert{
		ID:        e.newID(now),
		PatientID: k.patient,
		RuleID:    c.id,
		Code:      c.code,
		Title:     c.title,
		Priority:  c.priority,
		State:     vigil.AlertFiring,
		Value:     s.value,
		Unit:      s.unit,
		Since:     st.since,
		Raised:    now,
		Updated:   now,
		ReadingID: s.id,
		History:   []vigil.AlertEvent{{Time: now, State: vigil.AlertFiring}},
	}
	if s.detail != nil {
		a.Detail = s.detail()
	}
	if err := e.store.SaveAlert(ctx, a); err != nil {
		e.saveErrs.Inc()
		e.log.Error("store fired alert", "alert", a.ID, "rule", c.id, "err", err)
		return false // still pending: the next violating evaluation retries
	}
	st.pending, st.open = false, a
	e.open[a.ID] = k
	e.raised.WithLabelValues(c.id, c.priority).Inc()
	if !s.received.IsZero() {
		e.latency.Observe(e.now().Sub(s.received).Seconds())
	}
	e.publish(a)
	e.log.Info("alert firing", "alert", a.ID, "rule", c.id, "priority", c.priority)
	return true
}

// resolve stores and publishes the resolution of st.open. e.mu is held.
func (e *Engine) resolve(ctx context.Context, k stateKey, st *ruleState) bool {
	return e.resolveNote(ctx, k, st, "")
}

// resolveNote is resolve with a note in the history saying why.
func (e *Engine) resolveNote(ctx context.Context, k stateKey, st *ruleState, note string) bool {
	now := e.now().UTC()
	a := cloneAlert(st.open)
	a.State, a.Updated = vigil.AlertResolved, now
	a.History = append(a.History, vigil.AlertEvent{Time: now, State: vigil.AlertResolved, Note: note})
	if err := e.store.SaveAlert(ctx, a); err != nil {
		e.saveErrs.Inc()
		e.log.Error("store resolved alert", "alert", a.ID, "rule", k.rule, "err", err)
		return false // still open: the next in-range reading retries
	}
	delete(e.open, a.ID)
	st.open = nil
	e.publish(a)
	e.log.Info("alert resolved", "alert", a.ID, "rule", k.rule)
	return true
}

func (e *Engine) publish(a *vigil.Alert) {
	if e.hub != nil {
		e.hub.Publish(live.Event{Type: live.TypeAlert, PatientID: a.PatientID, Time: a.Updated, Data: a})
	}
}

// Alerts returns the stored alerts matching f, newest Raised first. The
// returned alerts are the caller's to keep but must not be modified.
func (e *Engine) Alerts(ctx context.Context, f vigil.AlertFilter) ([]*vigil.Alert, error) {
	as, err := e.store.FindAlerts(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("find alerts: %w", err)
	}
	return as, nil
}

// Acknowledge records that user by has seen the alert with id, with an
// optional note: a firing alert becomes acknowledged, with a history
// entry (time, state, by, note), stored and published. Acknowledging an
// acknowledged alert again changes nothing and returns it. It returns
// ENOTFOUND for an unknown alert, EINVALID for a resolved one or an empty
// by, and the store's error if the transition cannot be stored.
func (e *Engine) Acknowledge(ctx context.Context, id, by, note string) (*vigil.Alert, error) {
	if by == "" {
		return nil, vigil.Errorf(vigil.EINVALID, "acknowledging an alert needs the user who does it")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	k, ok := e.open[id]
	if !ok {
		a, err := e.store.FindAlertByID(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("acknowledge alert %s: %w", id, err)
		}
		if !a.Open() {
			return nil, vigil.Errorf(vigil.EINVALID, "alert %s is %s and can no longer be acknowledged", id, a.State)
		}
		// Open in the store but not the current alert of its rule (a
		// duplicate from an older version); acknowledge it in the store.
		return e.ack(ctx, a, by, note, nil)
	}
	st := e.states[k]
	if st.open.State == vigil.AlertAcknowledged {
		return st.open, nil
	}
	return e.ack(ctx, st.open, by, note, st)
}

func (e *Engine) ack(ctx context.Context, cur *vigil.Alert, by, note string, st *ruleState) (*vigil.Alert, error) {
	now := e.now().UTC()
	a := cloneAlert(cur)
	a.State, a.Updated = vigil.AlertAcknowledged, now
	a.History = append(a.History, vigil.AlertEvent{Time: now, State: vigil.AlertAcknowledged, By: by, Note: note})
	if err := e.store.SaveAlert(ctx, a); err != nil {
		return nil, fmt.Errorf("store acknowledged alert %s: %w", a.ID, err)
	}
	if st != nil {
		st.open = a
	}
	e.publish(a)
	e.log.Info("alert acknowledged", "alert", a.ID, "rule", a.RuleID)
	return a, nil
}

// cloneAlert copies a, including its history.
func cloneAlert(a *vigil.Alert) *vigil.Alert {
	b := *a
	b.History = slices.Clone(a.History)
	return &b
}

// newID returns a unique, time-ordered alert id: 16 hex digits of Unix
// nanoseconds (strictly increasing within the process, and after the
// newest stored id) and 8 random hex digits. e.mu is held.
func (e *Engine) newID(now time.Time) string {
	n := max(now.UnixNano(), e.lastNano+1)
	e.lastNano = n
	var rnd [4]byte
	_, _ = rand.Read(rnd[:]) // crypto/rand.Read never fails
	return fmt.Sprintf("%016x%s", n, hex.EncodeToString(rnd[:]))
}

// idNanos returns the time part of an id made by newID.
func idNanos(id string) (int64, bool) {
	if len(id) < 16 {
		return 0, false
	}
	n, err := strconv.ParseInt(id[:16], 16, 64)
	return n, err == nil
}
