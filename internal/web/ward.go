package web

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Vital is the latest value of one measurement, in the code's canonical
// UCUM unit, at its device time.
type Vital struct {
	Value float64   `json:"value"`
	Unit  string    `json:"unit"`
	Time  time.Time `json:"time"`
}

// BloodPressure is the latest blood pressure panel.
type BloodPressure struct {
	Systolic  float64   `json:"systolic"`
	Diastolic float64   `json:"diastolic"`
	Unit      string    `json:"unit"`
	Time      time.Time `json:"time"`
}

// Tile is what the ward view shows of one patient. Name is PHI.
type Tile struct {
	PatientID string         `json:"id"`
	Name      string         `json:"name"`
	Ward      string         `json:"ward,omitempty"`
	Bed       string         `json:"bed,omitempty"`
	HR        *Vital         `json:"hr,omitempty"`   // LOINC 8867-4, /min
	SpO2      *Vital         `json:"spo2,omitempty"` // LOINC 59408-5, %
	RR        *Vital         `json:"rr,omitempty"`   // LOINC 9279-1, /min
	Temp      *Vital         `json:"temp,omitempty"` // LOINC 8310-5, Cel
	BP        *BloodPressure `json:"bp,omitempty"`   // LOINC 85354-9, mm[Hg]
	NEWS2     *NEWS2         `json:"news2,omitempty"`
	Alerts    []*vigil.Alert `json:"alerts"` // open alerts, newest first
}

// Ward is the JSON snapshot served at /web/api/ward.
type Ward struct {
	Now      time.Time `json:"now"` // server time, for the ages the browser shows
	User     string    `json:"user"`
	Role     string    `json:"role"`
	CanAck   bool      `json:"canAck"`
	Patients []*Tile   `json:"patients"` // alerting patients first
}

var tileCodes = []string{vigil.LOINCHeartRate, vigil.LOINCSpO2, vigil.LOINCRespRate, vigil.LOINCBodyTemp,
	vigil.LOINCBPPanel, vigil.LOINCSystolic, vigil.LOINCDiastolic}

var openStates = []string{vigil.AlertFiring, vigil.AlertAcknowledged}

// maxWardAlerts bounds the open alerts one snapshot loads.
const maxWardAlerts = 5000

func (h *handler) ward(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	var patients []*vigil.Patient
	af := vigil.AlertFilter{States: openStates, Limit: maxWardAlerts}
	if s.staff() {
		for off := 0; ; {
			ps, total, err := h.opts.Store.FindPatients(ctx, vigil.PatientFilter{Offset: off, Limit: 500})
			if err != nil {
				h.error(w, r, fmt.Errorf("ward: list patients: %w", err))
				return
			}
			for _, p := range ps {
				if s.canSee(p.ID) {
					patients = append(patients, p)
				}
			}
			off += len(ps)
			if len(ps) == 0 || off >= total {
				break
			}
		}
	} else {
		if s.p.PatientID != "" {
			p, err := h.opts.Store.FindPatientByID(ctx, s.p.PatientID)
			if err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
				h.error(w, r, fmt.Errorf("ward: find own patient record: %w", err))
				return
			}
			if p != nil {
				patients = append(patients, p)
			}
		}
		af.PatientID = s.p.PatientID
	}
	var alerts []*vigil.Alert
	if len(patients) > 0 {
		var err error
		if alerts, err = h.opts.Alerts.Alerts(ctx, af); err != nil {
			h.error(w, r, fmt.Errorf("ward: open alerts: %w", err))
			return
		}
	}
	byPatient := make(map[string][]*vigil.Alert)
	for _, a := range alerts {
		byPatient[a.PatientID] = append(byPatient[a.PatientID], a)
	}
	out := &Ward{Now: h.opts.Now().UTC(), User: s.p.UserID, Role: s.p.Role, CanAck: s.staff(), Patients: []*Tile{}}
	for _, p := range patients {
		t, err := h.tile(ctx, p, byPatient[p.ID])
		if err != nil {
			h.error(w, r, err)
			return
		}
		out.Patients = append(out.Patients, t)
	}
	sortTiles(out.Patients)
	h.json(w, http.StatusOK, out)
}

