package alerting

import (
	"context"
	"fmt"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Snooze silences an open alert until d from now: it does not escalate,
// and when the snooze ends while the alert is still open it fires again
// (notifying anew). It returns ENOTFOUND for an unknown alert and
// EINVALID for a resolved one or a duration outside 1 minute to 24 hours.
func (e *Engine) Snooze(ctx context.Context, id, by string, d time.Duration, note string) (*vigil.Alert, error) {
	if by == "" {
		return nil, vigil.Errorf(vigil.EINVALID, "snoozing an alert needs the user who does it")
	}
	if d < time.Minute || d > 24*time.Hour {
		return nil, vigil.FieldErrorf("duration", "invalid", "a snooze lasts from 1 minute to 24 hours")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	st, err := e.openState(ctx, id)
	if err != nil {
		return nil, err
	}
	now := e.now().UTC()
	a := cloneAlert(st.open)
	a.SnoozedUntil, a.Updated = now.Add(d), now
	a.History = append(a.History, vigil.AlertEvent{Time: now, State: vigil.EventSnoozed, By: by, Note: noteOr(note, "until "+a.SnoozedUntil.Format(time.RFC3339))})
	if err := e.store.SaveAlert(ctx, a); err != nil {
		return nil, fmt.Errorf("store snoozed alert %s: %w", a.ID, err)
	}
	st.open = a
	e.publish(a)
	return a, nil
}

// MaxTier bounds escalation by hand: tiers past the policy's last one
// (the rapid-response team, say) still count, up to this.
const MaxTier = 9

// Escalate raises an open alert one tier by hand: a nurse asks for the
// next tier's help without waiting for the escalation policy. A snooze is
// cancelled (the alert needs attention now); the state is kept. It
// returns ENOTFOUND for an unknown alert and EINVALID for a resolved one
// or one already at MaxTier.
func (e *Engine) Escalate(ctx context.Context, id, by, note string) (*vigil.Alert, error) {
	if by == "" {
		return nil, vigil.Errorf(vigil.EINVALID, "escalating an alert needs the user who does it")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	st, err := e.openState(ctx, id)
	if err != nil {
		return nil, err
	}
	if st.open.Tier >= MaxTier {
		return nil, vigil.Errorf(vigil.EINVALID, "alert %s is already at the highest tier (%d)", id, MaxTier)
	}
	now := e.now().UTC()
	a := cloneAlert(st.open)
	a.Tier, a.SnoozedUntil, a.Updated = st.open.Tier+1, time.Time{}, now
	a.History = append(a.History, vigil.AlertEvent{Time: now, State: vigil.EventEscalated, By: by,
		Note: noteOr(note, fmt.Sprintf("escalated by hand to tier %d", a.Tier))})
	if err := e.store.SaveAlert(ctx, a); err != nil {
		return nil, fmt.Errorf("store escalated alert %s: %w", a.ID, err)
	}
	st.open = a
	e.publish(a)
	e.log.Warn("alert escalated by hand", "alert", a.ID, "rule", a.RuleID, "tier", a.Tier)
	return a, nil
}

// openState returns the rule state of the open alert with id: ENOTFOUND
// for an unknown alert, EINVALID for one that is no longer open. e.mu is
// held.
func (e *Engine) openState(ctx context.Context, id string) (*ruleState, error) {
	k, ok := e.open[id]
	if !ok {
		if _, err := e.store.FindAlertByID(ctx, id); err != nil {
			return nil, err
		}
		return nil, vigil.Errorf(vigil.EINVALID, "alert %s is not open", id)
	}
	return e.states[k], nil
}

func noteOr(note, def string) string {
	if note != "" {
		return note
	}
	return def
}

// Tick applies the timers at now: snoozes that ended make their alert
// fire again, and firing alerts left unacknowledged escalate one tier at
// a time per the escalation policy. The node calls it every second; tests
// call it with their clock.
func (e *Engine) Tick(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now().UTC()
	e.checkOffline(ctx, now)
	e.tickRules(ctx, now)
	for _, k := range e.open {
		st := e.states[k]
		if st == nil || st.open == nil {
			continue
		}
		cur := st.open
		switch {
		case !cur.SnoozedUntil.IsZero() && !now.Before(cur.SnoozedUntil):
			a := cloneAlert(cur)
			a.SnoozedUntil, a.State, a.Updated = time.Time{}, vigil.AlertFiring, now
			a.History = append(a.History, vigil.AlertEvent{Time: now, State: vigil.EventWoke, Note: "snooze ended; the condition is still open"})
			e.save(ctx, st, a)
		case cur.SnoozedUntil.IsZero() && cur.State == vigil.AlertFiring && cur.Tier < len(e.escalation):
			due := cur.Raised
			for i := 0; i <= cur.Tier; i++ {
				due = due.Add(e.escalation[i])
			}
			if now.Before(due) {
				continue
			}
			a := cloneAlert(cur)
			a.Tier, a.Updated = cur.Tier+1, now
			a.History = append(a.History, vigil.AlertEvent{Time: now, State: vigil.EventEscalated, Note: fmt.Sprintf("unacknowledged: escalated to tier %d", a.Tier)})
			e.save(ctx, st, a)
			e.log.Warn("alert escalated", "alert", a.ID, "rule", a.RuleID, "tier", a.Tier)
		}
	}
}

// save stores and publishes a transition made by Tick; on failure the
// next tick retries. e.mu is held.
func (e *Engine) save(ctx context.Context, st *ruleState, a *vigil.Alert) {
	if err := e.store.SaveAlert(ctx, a); err != nil {
		e.saveErrs.Inc()
		e.log.Error("store alert transition", "alert", a.ID, "err", err)
		return
	}
	st.open = a
	e.publish(a)
}
