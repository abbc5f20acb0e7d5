package fhir

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/netlimit"
	"github.com/vigil-iomt/vigil/internal/smart"
)

// HTTP side of subscriptions (Subscription create, read, search, update,
// delete, $status, $get-ws-binding-token) and of DetectedIssue (alerts).

func (h *handler) subscriptions() (*Subscriptions, error) {
	if h.o.Subscriptions == nil {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "subscriptions are not enabled on this server")
	}
	return h.o.Subscriptions, nil
}

// subscriptionBody reads and checks a Subscription the caller may hold.
// ownSubscription finds the subscription in the URL among the caller's
// (an admin's: any).
func (h *handler) ownSubscription(r *http.Request, p *vigil.Principal) (*Subscriptions, *vigil.Subscription, error) {
	m, err := h.subscriptions()
	if err != nil {
		return nil, nil, err
	}
	s, err := m.get(r.PathValue("id"), p)
	return m, s, err
}

func (h *handler) subscriptionBody(r *http.Request, p *vigil.Principal) (*vigil.Subscription, error) {
	body, err := netlimit.ReadBody(r.Body, r.ContentLength, h.o.MaxBody)
	if err != nil {
		return nil, vigil.Errorf(vigil.EINVALID, "cannot read the Subscription")
	}
	if len(body) > h.o.MaxBody {
		return nil, statusError{http.StatusRequestEntityTooLarge, "too-costly", fmt.Sprintf("the Subscription exceeds %d bytes", h.o.MaxBody)}
	}
	s, err := parseSubscription(body, h.o.Now())
	if err != nil {
		return nil, err
	}
	typ := topics[s.Topic].resource
	if len(p.Scopes) > 0 && smart.Grant(p.Scopes, typ, smart.Read) == "" {
		return nil, vigil.Errorf(vigil.EFORBIDDEN, "this token's scopes do not allow reading %s, which this topic notifies", typ)
	}
	pid := filterValue(s, "patient")
	if p.Role == vigil.RolePatient {
		// A patient's account (or a patient/ scope) hears of its own patient only.
		if pid != "" && pid != p.PatientID {
			return nil, forbiddenPatient()
		}
		if pid == "" {
			q, _ := url.ParseQuery(s.Filter)
			q.Set("patient", "Patient/"+p.PatientID)
			s.Filter = q.Encode()
		}
	} else if pid != "" {
		if _, err := h.o.Patients.FindPatientByID(r.Context(), pid); err != nil {
			return nil, err
		}
		if err := h.sees(r.Context(), p, pid); err != nil {
			return nil, err
		}
	}
	s.Owner = p.UserID
	return s, nil
}

func (h *handler) createSubscription(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	m, err := h.subscriptions()
	if err != nil {
		return err
	}
	s, err := h.subscriptionBody(r, p)
	if err != nil {
		return err
	}
	if s, err = m.create(r.Context(), s); err != nil {
		return err
	}
	w.Header().Set("Location", baseURL(r)+"/Subscription/"+s.ID)
	writeResource(w, http.StatusCreated, SubscriptionResource(s))
	return nil
}

func (h *handler) updateSubscription(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	m, old, err := h.ownSubscription(r, p)
	if err != nil {
		return err
	}
	s, err := h.subscriptionBody(r, p)
	if err != nil {
		return err
	}
	if s, err = m.replace(r.Context(), old.ID, s); err != nil {
		return err
	}
	writeResource(w, http.StatusOK, SubscriptionResource(s))
	return nil
}

func (h *handler) readSubscription(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	_, s, err := h.ownSubscription(r, p)
	if err != nil {
		return err
	}
	writeRead(w, r, max(s.Version, 1), SubscriptionResource(s))
	return nil
}

func (h *handler) searchSubscriptions(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	m, err := h.subscriptions()
	if err != nil {
		return err
	}
	q, err := params(r, "status", "_summary")
	if err != nil {
		return err
	}
	var subs []*vigil.Subscription
	for _, s := range m.list(p) {
		if v := q.Get("status"); v == "" || v == s.Status {
			subs = append(subs, s)
		}
	}
	n := len(subs)
	if only, err := summaryCount(q); err != nil {
		return err
	} else if only {
		writeCount(w, r, n)
		return nil
	}
	b := searchset(r, &n, "")
	for _, s := range subs {
		b.add(r, "Subscription", s.ID, SubscriptionResource(s))
	}
	writeResource(w, http.StatusOK, b)
	return nil
}

