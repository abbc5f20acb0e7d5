package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

// lowSpO2 makes the spo2-low alert of a patient fire (three low values
// from the device over 70 s of device time) and returns it.
func (e *env) lowSpO2(patient, device string) *vigil.Alert {
	e.t.Helper()
	start := time.Now().UTC().Add(-80 * time.Second)
	for i, v := range []float64{88, 87, 86} {
		e.ingest(&vigil.Reading{DeviceID: device, ID: fmt.Sprint("low", i), PatientID: patient, Time: start.Add(time.Duration(i) * 35 * time.Second),
			Values: []vigil.Measurement{{Code: vigil.LOINCSpO2, Value: v, Unit: "%"}}})
	}
	as, err := e.alerts.Alerts(context.Background(), vigil.AlertFilter{PatientID: patient, States: openStates})
	if err != nil || len(as) == 0 {
		e.t.Fatalf("no open alert for %s: %v", patient, err)
	}
	return as[0]
}

// The alert inbox: open alerts most urgent first with the patient's name,
// filters by state and priority, acknowledge, escalate and snooze with
// notes, each in the alert's history; care staff only.
func TestInbox(t *testing.T) {
	e := newEnv(t, nil)
	e.addPatient("p1", "Ada", "Lovelace", "4B", "1")
	e.addPatient("p2", "Alan", "Turing", "4B", "2")
	e.addUser("nurse1", vigil.RoleNurse, "", "pw-nurse")
	e.addUser("ada", vigil.RolePatient, "p1", "pw-ada")
	a1 := e.lowSpO2("p1", "mon-1")
	a2 := e.lowSpO2("p2", "mon-2")

	nurse, csrf := e.login("nurse1", "pw-nurse")
	inbox := func(query string) Inbox {
		t.Helper()
		var in Inbox
		if err := json.Unmarshal([]byte(e.get(nurse, "/web/api/alerts"+query, http.StatusOK)), &in); err != nil {
			t.Fatal(err)
		}
		return in
	}
	in := inbox("")
	if in.State != "open" || len(in.Alerts) != 2 || in.Alerts[0].PatientName == "" || in.Alerts[0].Bed == "" {
		t.Fatalf("open inbox: %+v", in)
	}
	if got := inbox("?priority=low"); len(got.Alerts) != 0 {
		t.Errorf("low only: %+v", got.Alerts)
	}
	if got := inbox("?priority=high,medium&patient=p2"); len(got.Alerts) != 1 || got.Alerts[0].ID != a2.ID || got.Alerts[0].PatientName != "Alan Turing" {
		t.Errorf("p2's alerts: %+v", got.Alerts)
	}
	for _, bad := range []string{"?state=gone", "?priority=urgent", "?limit=0", "?limit=5000"} {
		e.get(nurse, "/web/api/alerts"+bad, http.StatusBadRequest)
	}
	if got := inbox("?limit=1"); len(got.Alerts) != 1 || !got.More {
		t.Errorf("limit 1: %d alerts, more %v", len(got.Alerts), got.More)
	}

	hdr := map[string]string{csrfHeader: csrf}
	act := func(id, action, body string, want int) vigil.Alert {
		t.Helper()
		st, b := e.post(nurse, "/web/api/alerts/"+id+"/"+action, hdr, body)
		if st != want {
			t.Fatalf("%s %s: %d %s, want %d", action, id, st, b, want)
		}
		var a vigil.Alert
		_ = json.Unmarshal([]byte(b), &a)
		return a
	}
	if a := act(a1.ID, "escalate", `{"note":"looks grey, need the doctor"}`, http.StatusOK); a.Tier != 1 {
		t.Errorf("escalated: %+v", a)
	}
	act(a1.ID, "ack", `{"note":"oxygen started"}`, http.StatusOK)
	if a := act(a2.ID, "snooze", `{"minutes":30,"note":"probe off, refitting"}`, http.StatusOK); a.SnoozedUntil.IsZero() {
		t.Errorf("snoozed: %+v", a)
	}
	act("nope", "escalate", ``, http.StatusNotFound)
	if st, _ := e.post(nurse, "/web/api/alerts/"+a1.ID+"/escalate", nil, `{}`); st != http.StatusForbidden {
		t.Errorf("escalate without the CSRF token: %d", st)
	}

	got := inbox("?state=acknowledged")
	if len(got.Alerts) != 1 || got.Alerts[0].ID != a1.ID {
		t.Fatalf("acknowledged: %+v", got.Alerts)
	}
	var notes []string
	for _, h := range got.Alerts[0].History {
		notes = append(notes, h.State+":"+h.By+":"+h.Note)
	}
	want := []string{"firing::", "escalated:nurse1:looks grey, need the doctor", "acknowledged:nurse1:oxygen started"}
	if strings.Join(notes, "|") != strings.Join(want, "|") {
		t.Errorf("history %q, want %q", notes, want)
	}
	// Firing first: p2's (snoozed, still firing) before p1's acknowledged.
	if in := inbox(""); len(in.Alerts) != 2 || in.Alerts[0].ID != a2.ID {
		t.Errorf("order: %v", in.Alerts)
	}
	if page := e.get(nurse, "/alerts", http.StatusOK); !strings.Contains(page, "alerts.js") || !strings.Contains(page, `href="/devices"`) {
		t.Errorf("inbox page: %s", page)
	}

	// Patients have no inbox and may not act on alerts.
	ada, adaCSRF := e.login("ada", "pw-ada")
	e.get(ada, "/web/api/alerts", http.StatusForbidden)
	if page := e.get(ada, "/alerts", http.StatusForbidden); !strings.Contains(page, "for care staff") {
		t.Errorf("patient's inbox page: %s", page)
	}
	if st, _ := e.post(ada, "/web/api/alerts/"+a1.ID+"/escalate", map[string]string{csrfHeader: adaCSRF}, `{}`); st != http.StatusForbidden {
		t.Errorf("a patient escalates: %d", st)
	}
}

