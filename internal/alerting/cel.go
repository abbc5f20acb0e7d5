package alerting

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/rules"
)

// CEL rules (internal/rules) run through the same lifecycle as
// thresholds (step): each stored reading adds its values to the
// patient's windows, then every enabled rule that reads one of the
// reading's codes is evaluated at the reading's device time. Rules whose
// result can change with time alone (age, missing, alarm) are also
// evaluated by Tick at Vigil's clock, for every patient with kept values.
// An evaluation whose result is unknown (data absent) changes nothing and
// is counted in vigil_rule_unknown_total.

// installRules makes rs the rule set (e.mu held): removed or disabled
// rules resolve their open alerts, windows are resized and, from a store
// that can, filled with the history the rules read.
func (e *Engine) installRules(ctx context.Context, rs []*rules.Compiled) {
	keep := map[string]bool{}
	for _, c := range rs {
		keep[c.Rule.ID] = true
	}
	for _, c := range e.celRules {
		if keep[c.Rule.ID] {
			continue
		}
		for k, st := range e.states {
			if k.rule != c.Rule.ID {
				continue
			}
			if st.open != nil {
				e.resolveNote(ctx, k, st, "rule "+c.Rule.ID+" was disabled or removed")
			}
			delete(e.states, k)
		}
	}
	before := map[string]time.Duration{}
	for _, c := range e.celRules {
		for code, d := range c.Windows {
			before[code] = max(before[code], d)
		}
	}
	e.celRules = rs
	e.celByCode = map[string][]int{}
	for i, c := range rs {
		for _, code := range c.Codes {
			e.celByCode[code] = append(e.celByCode[code], i)
		}
	}
	if e.windows == nil {
		e.windows = rules.NewWindows(rs)
	} else {
		e.windows.Resize(rs)
	}
	grown := map[string]time.Duration{}
	for _, c := range rs {
		for code, d := range c.Windows {
			if old, ok := before[code]; !ok || d > old {
				grown[code] = max(grown[code], d)
			}
		}
	}
	if ws, ok := e.store.(BacktestSource); ok && len(grown) > 0 {
		if err := e.fillWindows(ctx, ws, grown); err != nil {
			e.log.Warn("alerting: rule windows not filled from history; they fill from new readings", "err", err)
		}
	}
}

// fillWindows loads, per patient, the stored values of codes over their
// window (the newest value for a window of 0). e.mu is held.
func (e *Engine) fillWindows(ctx context.Context, ws BacktestSource, codes map[string]time.Duration) error {
	now := e.now()
	const page = 500
	for off := 0; ; off += page {
		ps, total, err := ws.FindPatients(ctx, vigil.PatientFilter{Offset: off, Limit: page})
		if err != nil {
			return fmt.Errorf("list patients: %w", err)
		}
		for _, p := range ps {
			for code, d := range codes {
				if err := e.fillSeries(ctx, ws, p.ID, code, d, now); err != nil {
					return err
				}
			}
		}
		if len(ps) == 0 || off+len(ps) >= total {
			return nil
		}
	}
}

func (e *Engine) fillSeries(ctx context.Context, ws BacktestSource, patient, code string, d time.Duration, now time.Time) error {
	f := vigil.ObservationFilter{PatientID: patient, Codes: []string{code}, From: now.Add(-d), Limit: 1000}
	if code == vigil.LOINCSystolic || code == vigil.LOINCDiastolic {
		f.Codes = []string{vigil.LOINCBPPanel}
	}
	if d == 0 {
		f.From, f.Desc, f.Limit = time.Time{}, true, 1
	}
	for n := 0; n < rules.MaxPoints; {
		obs, next, err := ws.FindObservations(ctx, f)
		if err != nil {
			return fmt.Errorf("observations of %s: %w", code, err)
		}
		for _, o := range obs {
			for _, m := range append([]vigil.Measurement{{Code: o.Code, Value: o.Value}}, o.Components...) {
				if m.Code == code {
					e.windows.Add(patient, code, o.Time, m.Value)
				}
			}
		}
		n += len(obs)
		if next == "" || d == 0 {
			return nil
		}
		f.Cursor = next
	}
	return nil
}

// observeRules adds r's values to the windows and evaluates the rules
// that read them. e.mu is held.
func (e *Engine) observeRules(ctx context.Context, r *vigil.Reading) bool {
	if len(e.celRules) == 0 {
		return false
	}
	var due []int
	for _, m := range r.Values {
		if m.Textual() {
			continue // rules read numbers
		}
		e.windows.Add(r.PatientID, m.Code, r.Time, m.Value)
		due = append(due, e.celByCode[m.Code]...)
	}
	slices.Sort(due)
	changed := false
	for _, i := range slices.Compact(due) {
		s := sample{t: r.Time, dev: r.DeviceID, id: r.ID, received: r.Received}
		changed = e.evalRule(ctx, e.celRules[i], r.PatientID, s) || changed
	}
	return changed
}

// tickRules evaluates the timed rules at now. e.mu is held.
func (e *Engine) tickRules(ctx context.Context, now time.Time) {
	for _, c := range e.celRules {
		if !c.Timed {
			continue
		}
		for _, p := range e.windows.Patients() {
			e.evalRule(ctx, c, p, sample{t: now, clock: true})
		}
	}
}

