package alerting

import (
	"context"
	"time"

	"github.com/vigil-iomt/vigil"
)

// DeviceAlarm is an alarm a device raised itself, for example an IHE PCD
// ACM ORU^R40 from a bedside monitor. Its lifecycle follows the device:
// an active alarm fires (once per AlarmID), an inactive one resolves it.
type DeviceAlarm struct {
	PatientID string
	DeviceID  string
	AlarmID   string // the device's identifier of this alarm, stable from start to end
	Code      string // what it is about: a LOINC code when known, else the device's event code
	Title     string
	Detail    string // why, in words (optional)
	Priority  string // vigil.PriorityHigh, Medium or Low
	Value     float64
	Unit      string
	Time      time.Time // device time of this phase
	Received  time.Time
	Active    bool
}

// DeviceRulePrefix starts the rule id of alerts raised from device alarms:
// "device:{device id}:{alarm id}".
const DeviceRulePrefix = "device:"

// DeviceAlarm applies a device's alarm phase: it raises a firing alert for
// a new active alarm, leaves an open one as it is (continuing), and
// resolves the open one when the alarm ends. It returns the alert
// (nil when nothing changed) after it is stored.
func (e *Engine) DeviceAlarm(ctx context.Context, d DeviceAlarm) (*vigil.Alert, error) {
	switch d.Priority {
	case vigil.PriorityHigh, vigil.PriorityMedium, vigil.PriorityLow:
	default:
		return nil, vigil.FieldErrorf("priority", "invalid", "alarm priority %q: use high, medium or low", d.Priority)
	}
	if d.PatientID == "" || d.DeviceID == "" || d.AlarmID == "" {
		return nil, vigil.FieldErrorf("alarm", "required", "a device alarm needs a patient, a device and an alarm id")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.deviceAlarmLocked(ctx, d)
}

// deviceAlarmLocked is DeviceAlarm with e.mu held.
func (e *Engine) deviceAlarmLocked(ctx context.Context, d DeviceAlarm) (*vigil.Alert, error) {
	k := stateKey{d.PatientID, DeviceRulePrefix + d.DeviceID + ":" + d.AlarmID}
	st := e.state(k)
	if !d.Active {
		if st.open == nil {
			return nil, nil // ended before it started here, or already resolved
		}
		id := st.open.ID
		if !e.resolve(ctx, k, st) {
			return nil, vigil.Errorf(vigil.EUNAVAILABLE, "the alert could not be stored")
		}
		return e.store.FindAlertByID(ctx, id)
	}
	if st.open != nil {
		return nil, nil // the alarm continues
	}
	now := e.now().UTC()
	a := &vigil.Alert{
		ID:        e.newID(now),
		PatientID: d.PatientID,
		RuleID:    k.rule,
		Code:      d.Code,
		Title:     d.Title,
		Priority:  d.Priority,
		State:     vigil.AlertFiring,
		Value:     d.Value,
		Unit:      d.Unit,
		Since:     d.Time.UTC(),
		Raised:    now,
		Updated:   now,
		ReadingID: d.AlarmID,
		Detail:    d.Detail,
		History:   []vigil.AlertEvent{{Time: now, State: vigil.AlertFiring, Note: "raised by device " + d.DeviceID}},
	}
	if err := e.store.SaveAlert(ctx, a); err != nil {
		e.saveErrs.Inc()
		e.log.Error("store device alarm", "alert", a.ID, "rule", k.rule, "err", err)
		return nil, vigil.Errorf(vigil.EUNAVAILABLE, "the alert could not be stored")
	}
	st.open = a
	e.open[a.ID] = k
	e.raised.WithLabelValues("device-alarm", d.Priority).Inc()
	if !d.Received.IsZero() {
		e.latency.Observe(e.now().Sub(d.Received).Seconds())
	}
	e.publish(a)
	e.log.Info("device alarm firing", "alert", a.ID, "rule", k.rule, "priority", d.Priority)
	return cloneAlert(a), nil
}
