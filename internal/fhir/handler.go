// Package fhir serves Vigil's data as FHIR R4 at /fhir/R4: Patient,
// Device, DeviceMetric and Observation read and search,
// Observation/$lastn, and the CapabilityStatement at /fhir/R4/metadata.
// Observations follow the FHIR R4 vital-signs profiles (blood pressure as
// an 85354-9 panel with systolic and diastolic components). Errors are
// OperationOutcomes.
//
// Search parameters (every search also takes _summary=count):
//
//	Patient      _id, identifier ([system|]value), name, family, given (prefixes,
//	             case-insensitive), gender, birthdate (date prefixes), _count, _cursor
//	Device       _id, identifier ([system|]serial), patient, _count, _cursor
//	DeviceMetric _id, source (Device), type (LOINC), category, _count, _cursor
//	Observation  patient (or subject=Patient/id; required), code ([system|]code, comma = OR),
//	             category, date (eq, ne, gt, lt, ge, le, sa, eb, ap; repeat to AND),
//	             device, _count (≤ 1000), _sort (date or -date), _cursor (from next links),
//	             _include (Observation:patient, Observation:device)
//	$lastn       patient, code, category, max (per code, default 1)
//
// Unknown parameters are refused (400), so a typo never silently widens a
// search. Clinicians, nurses and admins read everything (clinicians and
// nurses with wards: their wards' patients); a patient's account reads
// only that patient.
package fhir

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/smart"
)

// Options configure the handler.
type Options struct {
	// Audit records every authenticated read (nil: none).
	Audit        audit.Recorder
	Patients     vigil.PatientStore
	Devices      vigil.DeviceStore
	Observations vigil.ObservationStore
	// Authenticate returns the caller; EUNAUTHORIZED when there is no or a
	// bad token.
	Authenticate func(*http.Request) (*vigil.Principal, error)
	Now          func() time.Time
	Logger       *slog.Logger
	// Ingester and AuthenticateDevice enable device writes: POST
	// Observation and POST of batch Bundles (HTTP Basic, device id and
	// secret). nil: the API is read-only.
	Ingester           vigil.Ingester
	AuthenticateDevice func(*http.Request) (string, error)
	MaxBody            int // default 256 KiB
	// Exporter runs Bulk Data exports (nil: $export is not offered).
	Exporter *Exporter
	// Subscriptions delivers topic-based subscriptions (nil: none).
	Subscriptions *Subscriptions
	// Alerts serves alerts as DetectedIssue (nil: none).
	Alerts vigil.AlertStore
}

// Base is the path prefix the handler serves.
const Base = "/fhir/R4"

const (
	defaultCount = 100
	maxCount     = 1000
)

type handler struct {
	o      Options
	mux    *http.ServeMux
	routes []string // registered patterns, for the authorization-matrix test
}

func (h *handler) handle(pattern string, fn http.HandlerFunc) {
	h.routes = append(h.routes, pattern)
	h.mux.HandleFunc(pattern, fn)
}

// Routes returns the patterns a handler made by NewHandler routes.
func Routes(h http.Handler) []string {
	if x, ok := h.(*handler); ok {
		return slices.Clone(x.routes)
	}
	return nil
}

