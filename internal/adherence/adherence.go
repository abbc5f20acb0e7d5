// Package adherence follows home medication programmes: doses scheduled
// at local times of day (vigil.MedicationSchedule), taken when the
// patient's smart pill bottle reports an opening (vigil.DeviceEvent
// "bottle-opened") within the dose window; adherence reports; and
// missed-dose alerts.
//
// # Rules
//
// A dose at local time T counts as taken when the schedule's bottle was
// opened within [T − W, T + W] (W = WindowMinutes, default 60); one
// opening takes at most one dose, the earliest dose first. A dose is
// missed when its window has closed without one, and pending while it is
// still open. Adherence is taken ÷ (taken + missed). Doses are counted
// from the schedule's Start.
//
// When a dose is missed the Monitor raises a medium-priority alert
// "device:vigil-adherence:{medication}" for the patient (one open per
// medication; a second missed dose while it is open changes nothing),
// which resolves at the next opening of the bottle.
package adherence

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/alerting"
)

// DeviceID is the device id of missed-dose alerts.
const DeviceID = "vigil-adherence"

// Dose statuses.
const (
	Taken   = "taken"
	Missed  = "missed"
	Pending = "pending"
)

// Validate checks a schedule and fills its defaults (WindowMinutes).
// It returns EINVALID naming the field.
func Validate(m *vigil.MedicationSchedule, i int) error {
	f := fmt.Sprintf("medications[%d].", i)
	switch {
	case !vigil.ValidID(m.ID):
		return vigil.FieldErrorf(f+"id", "invalid", "medication id %q: letters, digits and '-'", m.ID)
	case strings.TrimSpace(m.Name) == "":
		return vigil.FieldErrorf(f+"name", "required", "name the medication and strength, e.g. \"Metformin 500 mg\"")
	case len(m.Times) == 0 || len(m.Times) > 12:
		return vigil.FieldErrorf(f+"times", "required", "give 1 to 12 dose times as HH:MM")
	case m.Device == "":
		return vigil.FieldErrorf(f+"device", "required", "name the pill bottle that reports the doses")
	case m.WindowMinutes < 0 || m.WindowMinutes > 360:
		return vigil.FieldErrorf(f+"windowMinutes", "invalid", "the dose window is 1 to 360 minutes either side")
	}
	if m.WindowMinutes == 0 {
		m.WindowMinutes = 60
	}
	if _, err := time.LoadLocation(m.TimeZone); err != nil || m.TimeZone == "" {
		return vigil.FieldErrorf(f+"timeZone", "invalid", "time zone %q: use an IANA name such as Europe/London", m.TimeZone)
	}
	for j, t := range m.Times {
		if _, _, ok := clock(t); !ok {
			return vigil.FieldErrorf(fmt.Sprintf("%stimes[%d]", f, j), "invalid", "dose time %q: use HH:MM (24 h)", t)
		}
	}
	return nil
}

func clock(s string) (h, m int, ok bool) {
	hs, ms, found := strings.Cut(s, ":")
	h, err1 := strconv.Atoi(hs)
	m, err2 := strconv.Atoi(ms)
	return h, m, found && err1 == nil && err2 == nil && len(ms) == 2 && h >= 0 && h < 24 && m >= 0 && m < 60
}

// Dose is one scheduled dose.
type Dose struct {
	Time    time.Time  `json:"time"`
	Status  string     `json:"status"`
	TakenAt *time.Time `json:"takenAt,omitempty"`
}

// Report is a medication's adherence over a period.
type Report struct {
	Medication string  `json:"medication"`
	Name       string  `json:"name"`
	Scheduled  int     `json:"scheduled"`
	Taken      int     `json:"taken"`
	Missed     int     `json:"missed"`
	Pending    int     `json:"pending"`
	Adherence  float64 `json:"adherence"` // percent of taken + missed; 0 when none is decided
	Doses      []Dose  `json:"doses"`
}

