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
	patient   string
	last      time.Time // Vigil's receive time of the newest reading
	battery   float64   // percent; valid when batteryAt is set
	batteryAt time.Time // device time of the newest battery report
	// offlineRule is the rule id of the device's silence alarm, made once
	// rather than for every reading.
	offlineRule string
}

// Battery alerts: a device reporting BatteryLow percent or less raises a
// low-priority technical alert "device:{id}:battery-low", resolved when
// it reports BatteryOK percent or more (charged or replaced).
const (
	BatteryAlarmID = "battery-low"
	BatteryLow     = 20
	BatteryOK      = 30
)

// DeviceStatus is what Vigil last heard from a device since it started.
type DeviceStatus struct {
	Device    string     `json:"device"`
	Patient   string     `json:"patient,omitempty"`
	LastSeen  time.Time  `json:"lastSeen"`
	Battery   *float64   `json:"battery,omitempty"`
	BatteryAt *time.Time `json:"batteryAt,omitempty"`
}

// DeviceStatus returns the device's last reading time and battery, and
// false when it has not reported since Vigil started.
func (e *Engine) DeviceStatus(id string) (DeviceStatus, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.seen[id]
	if !ok {
		return DeviceStatus{}, false
	}
	st := DeviceStatus{Device: id, Patient: s.patient, LastSeen: s.last}
	if !s.batteryAt.IsZero() {
		b, at := s.battery, s.batteryAt
		st.Battery, st.BatteryAt = &b, &at
	}
	return st, true
}

// noteSeen records a device's reading for offline detection and resolves
// an open offline alert. e.mu is held.
func (e *Engine) noteSeen(ctx context.Context, r *vigil.Reading) {
	if r.DeviceID == "" {
		return
	}
	e.noteBattery(ctx, r)
	at := r.Received
	if at.IsZero() {
		at = e.now()
	}
	prev, ok := e.seen[r.DeviceID]
	if ok && prev.last.After(at) {
		return
	}
	cur := prev
	cur.patient, cur.last = r.PatientID, at
	if cur.offlineRule == "" {
		cur.offlineRule = DeviceRulePrefix + r.DeviceID + ":" + OfflineAlarmID
	}
	e.seen[r.DeviceID] = cur
	if e.offlineAfter == nil {
		return
	}
	k := stateKey{r.PatientID, cur.offlineRule}
	if st := e.states[k]; st != nil && st.open != nil {
		e.resolve(ctx, k, st)
	}
	if ok && prev.patient != r.PatientID { // the device moved: the old patient's alarm ends
		k := stateKey{prev.patient, cur.offlineRule}
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

// noteBattery records a reported battery charge and raises or resolves
// the device's low-battery alert. e.mu is held.
func (e *Engine) noteBattery(ctx context.Context, r *vigil.Reading) {
	if r.Battery == nil {
		return
	}
	s := e.seen[r.DeviceID]
	if !s.batteryAt.IsZero() && r.Time.Before(s.batteryAt) {
		return // an older report
	}
	s.battery, s.batteryAt = *r.Battery, r.Time
	if s.patient == "" {
		s.patient = r.PatientID
	}
	e.seen[r.DeviceID] = s
	k := stateKey{r.PatientID, DeviceRulePrefix + r.DeviceID + ":" + BatteryAlarmID}
	st := e.states[k]
	open := st != nil && st.open != nil
	switch {
	case !open && *r.Battery <= BatteryLow && !r.Time.Before(e.now().Add(-e.staleAfter)):
		_, _ = e.deviceAlarmLocked(ctx, DeviceAlarm{
			PatientID: r.PatientID, DeviceID: r.DeviceID, AlarmID: BatteryAlarmID,
			Title:    fmt.Sprintf("Device %s battery at %.0f %%: charge or replace it", r.DeviceID, *r.Battery),
			Priority: vigil.PriorityLow, Value: *r.Battery, Unit: "%", Time: r.Time, Received: r.Received, Active: true,
		})
	case open && *r.Battery >= BatteryOK:
		e.resolve(ctx, k, st)
	}
}
