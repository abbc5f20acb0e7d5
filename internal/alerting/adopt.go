package alerting

import (
	"context"
	"fmt"
	"slices"

	"github.com/vigil-iomt/vigil"
)

// Adopt reconciles an alert that the edge gateway edge raised while its
// link to this server was down (the edge's own record, a) with this
// engine's alerts, and returns the alert that now stands for it here:
//
//   - If this engine has an open alert for the same patient and rule (it
//     raised its own from the forwarded readings), the edge's alert is
//     merged into it: a note names the edge's alert, and the edge's
//     acknowledgement (by edge/user) acknowledges ours if it still fires.
//   - Otherwise the edge's alert is kept as it is under an id of its own
//     (Origin and EdgeID say where it came from), and, while it is open,
//     it becomes this engine's open alert of its rule: no second alert is
//     raised for the same condition, and the next reading back in range
//     resolves it. Sent again with a later state (acknowledged or
//     resolved at the edge), the kept copy follows.
//
// Adopting the same edge alert again changes nothing.
func (e *Engine) Adopt(ctx context.Context, edge string, a *vigil.Alert) (*vigil.Alert, error) {
	if edge == "" || a == nil || a.ID == "" || a.PatientID == "" || a.RuleID == "" {
		return nil, vigil.FieldErrorf("alert", "required", "an edge alert needs its id, patient and rule")
	}
	switch a.State {
	case vigil.AlertFiring, vigil.AlertAcknowledged, vigil.AlertResolved:
	default:
		return nil, vigil.FieldErrorf("state", "invalid", "alert state %q: firing, acknowledged or resolved", a.State)
	}
	tag := fmt.Sprintf("edge alert %s/%s", edge, a.ID)
	e.mu.Lock()
	defer e.mu.Unlock()
	k := stateKey{a.PatientID, a.RuleID}
	st := e.state(k)

	// Merge into our own open alert of the rule.
	if st.open != nil && st.open.Origin == "" {
		cur := cloneAlert(st.open)
		changed := false
		if !slices.ContainsFunc(cur.History, func(h vigil.AlertEvent) bool { return h.Note == "also raised at the edge: "+tag }) {
			cur.History = append(cur.History, vigil.AlertEvent{Time: e.now().UTC(), State: cur.State, Note: "also raised at the edge: " + tag})
			changed = true
		}
		if ack := edgeAck(a); ack != nil && cur.State == vigil.AlertFiring {
			cur.State = vigil.AlertAcknowledged
			cur.History = append(cur.History, vigil.AlertEvent{Time: ack.Time, State: vigil.AlertAcknowledged, By: edge + "/" + ack.By,
				Note: "acknowledged at the edge: " + ack.Note})
			changed = true
		}
		if !changed {
			return st.open, nil
		}
		cur.Updated = e.now().UTC()
		if err := e.store.SaveAlert(ctx, cur); err != nil {
			return nil, fmt.Errorf("store merged alert %s: %w", cur.ID, err)
		}
		st.open = cur
		e.publish(cur)
		return cur, nil
	}

	// Keep the edge's alert as it stands there.
	id := "edge-" + edge + "-" + a.ID
	old, err := e.store.FindAlertByID(ctx, id)
	if err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
		return nil, err
	}
	if old != nil && !old.Open() {
		return old, nil // resolved here already; the edge's record is history
	}
	edgeHistory := make([]vigil.AlertEvent, len(a.History))
	for i, h := range a.History {
		if h.By != "" {
			h.By = edge + "/" + h.By
		}
		edgeHistory[i] = h
	}
	cp := cloneAlert(a)
	cp.ID, cp.Origin, cp.EdgeID = id, edge, a.ID
	if old == nil {
		cp.History = append([]vigil.AlertEvent{{Time: a.Raised, State: vigil.AlertFiring, Note: "raised at edge gateway " + edge + " while its link to this server was down"}}, edgeHistory...)
	} else {
		// What happened here stays; what is new at the edge is added.
		cp.History = slices.Clone(old.History)
		for _, h := range edgeHistory {
			if !slices.Contains(cp.History, h) {
				cp.History = append(cp.History, h)
			}
		}
		if len(cp.History) == len(old.History) {
			return old, nil
		}
		if rank(old.State) > rank(cp.State) {
			cp.State = old.State
		}
	}
	cp.Updated = e.now().UTC()
	if err := e.store.SaveAlert(ctx, cp); err != nil {
		return nil, fmt.Errorf("store edge alert %s: %w", id, err)
	}
	switch {
	case cp.Open() && (st.open == nil || st.open.ID == id):
		st.open = cp
		e.open[id] = k
	case !cp.Open() && st.open != nil && st.open.ID == id:
		st.open = nil
		delete(e.open, id)
	}
	e.openG.Set(float64(len(e.open)))
	e.publish(cp)
	return cp, nil
}

// edgeAck is the acknowledgement in an edge alert's history, if any.
func edgeAck(a *vigil.Alert) *vigil.AlertEvent {
	for i := range a.History {
		if a.History[i].State == vigil.AlertAcknowledged && a.History[i].By != "" {
			return &a.History[i]
		}
	}
	return nil
}

// rank orders alert states by how far along they are.
func rank(state string) int {
	switch state {
	case vigil.AlertAcknowledged:
		return 1
	case vigil.AlertResolved:
		return 2
	}
	return 0
}