// patient serves one patient's tile; 403 for a patient that is not the
// caller's own.
func (h *handler) patient(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !s.canSee(id) {
		h.error(w, r, vigil.Errorf(vigil.EFORBIDDEN, "you may not see this patient"))
		return
	}
	p, err := h.opts.Store.FindPatientByID(r.Context(), id)
	if err != nil {
		h.error(w, r, fmt.Errorf("find patient: %w", err))
		return
	}
	as, err := h.opts.Alerts.Alerts(r.Context(), vigil.AlertFilter{PatientID: id, States: openStates})
	if err != nil {
		h.error(w, r, fmt.Errorf("open alerts: %w", err))
		return
	}
	t, err := h.tile(r.Context(), p, as)
	if err != nil {
		h.error(w, r, err)
		return
	}
	h.json(w, http.StatusOK, t)
}

// tile builds a patient's tile from their latest observations.
func (h *handler) tile(ctx context.Context, p *vigil.Patient, alerts []*vigil.Alert) (*Tile, error) {
	latest, err := h.opts.Store.LatestObservations(ctx, p.ID, tileCodes, 1)
	if err != nil {
		return nil, fmt.Errorf("latest observations: %w", err)
	}
	t := &Tile{
		PatientID: p.ID,
		Name:      strings.TrimSpace(p.Given + " " + p.Family),
		Ward:      p.Ward,
		Bed:       p.Bed,
		Alerts:    alerts,
	}
	if t.Name == "" {
		t.Name = p.ID
	}
	if t.Alerts == nil {
		t.Alerts = []*vigil.Alert{}
	}
	t.NEWS2 = h.tileNEWS2(ctx, p)
	vital := func(code string) *Vital {
		if obs := latest[code]; len(obs) > 0 {
			return &Vital{Value: obs[0].Value, Unit: obs[0].Unit, Time: obs[0].Time}
		}
		return nil
	}
	t.HR, t.SpO2, t.RR, t.Temp = vital(vigil.LOINCHeartRate), vital(vigil.LOINCSpO2), vital(vigil.LOINCRespRate), vital(vigil.LOINCBodyTemp)
	if obs := latest[vigil.LOINCBPPanel]; len(obs) > 0 {
		o := obs[0]
		bp := &BloodPressure{Time: o.Time, Unit: "mm[Hg]"}
		for _, c := range o.Components {
			switch c.Code {
			case vigil.LOINCSystolic:
				bp.Systolic, bp.Unit = c.Value, c.Unit
			case vigil.LOINCDiastolic:
				bp.Diastolic = c.Value
			}
		}
		t.BP = bp
	} else if sys := vital(vigil.LOINCSystolic); sys != nil {
		// A store that keeps the components apart: pair them by time.
		bp := &BloodPressure{Systolic: sys.Value, Unit: sys.Unit, Time: sys.Time}
		if dia := vital(vigil.LOINCDiastolic); dia != nil && dia.Time.Equal(sys.Time) {
			bp.Diastolic = dia.Value
		}
		t.BP = bp
	}
	return t, nil
}

// alertRank orders alerts for the ward: firing before acknowledged, then
// by priority. Lower is more urgent; no open alert ranks last.
func alertRank(as []*vigil.Alert) int {
	best := 100
	for _, a := range as {
		r := 10
		switch a.Priority {
		case vigil.PriorityHigh:
			r = 0
		case vigil.PriorityMedium:
			r = 1
		case vigil.PriorityLow:
			r = 2
		}
		if a.State != vigil.AlertFiring {
			r += 3
		}
		best = min(best, r)
	}
	return best
}

// sortTiles puts alerting patients first (most urgent first), then
// orders by ward, bed and name. The script sorts the same way.
func sortTiles(ts []*Tile) {
	slices.SortStableFunc(ts, func(a, b *Tile) int {
		return cmp.Or(
			cmp.Compare(alertRank(a.Alerts), alertRank(b.Alerts)),
			cmp.Compare(a.Ward, b.Ward),
			cmp.Compare(a.Bed, b.Bed),
			cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.PatientID, b.PatientID),
		)
	})
}