func (h *handler) deleteSubscription(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	m, s, err := h.ownSubscription(r, p)
	if err != nil {
		return err
	}
	if err := m.remove(r.Context(), s.ID); err != nil {
		return err
	}
	writeOutcomeInfo(w, http.StatusOK, "Subscription/"+s.ID+" deleted")
	return nil
}

// subscriptionStatus is $status: a searchset with the subscription-status
// Parameters (type query-status): status, error, events so far.
func (h *handler) subscriptionStatus(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	_, s, err := h.ownSubscription(r, p)
	if err != nil {
		return err
	}
	n := 1
	b := searchset(r, &n, "")
	b.Entry = append(b.Entry, BundleEntry{FullURL: baseURL(r) + "/Subscription/" + s.ID + "/$status", Resource: statusParameters(baseURL(r), s, "query-status", nil), Search: &EntrySearch{Mode: "match"}})
	writeResource(w, http.StatusOK, b)
	return nil
}

// wsBindingToken is $get-ws-binding-token for a websocket subscription.
func (h *handler) wsBindingToken(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	m, s, err := h.ownSubscription(r, p)
	if err != nil {
		return err
	}
	if s.Channel != "websocket" {
		return vigil.Errorf(vigil.EINVALID, "Subscription/%s is a %s subscription; binding tokens are for websocket ones", s.ID, s.Channel)
	}
	tok, exp := m.bindingToken(s.ID)
	ws := strings.Replace(strings.Replace(baseURL(r), "https://", "wss://", 1), "http://", "ws://", 1) + "/$subscription-ws"
	writeResource(w, http.StatusOK, map[string]any{"resourceType": "Parameters", "parameter": []map[string]any{
		{"name": "token", "valueString": tok},
		{"name": "expiration", "valueDateTime": instant(exp)},
		{"name": "subscription", "valueString": s.ID},
		{"name": "websocket-url", "valueUrl": ws},
	}})
	return nil
}

func (h *handler) subscriptionWS(w http.ResponseWriter, r *http.Request) {
	if h.o.Subscriptions == nil {
		writeOutcome(w, http.StatusNotFound, "not-supported", "subscriptions are not enabled on this server", "")
		return
	}
	h.o.Subscriptions.serveWS(w, r)
}

func (h *handler) alertStore() (vigil.AlertStore, error) {
	if h.o.Alerts == nil {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "this server serves no alerts")
	}
	return h.o.Alerts, nil
}

func (h *handler) readDetectedIssue(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	st, err := h.alertStore()
	if err != nil {
		return err
	}
	a, err := st.FindAlertByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if p.Role == vigil.RolePatient && a.PatientID != p.PatientID {
		return forbiddenPatient()
	}
	if err := h.sees(r.Context(), p, a.PatientID); err != nil {
		return err
	}
	writeRead(w, r, max(1, len(a.History)), AlertResource(a))
	return nil
}

// searchDetectedIssues lists a patient's alerts, newest first.
func (h *handler) searchDetectedIssues(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	st, err := h.alertStore()
	if err != nil {
		return err
	}
	q, err := params(r, "patient", "subject", "status", "_count", "_summary")
	if err != nil {
		return err
	}
	f := vigil.AlertFilter{}
	if f.PatientID, err = patientParam(q, p); err == nil {
		err = h.sees(r.Context(), p, f.PatientID)
	}
	if err != nil {
		return err
	}
	switch q.Get("status") {
	case "":
	case "preliminary":
		f.States = []string{vigil.AlertFiring, vigil.AlertAcknowledged}
	case "final":
		f.States = []string{vigil.AlertResolved}
	default:
		return vigil.FieldErrorf("status", "invalid", "status may be preliminary (open alerts) or final (resolved)")
	}
	n, err := count(q)
	if err != nil {
		return err
	}
	f.Limit = n
	if only, err := summaryCount(q); err != nil {
		return err
	} else if only {
		f.Limit = 1 << 30
		as, err := st.FindAlerts(r.Context(), f)
		if err != nil {
			return err
		}
		writeCount(w, r, len(as))
		return nil
	}
	as, err := st.FindAlerts(r.Context(), f)
	if err != nil {
		return err
	}
	total := len(as)
	b := searchset(r, &total, "")
	if len(as) == n {
		b.Total = nil // there may be more than one page holds
	}
	for _, a := range as {
		b.add(r, "DetectedIssue", a.ID, AlertResource(a))
	}
	writeResource(w, http.StatusOK, b)
	return nil
}
