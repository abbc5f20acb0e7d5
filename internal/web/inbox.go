package web

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
)

// InboxAlert is an alert with the patient it is about, for the inbox.
type InboxAlert struct {
	*vigil.Alert
	PatientName string `json:"patientName,omitempty"`
	Ward        string `json:"ward,omitempty"`
	Bed         string `json:"bed,omitempty"`
}

// Inbox is the JSON served at /web/api/alerts.
type Inbox struct {
	Now    time.Time     `json:"now"`
	State  string        `json:"state"`
	Alerts []*InboxAlert `json:"alerts"`
	// More: the filter matched more alerts than were sent.
	More bool `json:"more,omitempty"`
}

// inboxStates are the ?state= values of the inbox.
var inboxStates = map[string][]string{
	"open":                  openStates,
	vigil.AlertFiring:       {vigil.AlertFiring},
	vigil.AlertAcknowledged: {vigil.AlertAcknowledged},
	vigil.AlertResolved:     {vigil.AlertResolved},
	"all":                   nil,
}

// inboxRank orders open alerts by urgency, ahead of resolved ones.
func inboxRank(a *vigil.Alert) int {
	if !a.Open() {
		return 100
	}
	return alertRank([]*vigil.Alert{a})
}

// alerts serves the alert inbox to care staff: ?state=open (default),
// firing, acknowledged, resolved or all; ?priority=high,medium,low;
// ?patient=ID; ?limit=N (default 200, at most 1000). Open alerts come
// most urgent first, the rest newest first.
func (h *handler) alerts(w http.ResponseWriter, r *http.Request, s *session) {
	if !s.staff() {
		h.error(w, r, vigil.Errorf(vigil.EFORBIDDEN, "the alert inbox is for care staff"))
		return
	}
	q := r.URL.Query()
	state := cmp.Or(q.Get("state"), "open")
	states, ok := inboxStates[state]
	if !ok {
		h.error(w, r, vigil.FieldErrorf("state", "invalid", "state must be open, firing, acknowledged, resolved or all"))
		return
	}
	prio := map[string]bool{}
	if v := q.Get("priority"); v != "" {
		for _, p := range strings.Split(v, ",") {
			switch p {
			case vigil.PriorityHigh, vigil.PriorityMedium, vigil.PriorityLow:
				prio[p] = true
			default:
				h.error(w, r, vigil.FieldErrorf("priority", "invalid", "priority %q: use high, medium or low, comma-separated", p))
				return
			}
		}
	}
	limit := 200
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			h.error(w, r, vigil.FieldErrorf("limit", "invalid", "limit must be 1 to 1000"))
			return
		}
		limit = n
	}
	patient := q.Get("patient")
	if patient != "" && !s.canSee(patient) {
		h.error(w, r, vigil.Errorf(vigil.EFORBIDDEN, "you may not see this patient"))
		return
	}
	ctx := r.Context()
	// Read only what is shown, unless ward scope or priority filter
	// alerts out here.
	fetch := limit + 1
	if s.visible != nil || len(prio) > 0 {
		fetch = maxWardAlerts
	}
	as, err := h.opts.Alerts.Alerts(ctx, vigil.AlertFilter{PatientID: patient, States: states, Limit: fetch})
	if err != nil {
		h.error(w, r, fmt.Errorf("inbox: alerts: %w", err))
		return
	}
	out := &Inbox{Now: h.opts.Now().UTC(), State: state, Alerts: []*InboxAlert{}}
	patients := map[string]*vigil.Patient{}
	for _, a := range as {
		if !s.canSee(a.PatientID) || (len(prio) > 0 && !prio[a.Priority]) {
			continue
		}
		if len(out.Alerts) == limit {
			out.More = true
			break
		}
		ia := &InboxAlert{Alert: a}
		p, ok := patients[a.PatientID]
		if !ok {
			if p, err = h.opts.Store.FindPatientByID(ctx, a.PatientID); err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
				h.error(w, r, fmt.Errorf("inbox: find patient: %w", err))
				return
			}
			patients[a.PatientID] = p
		}
		if p != nil {
			ia.PatientName = cmp.Or(strings.TrimSpace(p.Given+" "+p.Family), p.ID)
			ia.Ward, ia.Bed = p.Ward, p.Bed
		}
		out.Alerts = append(out.Alerts, ia)
	}
	slices.SortStableFunc(out.Alerts, func(a, b *InboxAlert) int {
		return cmp.Or(
			cmp.Compare(inboxRank(a.Alert), inboxRank(b.Alert)),
			b.Raised.Compare(a.Raised),
		)
	})
	h.json(w, http.StatusOK, out)
}