// NewHandler returns the FHIR API handler. It expects full request paths
// starting with /fhir/R4.
func NewHandler(o Options) http.Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 256 << 10
	}
	h := &handler{o: o, mux: http.NewServeMux()}
	h.handle("GET "+Base+"/metadata", h.metadata)
	h.handle("GET "+Base+"/Patient", h.auth("Patient", smart.Search, h.searchPatients))
	h.handle("GET "+Base+"/Patient/{id}", h.auth("Patient", smart.Read, h.readPatient))
	h.handle("PUT "+Base+"/Patient/{id}", h.auth("Patient", smart.Update, h.updatePatient))
	h.handle("GET "+Base+"/Device", h.auth("Device", smart.Search, h.searchDevices))
	h.handle("PUT "+Base+"/Device/{id}", h.auth("Device", smart.Update, h.updateDevice))
	h.handle("GET "+Base+"/Device/{id}", h.auth("Device", smart.Read, h.readDevice))
	h.handle("GET "+Base+"/DeviceMetric", h.auth("DeviceMetric", smart.Search, h.searchDeviceMetrics))
	h.handle("GET "+Base+"/DeviceMetric/{id}", h.auth("DeviceMetric", smart.Read, h.readDeviceMetric))
	h.handle("GET "+Base+"/Observation", h.auth("Observation", smart.Search, h.searchObservations))
	h.handle("GET "+Base+"/DetectedIssue", h.auth("DetectedIssue", smart.Search, h.searchDetectedIssues))
	h.handle("GET "+Base+"/DetectedIssue/{id}", h.auth("DetectedIssue", smart.Read, h.readDetectedIssue))
	h.handle("POST "+Base+"/Subscription", h.auth("Subscription", smart.Create, h.createSubscription))
	h.handle("GET "+Base+"/Subscription", h.auth("Subscription", smart.Search, h.searchSubscriptions))
	h.handle("GET "+Base+"/Subscription/{id}", h.auth("Subscription", smart.Read, h.readSubscription))
	h.handle("PUT "+Base+"/Subscription/{id}", h.auth("Subscription", smart.Update, h.updateSubscription))
	h.handle("DELETE "+Base+"/Subscription/{id}", h.auth("Subscription", smart.Delete, h.deleteSubscription))
	h.handle("GET "+Base+"/Subscription/{id}/$status", h.auth("Subscription", smart.Read, h.subscriptionStatus))
	h.handle("GET "+Base+"/Subscription/{id}/$get-ws-binding-token", h.auth("Subscription", smart.Read, h.wsBindingToken))
	h.handle("POST "+Base+"/Subscription/{id}/$get-ws-binding-token", h.auth("Subscription", smart.Read, h.wsBindingToken))
	// The websocket authenticates by the binding token a client sends.
	h.handle("GET "+Base+"/$subscription-ws", h.subscriptionWS)
	// Bulk export checks the scopes of each exported type itself.
	h.handle("GET "+Base+"/$export", h.auth("", smart.Read, h.kickOff("system")))
	h.handle("GET "+Base+"/Patient/$export", h.auth("", smart.Read, h.kickOff("patient")))
	h.handle("GET "+Base+"/Group/{id}/$export", h.auth("", smart.Read, h.kickOff("group")))
	h.handle("GET "+Base+"/$export-status/{job}", h.auth("", smart.Read, h.exportStatus))
	h.handle("DELETE "+Base+"/$export-status/{job}", h.auth("", smart.Read, h.cancelExport))
	h.handle("GET "+Base+"/$export-file/{job}/{file}", h.auth("", smart.Read, h.exportFileHandler))
	h.handle("GET "+Base+"/Observation/$lastn", h.auth("Observation", smart.Search, h.lastn))
	h.handle("GET "+Base+"/Observation/{id}", h.auth("Observation", smart.Read, h.readObservation))
	if o.Ingester != nil && o.AuthenticateDevice != nil {
		h.handle("POST "+Base+"/Observation", h.deviceWrite(false))
		h.handle("POST "+Base+"/{$}", h.deviceWrite(true))
		h.handle("POST "+Base, h.deviceWrite(true))
	}
	h.handle(Base+"/", h.fallback)
	h.handle(Base, h.fallback)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *handler) fallback(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET")
		writeOutcome(w, http.StatusMethodNotAllowed, "not-supported", "Vigil's FHIR API reads with GET; it takes PUT of Patient and Device (admins, with If-Match) and device POSTs of Observations and Bundles only", "")
		return
	}
	writeOutcome(w, http.StatusNotFound, "not-supported", "no such FHIR endpoint; Vigil serves Patient, Device, Observation, Observation/$lastn and metadata", "")
}

type call func(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error

// auth authenticates the caller of an interaction (a SMART letter) on a
// resource type, checks their role and, for a scoped token, its scopes.
func (h *handler) auth(typ string, interaction byte, c call) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := h.o.Authenticate(r)
		if err == nil {
			switch p.Role {
			case vigil.RoleAdmin, vigil.RoleClinician, vigil.RoleNurse:
			case vigil.RolePatient:
				if p.PatientID == "" {
					err = vigil.Errorf(vigil.EFORBIDDEN, "this patient account is not linked to a patient record")
				}
			default:
				err = vigil.Errorf(vigil.EFORBIDDEN, "role %s may not read clinical data", p.Role)
			}
		}
		if err == nil && p.Guest != "" {
			err = vigil.Errorf(vigil.EFORBIDDEN, "a share link opens the web app's view of one patient, not the FHIR API")
		}
		acting := p
		if err == nil && len(p.Scopes) > 0 && typ != "" {
			acting, err = h.scoped(r, p, typ, interaction)
		}
		if err == nil {
			err = c(w, r, acting)
		}
		if err != nil {
			h.fail(w, r, err)
		}
		if h.o.Audit != nil {
			actor, role := "", ""
			if p != nil {
				actor, role = p.UserID, p.Role
			}
			h.o.Audit(r.Context(), audit.FromRequest(r, actor, role, err))
		}
	}
}

// scoped applies a token's SMART scopes: user/ and system/ scopes leave
// the user's own permissions; patient/ scopes confine the caller to the
// launch patient, as a patient's own account is, and allow no changes.
func (h *handler) scoped(r *http.Request, p *vigil.Principal, typ string, interaction byte) (*vigil.Principal, error) {
	switch smart.Grant(p.Scopes, typ, interaction) {
	case smart.User, smart.System:
		return p, nil
	case smart.Patient:
		if interaction != smart.Read && interaction != smart.Search {
			return nil, vigil.Errorf(vigil.EFORBIDDEN, "patient/ scopes read one patient's record and change nothing; changes need %s", smart.Needed(typ, interaction))
		}
		if err := h.sees(r.Context(), p, p.LaunchPatient); err != nil {
			return nil, err
		}
		c := *p
		c.Role, c.PatientID, c.Wards, c.Glass = vigil.RolePatient, p.LaunchPatient, nil, nil
		return &c, nil
	}
	return nil, vigil.Errorf(vigil.EFORBIDDEN, "this token's scopes (%s) do not allow this on %s; it needs a scope such as %s",
		strings.Join(p.Scopes, " "), typ, smart.Needed(typ, interaction))
}