// evalRule evaluates one rule for one patient and steps its lifecycle.
func (e *Engine) evalRule(ctx context.Context, c *rules.Compiled, patient string, s sample) bool {
	v := patientView{e: e, patient: patient}
	ok, err := c.Eval(v, s.t)
	if err != nil {
		e.unknown.WithLabelValues(c.Rule.ID).Inc()
		return false // unknown: neither start, extend nor end the condition
	}
	code := ""
	if len(c.Codes) > 0 {
		code = c.Codes[0]
		if ps := e.windows.Series(patient, code); len(ps) > 0 {
			s.value = ps[len(ps)-1].V
			if d, known := e.table.Lookup(code); known {
				s.unit = d.Unit
			}
		}
	}
	s.detail = func() string { return c.Explain(v, s.t, e.table) }
	cd := cond{id: c.Rule.ID, code: code, title: c.Rule.Title, priority: c.Rule.Priority, wait: c.Rule.For()}
	return e.step(ctx, stateKey{patient, c.Rule.ID}, cd, s, ok)
}

// patientView is one patient's data as a rule sees it. e.mu is held
// while it is used.
type patientView struct {
	e       *Engine
	patient string
}

func (v patientView) Series(code string) []rules.Point { return v.e.windows.Series(v.patient, code) }

// Alarm reports whether a device alarm (not a "device silent" alert, nor
// one Vigil raises itself such as NEWS2 or a baseline anomaly) is open
// for the patient, about code when code is not "".
func (v patientView) Alarm(code string) bool {
	for _, k := range v.e.open {
		if k.patient != v.patient || !strings.HasPrefix(k.rule, DeviceRulePrefix) || strings.HasSuffix(k.rule, ":"+OfflineAlarmID) ||
			strings.HasPrefix(k.rule, DeviceRulePrefix+"vigil-") {
			continue
		}
		if st := v.e.states[k]; st != nil && st.open != nil && (code == "" || st.open.Code == code) {
			return true
		}
	}
	return false
}

// Rules returns the rules in force.
func (e *Engine) Rules() []vigil.Rule {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]vigil.Rule, len(e.celRules))
	for i, c := range e.celRules {
		out[i] = c.Rule
	}
	return out
}

// SaveRule validates r, stores it as the rule's next version (who saved
// it and why: the audit trail) and puts it in force — or out of force
// when it is disabled, resolving its open alerts. Errors are StoreRule's.
func (e *Engine) SaveRule(ctx context.Context, r vigil.Rule) (*vigil.Rule, error) {
	if e.ruleStore == nil {
		return nil, vigil.Errorf(vigil.EUNAVAILABLE, "this engine keeps no rules")
	}
	e.ruleMu.Lock()
	defer e.ruleMu.Unlock()
	saved, c, err := StoreRule(ctx, e.ruleStore, e.ruleEnv, r)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	next := slices.DeleteFunc(slices.Clone(e.celRules), func(x *rules.Compiled) bool { return x.Rule.ID == r.ID })
	if saved.Enabled {
		next = append(next, c)
		slices.SortFunc(next, func(a, b *rules.Compiled) int { return strings.Compare(a.Rule.ID, b.Rule.ID) })
	}
	e.installRules(ctx, next)
	e.log.Info("rule saved", "rule", saved.ID, "version", saved.Version, "enabled", saved.Enabled, "by", saved.SavedBy)
	return saved, nil
}

// StoreRule validates r with env and stores it in rs as the rule's next
// version, without putting it in force (a running engine's SaveRule
// does both; a stopped node loads it at start). It returns EINVALID with
// the field and, for the expression, where and what is wrong; and
// EINVALID when a change to an existing rule has no note.
func StoreRule(ctx context.Context, rs vigil.RuleStore, env *rules.Env, r vigil.Rule) (*vigil.Rule, *rules.Compiled, error) {
	c, err := env.Compile(r)
	if err != nil {
		return nil, nil, err
	}
	if _, err := rs.FindRule(ctx, r.ID, 0); err == nil && strings.TrimSpace(r.Note) == "" {
		return nil, nil, vigil.FieldErrorf("note", "required", "changing rule %s needs a note saying why (it is kept in the rule's history)", r.ID)
	} else if err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
		return nil, nil, err
	}
	if err := rs.SaveRule(ctx, &r); err != nil {
		return nil, nil, fmt.Errorf("save rule %s: %w", r.ID, err)
	}
	c.Rule = r
	return &r, c, nil
}

// loadRules compiles the enabled rules of the rule store. A stored rule
// that no longer compiles is logged and left out (it was valid when
// saved; the language changed under it).
func (e *Engine) loadRules(ctx context.Context) ([]*rules.Compiled, error) {
	rs, err := e.ruleStore.FindRules(ctx)
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	var out []*rules.Compiled
	for _, r := range rs {
		if !r.Enabled {
			continue
		}
		c, err := e.ruleEnv.Compile(*r)
		if err != nil {
			e.log.Error("rule left out: it does not compile", "rule", r.ID, "version", r.Version, "err", err)
			continue
		}
		out = append(out, c)
	}
	return out, nil
}