// doseTimes returns the schedule's dose times in [from, to).
func doseTimes(m vigil.MedicationSchedule, from, to time.Time) []time.Time {
	loc, err := time.LoadLocation(m.TimeZone)
	if err != nil {
		loc = time.UTC
	}
	if m.Start.After(from) {
		from = m.Start
	}
	var out []time.Time
	d := from.In(loc)
	for day := time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, loc); day.Before(to); day = day.AddDate(0, 0, 1) {
		for _, s := range m.Times {
			h, mi, _ := clock(s)
			t := time.Date(day.Year(), day.Month(), day.Day(), h, mi, 0, 0, loc)
			if !t.Before(from) && t.Before(to) {
				out = append(out, t.UTC())
			}
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// Evaluate reports a schedule's doses in [from, to) at now, given the
// patient's events (any order; those of other devices or types are
// ignored). Events should cover [from − window, to + window).
func Evaluate(m vigil.MedicationSchedule, events []*vigil.DeviceEvent, from, to, now time.Time) Report {
	w := time.Duration(m.WindowMinutes) * time.Minute
	if w == 0 {
		w = time.Hour
	}
	var opens []time.Time
	for _, e := range events {
		if e.DeviceID == m.Device && e.Type == vigil.EventBottleOpened {
			opens = append(opens, e.Time)
		}
	}
	slices.SortFunc(opens, func(a, b time.Time) int { return a.Compare(b) })
	used := make([]bool, len(opens))
	rep := Report{Medication: m.ID, Name: m.Name, Doses: []Dose{}}
	for _, t := range doseTimes(m, from, to) {
		d := Dose{Time: t}
		for i, o := range opens {
			if !used[i] && !o.Before(t.Add(-w)) && !o.After(t.Add(w)) {
				used[i] = true
				at := o
				d.Status, d.TakenAt = Taken, &at
				break
			}
		}
		if d.Status == "" {
			if now.Before(t.Add(w)) {
				d.Status = Pending
			} else {
				d.Status = Missed
			}
		}
		rep.Doses = append(rep.Doses, d)
		rep.Scheduled++
		switch d.Status {
		case Taken:
			rep.Taken++
		case Missed:
			rep.Missed++
		default:
			rep.Pending++
		}
	}
	if n := rep.Taken + rep.Missed; n > 0 {
		rep.Adherence = float64(rep.Taken) * 100 / float64(n)
	}
	return rep
}

// Store is what the Monitor and Reports read.
type Store interface {
	FindPatients(ctx context.Context, f vigil.PatientFilter) ([]*vigil.Patient, int, error)
	FindPatientByID(ctx context.Context, id string) (*vigil.Patient, error)
	FindEvents(ctx context.Context, patientID string, from, to time.Time) ([]*vigil.DeviceEvent, error)
}

// Reports returns the adherence of each of a patient's medications over
// [from, to) at now.
func Reports(ctx context.Context, s Store, patientID string, from, to, now time.Time) ([]Report, error) {
	p, err := s.FindPatientByID(ctx, patientID)
	if err != nil {
		return nil, err
	}
	out := []Report{}
	for _, m := range p.Medications {
		w := time.Duration(max(m.WindowMinutes, 60)) * time.Minute
		evs, err := s.FindEvents(ctx, patientID, from.Add(-w), to.Add(w))
		if err != nil {
			return nil, err
		}
		out = append(out, Evaluate(m, evs, from, to, now))
	}
	return out, nil
}

// Monitor raises missed-dose alerts. Check runs it; the node calls Check
// every minute.
type Monitor struct {
	Store  Store
	Alerts *alerting.Engine
	Logger *slog.Logger

	mu   sync.Mutex
	last time.Time // doses whose window closed before this were checked
}

// Check raises an alert for every dose whose window closed in (last
// check, now] without an opening. The first Check only sets the mark: a
// restart does not alert doses missed while Vigil was down (the reports
// still count them).
func (mo *Monitor) Check(ctx context.Context, now time.Time) error {
	mo.mu.Lock()
	defer mo.mu.Unlock()
	if mo.last.IsZero() {
		mo.last = now
		return nil
	}
	from := mo.last
	const page = 500
	for off := 0; ; off += page {
		ps, total, err := mo.Store.FindPatients(ctx, vigil.PatientFilter{Offset: off, Limit: page})
		if err != nil {
			return err
		}
		for _, p := range ps {
			for _, m := range p.Medications {
				if err := mo.check(ctx, p.ID, m, from, now); err != nil {
					return err
				}
			}
		}
		if len(ps) == 0 || off+len(ps) >= total {
			break
		}
	}
	mo.last = now
	return nil
}

func (mo *Monitor) check(ctx context.Context, patient string, m vigil.MedicationSchedule, from, now time.Time) error {
	w := time.Duration(m.WindowMinutes) * time.Minute
	if w == 0 {
		w = time.Hour
	}
	// Doses whose window end (T + w) lies in (from, now].
	evs, err := mo.Store.FindEvents(ctx, patient, from.Add(-3*w), now.Add(w))
	if err != nil {
		return err
	}
	rep := Evaluate(m, evs, from.Add(-w), now.Add(-w+time.Nanosecond), now) // window ends in [from − …, now]
	for _, d := range rep.Doses {
		if d.Status != Missed || !d.Time.Add(w).After(from) {
			continue
		}
		loc, _ := time.LoadLocation(m.TimeZone)
		_, err := mo.Alerts.DeviceAlarm(ctx, alerting.DeviceAlarm{
			PatientID: patient, DeviceID: DeviceID, AlarmID: m.ID, Code: m.ID,
			Title:    fmt.Sprintf("Missed dose: %s at %s", m.Name, d.Time.In(loc).Format("15:04")),
			Detail:   fmt.Sprintf("pill bottle %s was not opened between %s and %s", m.Device, d.Time.Add(-w).In(loc).Format("15:04"), d.Time.Add(w).In(loc).Format("15:04 MST")),
			Priority: vigil.PriorityMedium, Time: d.Time.Add(w), Active: true,
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Opened resolves the patient's open missed-dose alerts for the
// medications of the bottle that reported an opening.
func (mo *Monitor) Opened(ctx context.Context, p *vigil.Patient, ev *vigil.DeviceEvent) {
	for _, m := range p.Medications {
		if m.Device != ev.DeviceID || ev.Type != vigil.EventBottleOpened {
			continue
		}
		if _, err := mo.Alerts.DeviceAlarm(ctx, alerting.DeviceAlarm{
			PatientID: p.ID, DeviceID: DeviceID, AlarmID: m.ID, Code: m.ID, Priority: vigil.PriorityMedium, Time: ev.Time, Active: false,
		}); err != nil && mo.Logger != nil {
			mo.Logger.Error("missed-dose alert not resolved", "err", err)
		}
	}
}