// outcome codes per Vigil error code.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	if se, ok := err.(statusError); ok {
		writeOutcome(w, se.status, se.code, se.msg, "")
		return
	}
	e, ok := err.(*vigil.Error)
	if !ok {
		e = &vigil.Error{Code: vigil.EINTERNAL, Message: err.Error()}
	}
	status, code := http.StatusInternalServerError, "exception"
	switch e.Code {
	case vigil.EINVALID:
		status, code = http.StatusBadRequest, "invalid"
	case vigil.EUNAUTHORIZED:
		status, code = http.StatusUnauthorized, "login"
		w.Header().Set("WWW-Authenticate", `Bearer realm="vigil"`)
	case vigil.EFORBIDDEN:
		status, code = http.StatusForbidden, "forbidden"
	case vigil.ENOTFOUND:
		status, code = http.StatusNotFound, "not-found"
	case vigil.ECONFLICT:
		status, code = http.StatusConflict, "conflict"
	case vigil.EUNAVAILABLE:
		status, code = http.StatusServiceUnavailable, "transient"
		w.Header().Set("Retry-After", "5")
	case vigil.EFULL:
		status, code = http.StatusInsufficientStorage, "transient"
		w.Header().Set("Retry-After", "30")
	}
	msg := e.Message
	if e.Code == vigil.EINTERNAL {
		h.o.Logger.Error("FHIR request failed", "route", r.Pattern, "err", err)
		msg = "internal error; the server log has the details"
	}
	writeOutcome(w, status, code, msg, e.Field)
}

func writeOutcome(w http.ResponseWriter, status int, code, msg, expr string) {
	oo := OperationOutcome{ResourceType: "OperationOutcome", Issue: []Issue{{Severity: "error", Code: code, Diagnostics: msg}}}
	if expr != "" {
		oo.Issue[0].Expression = []string{expr}
	}
	writeResource(w, status, oo)
}