// The device fleet: status from the live state (connected, silent past
// its limit, spot-check, unheard, revoked), battery, dead letters, the
// assigned patient; offline first. A patient sees only their own devices.
func TestFleet(t *testing.T) {
	now := time.Now().UTC()
	pct := func(v float64) *float64 { return &v }
	states := map[string]DeviceState{
		"mon-1":  {LastSeen: now.Add(-10 * time.Second), SilentAfter: 2 * time.Minute, Battery: pct(80), BatteryAt: now},
		"mon-2":  {LastSeen: now.Add(-5 * time.Minute), SilentAfter: 2 * time.Minute},
		"cuff-1": {LastSeen: now.Add(-3 * time.Hour), Battery: pct(15), BatteryAt: now.Add(-3 * time.Hour)},
	}
	e := newEnv(t, func(o *Options) {
		o.DeviceState = func(id string) DeviceState { return states[id] }
		o.Connected = func() map[string]bool { return map[string]bool{"watch-1": true} }
	})
	ctx := context.Background()
	e.addPatient("p1", "Ada", "Lovelace", "4B", "1")
	e.addPatient("p2", "Alan", "Turing", "4B", "2")
	e.addUser("nurse1", vigil.RoleNurse, "", "pw-nurse")
	e.addUser("ada", vigil.RolePatient, "p1", "pw-ada")
	for _, d := range []*vigil.Device{
		{ID: "mon-1", Kind: vigil.DeviceBedsideMonitor, Model: "M1", Firmware: "4.2.1"},
		{ID: "mon-2", Kind: vigil.DeviceBedsideMonitor},
		{ID: "cuff-1", Kind: vigil.DeviceBPCuff},
		{ID: "watch-1", Kind: vigil.DeviceWearable},
		{ID: "spare-1", Kind: vigil.DeviceWearable},
		{ID: "old-1", Kind: vigil.DeviceWearable, Revoked: true},
	} {
		if err := e.store.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	for dev, p := range map[string]string{"mon-1": "p1", "cuff-1": "p1", "mon-2": "p2", "watch-1": "p2"} {
		if err := e.store.AssignDevice(ctx, dev, p, now.Add(-24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := e.store.AddDeadLetter(ctx, &vigil.DeadLetter{Time: now, Source: "mqtt", DeviceID: "mon-2", Reason: "invalid", Message: "bad", Payload: []byte("{")}); err != nil {
			t.Fatal(err)
		}
	}

	nurse, _ := e.login("nurse1", "pw-nurse")
	var f Fleet
	if err := json.Unmarshal([]byte(e.get(nurse, "/web/api/devices", http.StatusOK)), &f); err != nil {
		t.Fatal(err)
	}
	var got []string
	byID := map[string]*FleetDevice{}
	for _, d := range f.Devices {
		got = append(got, d.ID+":"+d.Status)
		byID[d.ID] = d
	}
	want := "mon-2:offline mon-1:online watch-1:online cuff-1:idle spare-1:unheard old-1:revoked"
	if strings.Join(got, " ") != want {
		t.Errorf("fleet %q, want %q", strings.Join(got, " "), want)
	}
	if d := byID["mon-1"]; d.PatientName != "Ada Lovelace" || d.Bed != "1" || d.Firmware != "4.2.1" || d.Battery == nil || *d.Battery != 80 {
		t.Errorf("mon-1: %+v", d)
	}
	if d := byID["mon-2"]; d.DeadLetters != 2 || d.LastSeen == nil {
		t.Errorf("mon-2: %+v", d)
	}
	if d := byID["watch-1"]; !d.Connected || d.Patient != "p2" {
		t.Errorf("watch-1: %+v", d)
	}
	if d := byID["spare-1"]; d.Patient != "" || d.LastSeen != nil {
		t.Errorf("spare-1: %+v", d)
	}

	ada, _ := e.login("ada", "pw-ada")
	e.get(ada, "/web/api/devices", http.StatusForbidden)
	e.get(ada, "/web/api/devices?patient=p2", http.StatusForbidden)
	var own Fleet
	if err := json.Unmarshal([]byte(e.get(ada, "/web/api/devices?patient=p1", http.StatusOK)), &own); err != nil {
		t.Fatal(err)
	}
	if len(own.Devices) != 2 || own.Devices[0].ID != "mon-1" || own.Devices[1].ID != "cuff-1" || own.Devices[0].DeadLetters != 0 {
		t.Errorf("own devices: %+v", own.Devices)
	}
	if page := e.get(ada, "/devices", http.StatusForbidden); !strings.Contains(page, "for care staff") {
		t.Errorf("patient's fleet page: %s", page)
	}
}
