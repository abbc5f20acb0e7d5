package alerting

import (
	"context"
	"fmt"
	"time"

	"github.com/vigil-iomt/vigil"
)

// OfflineAlarmID is the alarm id of "device silent" alerts: their rule is
// "device:{device id}:offline".
const OfflineAlarmID = "offline"

type deviceSeen struct {
	patient string
	last    time.Time // Vigil's receive time of the newest reading
}

// noteSeen records a device's reading for offline detection and resolves
// an open offline alert. e.mu is held.
func (e *Engine) noteSeen(ctx context.Context, r *vigil.Reading) {
	if e.offlineAfter == nil || r.DeviceID == "" {
		return
	}
	at := r.Received
	if at.IsZero() {
		at = e.now()
	}
	prev, ok := e.seen[r.DeviceID]
	if ok && prev.last.After(at) {
		return
	}
	e.seen[r.DeviceID] = deviceSeen{patient: r.PatientID, last: at}
	k := stateKey{r.PatientID, DeviceRulePrefix + r.DeviceID + ":" + OfflineAlarmID}
	if st := e.states[k]; st != nil && st.open != nil {
		e.resolve(ctx, k, st)
	}
	if ok && prev.patient != r.PatientID { // the device moved: the old patient's alarm ends
		k := stateKey{prev.patient, DeviceRulePrefix + r.DeviceID + ":" + OfflineAlarmID}
		if st := e.states[k]; st != nil && st.open != nil {
			e.resolve(ctx, k, st)
		}
	}
}

// checkOffline raises "device silent" alerts. e.mu is held.
func (e *Engine) checkOffline(ctx context.Context, now time.Time) {
	if e.offlineAfter == nil {
		return
	}
	for dev, s := range e.seen {
		d := e.offlineAfter(dev)
		if d <= 0 || now.Sub(s.last) < d {
			continue
		}
		_, _ = e.deviceAlarmLocked(ctx, DeviceAlarm{
			PatientID: s.patient, DeviceID: dev, AlarmID: OfflineAlarmID,
			Title:    fmt.Sprintf("Device %s silent for %s: check the device and its connection", dev, now.Sub(s.last).Round(time.Minute)),
			Priority: vigil.PriorityMedium, Time: now, Active: true,
		})
	}
}
