package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/adherence"
)

// EventMessage is a device event as a device sends it.
type EventMessage struct {
	ID   string `json:"id"`
	Time string `json:"time"`
	Type string `json:"type"`
}

// EventsResponse answers a stored batch of events.
type EventsResponse struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
}

// postEvents stores a device's events (one object or an array): all or
// nothing, durable before 200.
func (s *Server) postEvents(w http.ResponseWriter, r *http.Request) {
	body, ok := s.deviceBody(w, r)
	if !ok {
		return
	}
	out, err := s.storeEvents(r, body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) storeEvents(r *http.Request, body []byte) (*EventsResponse, error) {
	device := r.PathValue("id")
	var msgs []EventMessage
	if b := bytes.TrimSpace(body); len(b) > 0 && b[0] == '[' {
		if err := json.Unmarshal(b, &msgs); err != nil {
			return nil, vigil.FieldErrorf("", "malformed", "malformed JSON: %v", err)
		}
	} else {
		var m EventMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, vigil.FieldErrorf("", "malformed", "malformed JSON: %v (send {\"id\", \"time\", \"type\": \"bottle-opened\"})", err)
		}
		msgs = []EventMessage{m}
	}
	if len(msgs) == 0 || len(msgs) > 1000 {
		return nil, vigil.FieldErrorf("", "too-many", "send 1 to 1000 events per request")
	}
	as, err := s.o.Store.Assignments(r.Context(), device)
	if err != nil {
		return nil, err
	}
	now := s.o.Now().UTC()
	evs := make([]*vigil.DeviceEvent, len(msgs))
	for i, m := range msgs {
		f := fmt.Sprintf("[%d].", i)
		if m.ID == "" || len(m.ID) > 64 {
			return nil, vigil.FieldErrorf(f+"id", "required", "every event needs an id (1–64 characters), unique per device")
		}
		if m.Type != vigil.EventBottleOpened {
			return nil, vigil.FieldErrorf(f+"type", "unknown-type", "event type %q: Vigil knows %q", m.Type, vigil.EventBottleOpened)
		}
		t, err := time.Parse(time.RFC3339Nano, m.Time)
		if err != nil {
			return nil, vigil.FieldErrorf(f+"time", "invalid", "time %q is not RFC 3339 with an offset", m.Time)
		}
		if t.Sub(now) > 5*time.Minute {
			return nil, vigil.FieldErrorf(f+"time", "future", "time is ahead of Vigil's clock: check the device clock")
		}
		patient := ""
		for _, a := range as {
			if a.Covers(t) {
				patient = a.PatientID
			}
		}
		if patient == "" {
			return nil, vigil.FieldErrorf(f+"time", "unassigned", "device %s was not assigned to a patient at %s", device, t.UTC().Format(time.RFC3339))
		}
		evs[i] = &vigil.DeviceEvent{DeviceID: device, ID: m.ID, PatientID: patient, Type: m.Type, Time: t.UTC(), Received: now}
	}
	res, err := s.o.Store.AppendEvents(r.Context(), evs)
	if err != nil {
		return nil, err
	}
	out := EventsResponse{}
	for i, x := range res {
		if x.Duplicate {
			out.Duplicates++
			continue
		}
		out.Accepted++
		if s.o.Opened != nil {
			if p, err := s.o.Store.FindPatientByID(r.Context(), evs[i].PatientID); err == nil {
				s.o.Opened(r.Context(), p, evs[i])
			}
		}
	}
	return &out, nil
}

// MedicationsRequest replaces a patient's medication schedules.
type MedicationsRequest struct {
	Medications []vigil.MedicationSchedule `json:"medications"`
}

func (s *Server) putMedications(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	var req MedicationsRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	pt, err := s.o.Store.FindPatientByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	now := s.o.Now().UTC()
	prev := map[string]vigil.MedicationSchedule{}
	for _, m := range pt.Medications {
		prev[m.ID] = m
	}
	for i := range req.Medications {
		m := &req.Medications[i]
		if err := adherence.Validate(m, i); err != nil {
			return err
		}
		d, err := s.o.Store.FindDeviceByID(r.Context(), m.Device)
		if err != nil || d.Kind != vigil.DevicePillBottle {
			return vigil.FieldErrorf(fmt.Sprintf("medications[%d].device", i), "not-a-pill-bottle", "device %q is not a registered pill bottle (kind %s)", m.Device, vigil.DevicePillBottle)
		}
		if old, ok := prev[m.ID]; ok && !old.Start.IsZero() && sameSchedule(old, *m) {
			m.Start = old.Start // unchanged: keep counting from when it began
		} else {
			m.Start = now
		}
	}
	pt.Medications = req.Medications
	if err := s.o.Store.UpdatePatient(r.Context(), pt, pt.Version); err != nil {
		return err
	}
	s.log.Info("medication schedules set", "patient_version", pt.Version, "by", p.UserID, "medications", len(pt.Medications))
	writeJSON(w, http.StatusOK, pt.Medications)
	return nil
}

func sameSchedule(a, b vigil.MedicationSchedule) bool {
	return a.Device == b.Device && a.TimeZone == b.TimeZone && a.WindowMinutes == b.WindowMinutes && strings.Join(a.Times, ",") == strings.Join(b.Times, ",")
}

// adherence serves ?from&to (RFC 3339; default the last 30 days).
func (s *Server) adherence(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	now := s.o.Now().UTC()
	to, from := now, now.Add(-30*24*time.Hour)
	var err error
	if v := r.URL.Query().Get("from"); v != "" {
		if from, err = time.Parse(time.RFC3339, v); err != nil {
			return vigil.FieldErrorf("from", "invalid", "from %q is not RFC 3339", v)
		}
	}
	if v := r.URL.Query().Get("to"); v != "" {
		if to, err = time.Parse(time.RFC3339, v); err != nil {
			return vigil.FieldErrorf("to", "invalid", "to %q is not RFC 3339", v)
		}
	}
	if !from.Before(to) || to.Sub(from) > 366*24*time.Hour {
		return vigil.FieldErrorf("from", "invalid", "from must be before to, at most a year apart")
	}
	reps, err := adherence.Reports(r.Context(), s.o.Store, r.PathValue("id"), from, to, now)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, reps)
	return nil
}