func writeResource(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/fhir+json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// writeRead answers a read with the resource's version as a weak ETag
// (W/"3", as FHIR's versionId); when the client's If-None-Match names
// that version the answer is 304 Not Modified without a body.
func writeRead(w http.ResponseWriter, r *http.Request, version int, v any) {
	etag := `W/"` + strconv.Itoa(version) + `"`
	w.Header().Set("ETag", etag)
	for _, t := range strings.Split(r.Header.Get("If-None-Match"), ",") {
		if t = strings.TrimSpace(t); t == etag || t == strings.TrimPrefix(etag, "W/") || t == "*" {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	writeResource(w, http.StatusOK, v)
}

// params checks the query against the allowed parameter names.
func params(r *http.Request, allowed ...string) (url.Values, error) {
	q := r.URL.Query()
	for k := range q {
		if k == "_format" || k == "_pretty" || slices.Contains(allowed, k) {
			continue
		}
		return nil, vigil.FieldErrorf(k, "unknown-parameter", "search parameter %q is not supported here; supported: %s", k, strings.Join(allowed, ", "))
	}
	return q, nil
}

func count(q url.Values) (int, error) {
	v := q.Get("_count")
	if v == "" {
		return defaultCount, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxCount {
		return 0, vigil.FieldErrorf("_count", "invalid", "_count must be a whole number from 1 to %d", maxCount)
	}
	return n, nil
}

func offset(q url.Values) (int, error) {
	v := q.Get("_offset")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, vigil.FieldErrorf("_offset", "invalid", "_offset must be a non-negative whole number")
	}
	return n, nil
}

// baseURL is the absolute URL of /fhir/R4 as the client reached it.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host + Base
}

func selfLink(r *http.Request) string {
	u := baseURL(r) + strings.TrimPrefix(r.URL.Path, Base)
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	return u
}

func nextLink(r *http.Request, set map[string]string) string {
	q := r.URL.Query()
	for k, v := range set {
		q.Set(k, v)
	}
	return baseURL(r) + strings.TrimPrefix(r.URL.Path, Base) + "?" + q.Encode()
}

// cursorLink is the next page after the resource with id last (keyset
// paging by id: a page never repeats or skips one when others are added).
func cursorLink(r *http.Request, last string) string {
	q := r.URL.Query()
	q.Del("_offset")
	q.Set("_cursor", last)
	return baseURL(r) + strings.TrimPrefix(r.URL.Path, Base) + "?" + q.Encode()
}

func searchset(r *http.Request, total *int, next string) *Bundle {
	b := &Bundle{ResourceType: "Bundle", Type: "searchset", Total: total, Link: []BundleLink{{Relation: "self", URL: selfLink(r)}}}
	if next != "" {
		b.Link = append(b.Link, BundleLink{Relation: "next", URL: next})
	}
	return b
}

func (b *Bundle) add(r *http.Request, typ, id string, res any) {
	b.Entry = append(b.Entry, BundleEntry{FullURL: baseURL(r) + "/" + typ + "/" + id, Resource: res, Search: &EntrySearch{Mode: "match"}})
}

// notYourWard refuses a patient outside a clinician's or nurse's wards.
func notYourWard(id string) error {
	return vigil.Errorf(vigil.EFORBIDDEN, "patient %s is not on your wards; in an emergency, break the glass (POST /api/v1/patients/%s/break-glass)", id, id)
}

// sees refuses a patient the principal may not see (care-team scoping);
// an unknown patient passes (the read answers for it).
func (h *handler) sees(ctx context.Context, p *vigil.Principal, patientID string) error {
	if p.Role == vigil.RoleAdmin || (len(p.Wards) == 0 && p.Role != vigil.RolePatient) {
		return nil
	}
	pt, err := h.o.Patients.FindPatientByID(ctx, patientID)
	if err != nil {
		return nil
	}
	if !p.Sees(pt.ID, pt.Ward) {
		return notYourWard(pt.ID)
	}
	return nil
}

func forbiddenPatient() error {
	return vigil.Errorf(vigil.EFORBIDDEN, "a patient account may read only its own patient's data")
}

func (h *handler) readPatient(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	id := r.PathValue("id")
	if p.Role == vigil.RolePatient && id != p.PatientID {
		return forbiddenPatient()
	}
	pt, err := h.o.Patients.FindPatientByID(r.Context(), id)
	if err != nil {
		return err
	}
	if !p.Sees(pt.ID, pt.Ward) {
		return notYourWard(pt.ID)
	}
	writeRead(w, r, pt.Version, PatientResource(pt))
	return nil
}

func (h *handler) searchPatients(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	q, err := params(r, "_id", "identifier", "name", "family", "given", "gender", "birthdate", "_count", "_offset", "_cursor", "_summary")
	if err != nil {
		return err
	}
	f := vigil.PatientFilter{ID: q.Get("_id"), Family: q.Get("family"), Given: q.Get("given"), Name: q.Get("name"), Gender: q.Get("gender"), After: q.Get("_cursor")}
	if v := q.Get("identifier"); v != "" {
		sys, val, hasSys := tokenParam(v)
		if hasSys && sys != "" && sys != SystemIdentifier {
			val = "\x00" // another system: nothing of ours matches
		}
		f.Identifier = val
	}
	if f.Born, f.NotBorn, err = dateParam("birthdate", q["birthdate"], false, h.o.Now()); err != nil {
		return err
	}
	if p.Role == vigil.RolePatient {
		if f.ID != "" && f.ID != p.PatientID {
			return forbiddenPatient()
		}
		f.ID = p.PatientID
	}
	if f.Limit, err = count(q); err != nil {
		return err
	}
	if f.Offset, err = offset(q); err != nil {
		return err
	}
	onlyCount, err := summaryCount(q)
	if err != nil {
		return err
	}
	var ps []*vigil.Patient
	total, limit := 0, f.Limit
	f.Limit++ // one more than a page: is there a next one?
	if scoped := p.Role != vigil.RoleAdmin && len(p.Wards) > 0; scoped {
		// A clinician with wards pages and counts only the patients they
		// see: filter all matches, then take the page.
		all := f
		all.Offset, all.Limit = 0, math.MaxInt
		if ps, _, err = h.o.Patients.FindPatients(r.Context(), all); err != nil {
			return err
		}
		ps = slices.DeleteFunc(ps, func(pt *vigil.Patient) bool { return !p.Sees(pt.ID, pt.Ward) })
		total = len(ps)
		if f.After != "" {
			ps = slices.DeleteFunc(ps, func(pt *vigil.Patient) bool { return pt.ID <= f.After })
		}
		ps = ps[min(f.Offset, len(ps)):min(f.Offset+f.Limit, len(ps))]
	} else if ps, total, err = h.o.Patients.FindPatients(r.Context(), f); err != nil {
		return err
	}
	if onlyCount {
		writeCount(w, r, total)
		return nil
	}
	next := ""
	if len(ps) > limit {
		ps = ps[:limit]
		next = cursorLink(r, ps[len(ps)-1].ID)
	}
	b := searchset(r, &total, next)
	for _, pt := range ps {
		b.add(r, "Patient", pt.ID, PatientResource(pt))
	}
	writeResource(w, http.StatusOK, b)
	return nil
}

func (h *handler) currentPatient(r *http.Request, deviceID string) (string, error) {
	as, err := h.o.Devices.Assignments(r.Context(), deviceID)
	if err != nil {
		return "", err
	}
	for _, a := range as {
		if a.To.IsZero() {
			return a.PatientID, nil
		}
	}
	return "", nil
}

func (h *handler) readDevice(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	d, err := h.o.Devices.FindDeviceByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	pid, err := h.currentPatient(r, d.ID)
	if err != nil {
		return err
	}
	if p.Role == vigil.RolePatient && pid != p.PatientID {
		return forbiddenPatient()
	}
	writeRead(w, r, d.Version, DeviceResource(d, pid))
	return nil
}

func (h *handler) searchDevices(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	q, err := params(r, "_id", "identifier", "patient", "_count", "_offset", "_cursor", "_summary")
	if err != nil {
		return err
	}
	f := vigil.DeviceFilter{ID: q.Get("_id"), PatientID: strings.TrimPrefix(q.Get("patient"), "Patient/"), After: q.Get("_cursor")}
	if v := q.Get("identifier"); v != "" {
		sys, val, hasSys := tokenParam(v)
		if hasSys && sys != "" && sys != SystemSerial {
			val = "\x00" // another system: nothing of ours matches
		}
		f.Serial = val
	}
	onlyCount, err := summaryCount(q)
	if err != nil {
		return err
	}
	if p.Role == vigil.RolePatient {
		if f.PatientID != "" && f.PatientID != p.PatientID {
			return forbiddenPatient()
		}
		f.PatientID = p.PatientID
	}
	if f.Limit, err = count(q); err != nil {
		return err
	}
	if f.Offset, err = offset(q); err != nil {
		return err
	}
	limit := f.Limit
	f.Limit++ // one more than a page: is there a next one?
	ds, total, err := h.o.Devices.FindDevices(r.Context(), f)
	if err != nil {
		return err
	}
	if onlyCount {
		writeCount(w, r, total)
		return nil
	}
	next := ""
	if len(ds) > limit {
		ds = ds[:limit]
		next = cursorLink(r, ds[len(ds)-1].ID)
	}
	b := searchset(r, &total, next)
	for _, d := range ds {
		pid, err := h.currentPatient(r, d.ID)
		if err != nil {
			return err
		}
		b.add(r, "Device", d.ID, DeviceResource(d, pid))
	}
	writeResource(w, http.StatusOK, b)
	return nil
}

// channelStore is the optional part of a store that lists what each
// device has reported (the embedded store does); without it Vigil serves
// no DeviceMetric.
type channelStore interface {
	DeviceChannels(ctx context.Context, deviceID string) ([]vigil.Channel, error)
}

// deviceMetrics returns the channels of one device ("": all) that the
// principal may see, with each device's revocation state.
func (h *handler) deviceMetrics(r *http.Request, p *vigil.Principal, deviceID string) ([]vigil.Channel, map[string]bool, error) {
	cs, ok := h.o.Observations.(channelStore)
	if !ok {
		return nil, nil, vigil.Errorf(vigil.ENOTFOUND, "this store keeps no device channels")
	}
	chans, err := cs.DeviceChannels(r.Context(), deviceID)
	if err != nil {
		return nil, nil, err
	}
	revoked := map[string]bool{}
	allowed := map[string]bool{}
	for _, c := range chans {
		if _, done := allowed[c.Device]; done {
			continue
		}
		d, err := h.o.Devices.FindDeviceByID(r.Context(), c.Device)
		if vigil.ErrorCode(err) == vigil.ENOTFOUND {
			allowed[c.Device] = false // removed from the registry
			continue
		} else if err != nil {
			return nil, nil, err
		}
		revoked[c.Device] = d.Revoked
		allowed[c.Device] = true
		if p.Role == vigil.RolePatient {
			pid, err := h.currentPatient(r, c.Device)
			if err != nil {
				return nil, nil, err
			}
			allowed[c.Device] = pid == p.PatientID
		}
	}
	chans = slices.DeleteFunc(chans, func(c vigil.Channel) bool { return !allowed[c.Device] })
	return chans, revoked, nil
}

func (h *handler) readDeviceMetric(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	id := r.PathValue("id")
	dev, code, ok := cutLast(id, ".")
	notFound := vigil.Errorf(vigil.ENOTFOUND, "DeviceMetric %s not found (ids are {device}.{LOINC code})", id)
	if !ok {
		return notFound
	}
	chans, revoked, err := h.deviceMetrics(r, p, dev)
	if err != nil {
		return err
	}
	for _, c := range chans {
		if c.Code == code {
			writeRead(w, r, 1, DeviceMetricResource(c, revoked[c.Device]))
			return nil
		}
	}
	if p.Role == vigil.RolePatient {
		if _, err := h.o.Devices.FindDeviceByID(r.Context(), dev); err == nil {
			return forbiddenPatient()
		}
	}
	return notFound
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

func (h *handler) searchDeviceMetrics(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	q, err := params(r, "_id", "source", "type", "category", "_count", "_offset", "_cursor", "_summary")
	if err != nil {
		return err
	}
	device := strings.TrimPrefix(q.Get("source"), "Device/")
	if id := q.Get("_id"); id != "" {
		dev, _, _ := cutLast(id, ".")
		if device != "" && device != dev {
			device = "\x00"
		} else {
			device = dev
		}
	}
	var types []string
	if q.Has("type") {
		if types, err = codeParam(url.Values{"code": q["type"]}); err != nil {
			return err
		}
	}
	if v := q.Get("category"); v != "" && v != "measurement" {
		device = "\x00" // Vigil's metrics are all measurements
	}
	n, err := count(q)
	if err != nil {
		return err
	}
	off, err := offset(q)
	if err != nil {
		return err
	}
	var chans []vigil.Channel
	var revoked map[string]bool
	if device != "\x00" {
		if chans, revoked, err = h.deviceMetrics(r, p, device); err != nil {
			return err
		}
	}
	chans = slices.DeleteFunc(chans, func(c vigil.Channel) bool {
		return (device != "" && c.Device != device) || (len(types) > 0 && !slices.Contains(types, c.Code)) ||
			(q.Get("_id") != "" && DeviceMetricID(c.Device, c.Code) != q.Get("_id"))
	})
	total := len(chans)
	if only, err := summaryCount(q); err != nil {
		return err
	} else if only {
		writeCount(w, r, total)
		return nil
	}
	slices.SortFunc(chans, func(a, b vigil.Channel) int {
		return strings.Compare(DeviceMetricID(a.Device, a.Code), DeviceMetricID(b.Device, b.Code))
	})
	if after := q.Get("_cursor"); after != "" {
		chans = slices.DeleteFunc(chans, func(c vigil.Channel) bool { return DeviceMetricID(c.Device, c.Code) <= after })
	}
	chans = chans[min(off, len(chans)):]
	next := ""
	if len(chans) > n {
		chans = chans[:n]
		next = cursorLink(r, DeviceMetricID(chans[len(chans)-1].Device, chans[len(chans)-1].Code))
	}
	b := searchset(r, &total, next)
	for _, c := range chans {
		m := DeviceMetricResource(c, revoked[c.Device])
		b.add(r, "DeviceMetric", m.ID, m)
	}
	writeResource(w, http.StatusOK, b)
	return nil
}

// originStore is the optional part of a store that keeps where readings
// were taken (the embedded store does).
type originStore interface {
	FillOrigins(ctx context.Context, obs []*vigil.Observation) error
}

func (h *handler) fillOrigins(ctx context.Context, obs []*vigil.Observation) error {
	if os, ok := h.o.Observations.(originStore); ok {
		return os.FillOrigins(ctx, obs)
	}
	return nil
}

func (h *handler) readObservation(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	o, err := h.o.Observations.FindObservationByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if p.Role == vigil.RolePatient && o.PatientID != p.PatientID {
		return forbiddenPatient()
	}
	if err := h.sees(r.Context(), p, o.PatientID); err != nil {
		return err
	}
	if err := h.fillOrigins(r.Context(), []*vigil.Observation{o}); err != nil {
		return err
	}
	writeRead(w, r, 1, ObservationResource(o)) // a stored value never changes
	return nil
}

// patientParam reads patient= or subject=Patient/..., required.
func patientParam(q url.Values, p *vigil.Principal) (string, error) {
	id := strings.TrimPrefix(q.Get("patient"), "Patient/")
	if s := q.Get("subject"); s != "" {
		if !strings.HasPrefix(s, "Patient/") {
			return "", vigil.FieldErrorf("subject", "invalid", "subject must reference a Patient (subject=Patient/{id})")
		}
		if id != "" && id != strings.TrimPrefix(s, "Patient/") {
			return "", vigil.FieldErrorf("subject", "invalid", "patient and subject name different patients")
		}
		id = strings.TrimPrefix(s, "Patient/")
	}
	if id == "" {
		if p.Role == vigil.RolePatient {
			return p.PatientID, nil
		}
		return "", vigil.FieldErrorf("patient", "required", "Observation searches need patient={id}")
	}
	if p.Role == vigil.RolePatient && id != p.PatientID {
		return "", forbiddenPatient()
	}
	return id, nil
}

// codeParam parses code=[system|]code,... into LOINC codes.
func codeParam(q url.Values) ([]string, error) {
	var out []string
	for _, v := range q["code"] {
		for _, c := range strings.Split(v, ",") {
			sys, code, hasSys := strings.Cut(c, "|")
			if !hasSys {
				code = c
			} else if sys != "" && sys != vigil.SystemLOINC {
				return nil, vigil.FieldErrorf("code", "unknown-system", "Vigil stores LOINC codes; system %q is not searchable", sys)
			}
			if code == "" {
				return nil, vigil.FieldErrorf("code", "invalid", "empty code")
			}
			if code == vigil.LOINCSpO2Profile {
				code = vigil.LOINCSpO2
			}
			out = append(out, code)
		}
	}
	return out, nil
}

func (h *handler) searchObservations(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	q, err := params(r, "patient", "subject", "code", "category", "date", "device", "_count", "_sort", "_cursor", "_summary", "_include")
	if err != nil {
		return err
	}
	f := vigil.ObservationFilter{DeviceID: strings.TrimPrefix(q.Get("device"), "Device/"), Cursor: q.Get("_cursor"), SampledData: true}
	if f.PatientID, err = patientParam(q, p); err == nil {
		err = h.sees(r.Context(), p, f.PatientID)
	}
	if err != nil {
		return err
	}
	if f.Codes, err = codeParam(q); err != nil {
		return err
	}
	empty := false // the parameters contradict each other: no match
	if v := q.Get("category"); v != "" {
		cs, err := categoryCodes(v)
		if err != nil {
			return err
		}
		if len(f.Codes) > 0 {
			cs = slices.DeleteFunc(cs, func(c string) bool { return !slices.Contains(f.Codes, c) })
		}
		f.Codes, empty = cs, len(cs) == 0
	}
	in, not, err := dateParam("date", q["date"], true, h.o.Now())
	if err != nil {
		return err
	}
	period := intersect(in)
	f.From, f.To, f.Exclude = period.From, period.To, not
	empty = empty || emptyPeriod(period)
	switch q.Get("_sort") {
	case "", "date":
	case "-date":
		f.Desc = true
	default:
		return vigil.FieldErrorf("_sort", "invalid", "_sort may be date (oldest first, the default) or -date (newest first)")
	}
	if f.Limit, err = count(q); err != nil {
		return err
	}
	include, err := includes(q, "Observation", "patient", "device")
	if err != nil {
		return err
	}
	onlyCount, err := summaryCount(q)
	if err != nil {
		return err
	}
	if onlyCount {
		n := 0
		for f.Limit = maxCount; !empty; {
			obs, cursor, err := h.o.Observations.FindObservations(r.Context(), f)
			if err != nil {
				return err
			}
			n += len(obs)
			if f.Cursor = cursor; cursor == "" {
				break
			}
		}
		writeCount(w, r, n)
		return nil
	}
	if empty {
		writeResource(w, http.StatusOK, searchset(r, ptr(0), ""))
		return nil
	}
	obs, cursor, err := h.o.Observations.FindObservations(r.Context(), f)
	if err != nil {
		return err
	}
	if err := h.fillOrigins(r.Context(), obs); err != nil {
		return err
	}
	next := ""
	if cursor != "" {
		next = nextLink(r, map[string]string{"_cursor": cursor})
	}
	var total *int
	if cursor == "" && f.Cursor == "" {
		total = ptr(len(obs))
	}
	b := searchset(r, total, next)
	for _, o := range obs {
		b.add(r, "Observation", o.ID, ObservationResource(o))
	}
	return h.include(w, r, p, b, include, obs)
}

// includes parses _include=Type:param for the params a search allows.
func includes(q url.Values, typ string, allowed ...string) ([]string, error) {
	var out []string
	for _, v := range q["_include"] {
		t, param, _ := strings.Cut(v, ":")
		param, _, _ = strings.Cut(param, ":") // a target type, if any, changes nothing here
		if t != typ || !slices.Contains(allowed, param) {
			return nil, vigil.FieldErrorf("_include", "invalid", "_include=%s is not supported; use %s:%s", v, typ, strings.Join(allowed, " or "+typ+":"))
		}
		out = append(out, param)
	}
	return out, nil
}

// include adds the patients and devices a page of observations refers to
// (search mode "include"), each once, and writes the bundle. A patient's
// account gets its own patient and the devices assigned to it.
func (h *handler) include(w http.ResponseWriter, r *http.Request, p *vigil.Principal, b *Bundle, what []string, obs []*vigil.Observation) error {
	seen := map[string]bool{}
	for _, o := range obs {
		for _, param := range what {
			var typ, id string
			switch param {
			case "patient":
				typ, id = "Patient", o.PatientID
			case "device":
				typ, id = "Device", o.DeviceID
			}
			if id == "" || seen[typ+"/"+id] {
				continue
			}
			if len(p.Scopes) > 0 && smart.Grant(p.Scopes, typ, smart.Read) == "" {
				continue // the token's scopes do not reach this type
			}
			seen[typ+"/"+id] = true
			var res any
			switch typ {
			case "Patient":
				pt, err := h.o.Patients.FindPatientByID(r.Context(), id)
				if vigil.ErrorCode(err) == vigil.ENOTFOUND {
					continue
				} else if err != nil {
					return err
				}
				res = PatientResource(pt)
			case "Device":
				d, err := h.o.Devices.FindDeviceByID(r.Context(), id)
				if vigil.ErrorCode(err) == vigil.ENOTFOUND {
					continue
				} else if err != nil {
					return err
				}
				pid, err := h.currentPatient(r, d.ID)
				if err != nil {
					return err
				}
				if p.Role == vigil.RolePatient && pid != p.PatientID {
					continue // the device has moved on to someone else
				}
				res = DeviceResource(d, pid)
			}
			b.Entry = append(b.Entry, BundleEntry{FullURL: baseURL(r) + "/" + typ + "/" + id, Resource: res, Search: &EntrySearch{Mode: "include"}})
		}
	}
	writeResource(w, http.StatusOK, b)
	return nil
}

func ptr(n int) *int { return &n }

func (h *handler) lastn(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	q, err := params(r, "patient", "subject", "code", "category", "max")
	if err != nil {
		return err
	}
	pid, err := patientParam(q, p)
	if err == nil {
		err = h.sees(r.Context(), p, pid)
	}
	if err != nil {
		return err
	}
	cs, err := codeParam(q)
	if err != nil {
		return err
	}
	max := 1
	if v := q.Get("max"); v != "" {
		if max, err = strconv.Atoi(v); err != nil || max < 1 || max > maxCount {
			return vigil.FieldErrorf("max", "invalid", "max must be a whole number from 1 to %d", maxCount)
		}
	}
	var inCategory []string
	if v := q.Get("category"); v != "" {
		if inCategory, err = categoryCodes(v); err != nil {
			return err
		}
	}
	latest, err := h.o.Observations.LatestObservations(r.Context(), pid, cs, max)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(latest))
	for k := range latest {
		if q.Get("category") == "" || slices.Contains(inCategory, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	n := 0
	for _, k := range keys {
		n += len(latest[k])
	}
	b := searchset(r, &n, "")
	for _, k := range keys {
		for _, o := range latest[k] {
			b.add(r, "Observation", o.ID, ObservationResource(o))
		}
	}
	writeResource(w, http.StatusOK, b)
	return nil
}

func (h *handler) metadata(w http.ResponseWriter, r *http.Request) {
	sp := func(name, typ string) map[string]string { return map[string]string{"name": name, "type": typ} }
	res := func(typ string, search ...map[string]string) map[string]any {
		return map[string]any{
			"type":        typ,
			"interaction": []map[string]string{{"code": "read"}, {"code": "search-type"}},
			"searchParam": search,
			// Reads carry ETag W/"versionId" and honour If-None-Match (304).
			"versioning":      "versioned",
			"conditionalRead": "not-match",
		}
	}
	// Patient and Device take version-aware updates (If-Match required);
	// a Patient may be created by PUT with the client's id.
	updatable := func(m map[string]any, create bool) map[string]any {
		m["interaction"] = append(m["interaction"].([]map[string]string), map[string]string{"code": "update"})
		m["versioning"] = "versioned-update"
		m["updateCreate"] = create
		return m
	}
	obs := res("Observation", sp("patient", "reference"), sp("subject", "reference"), sp("code", "token"), sp("category", "token"), sp("date", "date"), sp("device", "reference"))
	obs["searchInclude"] = []string{"Observation:patient", "Observation:device"}
	obs["operation"] = []map[string]string{{"name": "lastn", "definition": "http://hl7.org/fhir/OperationDefinition/Observation-lastn"}}
	obs["supportedProfile"] = []string{profileBase + "vitalsigns", profileBase + "heartrate", profileBase + "oxygensat", profileBase + "resprate", profileBase + "bodytemp", profileBase + "bp", profileBase + "bodyweight", profileBase + "bodyheight", profileBase + "bmi"}
	const security = "Bearer tokens (vigil token create). Clinicians, nurses and admins read (clinicians and nurses with wards: their wards' patients); a patient's account reads its own data; admins update Patient and Device. Tokens may carry SMART on FHIR scopes (user/Observation.read, patient/*.read with a launch patient, system/*.read; SMART 1 and 2 syntax), enforced on every interaction; a scoped token works on this API only. Vigil issues the tokens itself (vigil token create --scope): there is no OAuth authorization endpoint."
	resources := []map[string]any{
		updatable(res("Patient", sp("_id", "token"), sp("identifier", "token"), sp("name", "string"), sp("family", "string"), sp("given", "string"), sp("gender", "token"), sp("birthdate", "date")), true),
		updatable(res("Device", sp("_id", "token"), sp("identifier", "token"), sp("patient", "reference")), false),
		res("DeviceMetric", sp("_id", "token"), sp("source", "reference"), sp("type", "token"), sp("category", "token")),
		obs,
	}
	rest := map[string]any{
		"mode": "server",
		"security": map[string]any{
			"description": security,
		},
	}
	if h.o.Exporter != nil {
		// Bulk Data export: the system, all patients, a group (a ward).
		rest["operation"] = []map[string]string{{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}}
		resources[0]["operation"] = []map[string]string{{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}}
		resources = append(resources, map[string]any{"type": "Group",
			"operation": []map[string]string{{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}}})
	}
	if h.o.Alerts != nil {
		resources = append(resources, map[string]any{"type": "DetectedIssue",
			"interaction": []map[string]string{{"code": "read"}, {"code": "search-type"}},
			"searchParam": []map[string]string{sp("patient", "reference"), sp("status", "token")}})
	}
	var instantiates []string
	if h.o.Subscriptions != nil {
		// Topic-based subscriptions (R5 Backport for R4): rest-hook and websocket.
		instantiates = append(instantiates, "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4")
		resources = append(resources, map[string]any{"type": "Subscription",
			"supportedProfile": []string{profileSubscripton},
			"interaction":      []map[string]string{{"code": "create"}, {"code": "read"}, {"code": "update"}, {"code": "delete"}, {"code": "search-type"}},
			"searchParam":      []map[string]string{sp("status", "token")},
			"operation": []map[string]string{
				{"name": "status", "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"},
				{"name": "get-ws-binding-token", "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-get-ws-binding-token"},
			}})
	}
	rest["resource"] = resources
	cs := map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         h.o.Now().UTC().Format(time.DateOnly),
		"kind":         "instance",
		"software":     map[string]string{"name": "Vigil"},
		"implementation": map[string]string{
			"description": "Vigil IoMT platform, FHIR R4 API",
			"url":         baseURL(r),
		},
		"fhirVersion": "4.0.1",
		"format":      []string{"json"},
		"rest":        []map[string]any{rest},
	}
	if len(instantiates) > 0 {
		cs["instantiates"] = instantiates
	}
	writeResource(w, http.StatusOK, cs)
}

func itoa(n int) string { return fmt.Sprint(n) }
