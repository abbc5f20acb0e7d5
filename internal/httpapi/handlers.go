package httpapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/netlimit"
	"github.com/vigil-iomt/vigil/internal/news2"
)

// IngestResponse is the body of a 200 answer to a readings POST: every
// reading is durable (or was stored before).
type IngestResponse struct {
	Accepted   int             `json:"accepted"`
	Duplicates int             `json:"duplicates"`
	Results    []ReadingStatus `json:"results"`
}

// appendJSON appends r as JSON, one result a line: a batch of thousands
// of readings is answered without reflection or re-indenting (which cost
// a tenth of the server's time taking 5,000-reading batches).
func (r *IngestResponse) appendJSON(b []byte) []byte {
	b = append(b, "{\n  \"accepted\": "...)
	b = strconv.AppendInt(b, int64(r.Accepted), 10)
	b = append(b, ",\n  \"duplicates\": "...)
	b = strconv.AppendInt(b, int64(r.Duplicates), 10)
	b = append(b, ",\n  \"results\": ["...)
	for i, st := range r.Results {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n    {\"id\": "...)
		b = appendJSONString(b, st.ID)
		b = append(b, ", \"status\": "...)
		b = appendJSONString(b, st.Status)
		b = append(b, '}')
	}
	if len(r.Results) > 0 {
		b = append(b, "\n  "...)
	}
	return append(b, "]\n}\n"...)
}

// appendJSONString appends s as a JSON string, as encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// ReadingStatus is the outcome of one reading: "stored" or "duplicate".
type ReadingStatus struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// ingestFormat returns the device ingest handler for one payload format
// (see vigil.Message.Format).
func (s *Server) ingestFormat(format string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { s.ingest(w, r, format) }
}

// deviceBody authenticates the device of the path (HTTP Basic, or its
// client certificate) and
// reads the body (at most MaxBody bytes). On failure it has answered and
// returns false.
func (s *Server) deviceBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	id := r.PathValue("id")
	user, err := s.o.Auth.DeviceFromRequest(r)
	if err != nil {
		if vigil.ErrorCode(err) == vigil.EUNAUTHORIZED {
			w.Header().Set("WWW-Authenticate", `Basic realm="vigil devices", charset="UTF-8"`)
			writeProblem(w, problemFor(err))
			return nil, false
		}
		s.fail(w, r, err)
		return nil, false
	}
	if user != id {
		writeProblem(w, problemFor(vigil.Errorf(vigil.EFORBIDDEN, "device %s may only post its own data (to /api/v1/devices/%s/...)", user, user)))
		return nil, false
	}
	if err := s.limit(s.byDevice, "device", id); err != nil {
		writeProblem(w, problemFor(err))
		return nil, false
	}
	body, err := netlimit.ReadBody(r.Body, r.ContentLength, s.o.MaxBody)
	if err != nil {
		writeProblem(w, problemFor(vigil.Errorf(vigil.EINVALID, "cannot read the request body: %v", err)))
		return nil, false
	}
	if len(body) > s.o.MaxBody {
		writeProblem(w, problemFor(&vigil.Error{Code: vigil.ETOOLARGE, Reason: "too-large",
			Message: fmt.Sprintf("body exceeds the limit of %d bytes: send fewer per request", s.o.MaxBody)}))
		return nil, false
	}
	return body, true
}

func (s *Server) ingest(w http.ResponseWriter, r *http.Request, format string) {
	id := r.PathValue("id")
	body, ok := s.deviceBody(w, r)
	if !ok {
		return
	}
	res := s.o.Ingester.Ingest(r.Context(), vigil.Message{
		DeviceID: id, Source: "http", Format: format, Topic: r.URL.Path, Payload: body, Received: s.o.Now().UTC(), Shed: true,
	})
	if res.Err != nil {
		writeProblem(w, problemFor(res.Err))
		return
	}
	out := IngestResponse{Results: make([]ReadingStatus, 0, len(res.Readings))}
	var errs []ReadingError
	for i, o := range res.Readings {
		switch {
		case o.Err != nil:
			e, _ := o.Err.(*vigil.Error)
			if e == nil {
				e = &vigil.Error{Message: o.Err.Error()}
			}
			errs = append(errs, ReadingError{Index: i, ID: o.ID, Field: e.Field, Reason: e.Reason, Detail: e.Message})
		case o.Duplicate:
			out.Duplicates++
			out.Results = append(out.Results, ReadingStatus{ID: o.ID, Status: "duplicate"})
		default:
			out.Accepted++
			out.Results = append(out.Results, ReadingStatus{ID: o.ID, Status: "stored"})
		}
	}
	if len(errs) == 0 {
		writeJSONHeader(w, http.StatusOK)
		w.Write(out.appendJSON(make([]byte, 0, 64+40*len(out.Results))))
		return
	}
	n := out.Accepted + out.Duplicates
	p := &Problem{
		Type: "https://vigil-iomt.github.io/problems/" + errs[0].Reason, Title: "Unprocessable Content",
		Status: http.StatusUnprocessableEntity, Code: vigil.EINVALID, Field: errs[0].Field, Reason: errs[0].Reason,
		Detail: fmt.Sprintf("%d of %d readings refused: %s. The other %d are stored (re-sending them is harmless).",
			len(errs), len(res.Readings), errs[0].Detail, n),
		Accepted: &n, Errors: errs,
	}
	if len(res.Readings) == 1 {
		p.Detail = errs[0].Detail
	}
	writeProblem(w, p)
}

func (s *Server) addPatient(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	var p vigil.Patient
	if err := s.decode(r, &p); err != nil {
		return err
	}
	if err := s.o.Admin.AddPatient(r.Context(), &p); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, p)
	return nil
}

func (s *Server) listPatients(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	q := r.URL.Query()
	f := vigil.PatientFilter{Ward: q.Get("ward"), Identifier: q.Get("identifier"), Family: q.Get("family")}
	var err error
	if f.Limit, err = intParam(q.Get("limit"), 100000); err != nil {
		return err
	}
	if f.Offset, err = intParam(q.Get("offset"), 0); err != nil {
		return err
	}
	ps, total, err := s.o.Store.FindPatients(r.Context(), f)
	if err != nil {
		return err
	}
	if seen := visible(r.Context(), s, p, ps, func(x *vigil.Patient) string { return x.ID }); len(seen) != len(ps) {
		ps, total = seen, len(seen) // a scoped user's count is of what they see
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	writeJSON(w, http.StatusOK, nonNil(ps))
	return nil
}

func (s *Server) getPatient(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	p, err := s.o.Store.FindPatientByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

// patientBaselines serves the patient's current 5-minute means scored
// against their personal baselines (internal/baseline).
func (s *Server) patientBaselines(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if s.o.Baselines == nil {
		return vigil.Errorf(vigil.ENOTFOUND, "personal baselines are not enabled")
	}
	p, err := s.o.Store.FindPatientByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.o.Baselines(p.ID))
	return nil
}

func (s *Server) patientNEWS2(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if s.o.NEWS2 == nil {
		return vigil.Errorf(vigil.ENOTFOUND, "NEWS2 is not enabled")
	}
	if _, err := s.o.Store.FindPatientByID(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	res, err := s.o.NEWS2(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// NEWS2Inputs are what a nurse records for NEWS2 (news2.Inputs).
type NEWS2Inputs = news2.Inputs

func (s *Server) news2Inputs(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	var in NEWS2Inputs
	if err := s.decode(r, &in); err != nil {
		return err
	}
	if s.o.NEWS2Record == nil {
		return vigil.Errorf(vigil.ENOTFOUND, "NEWS2 is not enabled")
	}
	if _, err := s.o.Store.FindPatientByID(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	res, err := s.o.NEWS2Record(r.Context(), r.PathValue("id"), in, p.Role != vigil.RoleNurse)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// DeviceCreated is the answer to adding a device: the secret is shown once.
type DeviceCreated struct {
	Device *vigil.Device `json:"device"`
	Secret string        `json:"secret"`
}

func (s *Server) addDevice(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	var d vigil.Device
	if err := s.decode(r, &d); err != nil {
		return err
	}
	secret, err := s.o.Admin.AddDevice(r.Context(), &d)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, DeviceCreated{Device: &d, Secret: secret})
	return nil
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	q := r.URL.Query()
	f := vigil.DeviceFilter{PatientID: q.Get("patient")}
	var err error
	if f.Limit, err = intParam(q.Get("limit"), 100000); err != nil {
		return err
	}
	if f.Offset, err = intParam(q.Get("offset"), 0); err != nil {
		return err
	}
	ds, total, err := s.o.Store.FindDevices(r.Context(), f)
	if err != nil {
		return err
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	writeJSON(w, http.StatusOK, nonNil(ds))
	return nil
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	d, err := s.o.Store.FindDeviceByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// SecretRotated is the answer to rotating a device secret.
type SecretRotated struct {
	Device string `json:"device"`
	Secret string `json:"secret"`
}

func (s *Server) rotateSecret(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	secret, err := s.o.Admin.RotateDeviceSecret(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, SecretRotated{Device: r.PathValue("id"), Secret: secret})
	return nil
}

// EnrollmentCodeRequest asks for a device's one-time enrollment code.
type EnrollmentCodeRequest struct {
	TTL string `json:"ttl,omitempty"` // e.g. "72h"; default 24h
}

// EnrollmentCode is a device's one-time code, shown once.
type EnrollmentCode struct {
	Device  string    `json:"device"`
	Code    string    `json:"code"`
	Expires time.Time `json:"expires"`
}

func (s *Server) enrollmentCode(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	var req EnrollmentCodeRequest
	if r.ContentLength != 0 {
		if err := s.decode(r, &req); err != nil {
			return err
		}
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			return vigil.FieldErrorf("ttl", "invalid", "ttl %q is not a duration such as 72h", req.TTL)
		}
	}
	code, exp, err := s.o.Admin.EnrollmentCode(r.Context(), r.PathValue("id"), ttl)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, EnrollmentCode{Device: r.PathValue("id"), Code: code, Expires: exp})
	return nil
}

// EnrollRequest is what a new device sends: its one-time code.
type EnrollRequest struct {
	Code string `json:"code"`
}

// enroll lets a device exchange its one-time code for its secret. It
// needs no other credential; the code is the credential, spent once.
func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	var req EnrollRequest
	err := s.decode(r, &req)
	var secret string
	if err == nil {
		secret, err = s.o.Admin.Enroll(r.Context(), r.PathValue("id"), req.Code)
	}
	if s.o.Audit != nil {
		e := audit.FromRequest(r, r.PathValue("id"), vigil.RoleDevice, err)
		e.Action = "device enrollment"
		s.o.Audit(r.Context(), e)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, SecretRotated{Device: r.PathValue("id"), Secret: secret})
}

// DeviceCert is a device's client certificate and key (PEM), shown once.
type DeviceCert struct {
	Device      string `json:"device"`
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
	Serial      string `json:"serial"`
}

func (s *Server) deviceCert(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if s.o.IssueDeviceCert == nil {
		return vigil.Errorf(vigil.ENOTFOUND, "this server has no CA to issue device certificates: run vigil certs init")
	}
	id := r.PathValue("id")
	if _, err := s.o.Store.FindDeviceByID(r.Context(), id); err != nil {
		return err
	}
	cert, key, serial, err := s.o.IssueDeviceCert(id)
	if err != nil {
		return err
	}
	if err := s.o.Admin.SetDeviceCert(r.Context(), id, serial); err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, DeviceCert{Device: id, Certificate: string(cert), Key: string(key), Serial: serial})
	return nil
}

func (s *Server) revokeDevice(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if err := s.o.Admin.RevokeDevice(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// AssignRequest assigns a device to a patient from a time (default now).
type AssignRequest struct {
	Patient string    `json:"patient"`
	From    time.Time `json:"from,omitzero"`
}

func (s *Server) assign(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	var a AssignRequest
	if err := s.decode(r, &a); err != nil {
		return err
	}
	if a.Patient == "" {
		return vigil.FieldErrorf("patient", "required", "name the patient to assign the device to")
	}
	if err := s.o.Admin.Assign(r.Context(), r.PathValue("id"), a.Patient, a.From); err != nil {
		return err
	}
	as, err := s.o.Store.Assignments(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, nonNil(as))
	return nil
}

func (s *Server) assignments(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if _, err := s.o.Store.FindDeviceByID(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	as, err := s.o.Store.Assignments(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(as))
	return nil
}

// UserRequest adds a user with a password.
type UserRequest struct {
	vigil.User
	Password string `json:"password"`
}

func (s *Server) addUser(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	var u UserRequest
	if err := s.decode(r, &u); err != nil {
		return err
	}
	user := u.User
	if err := s.o.Admin.AddUser(r.Context(), &user, u.Password); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, user)
	return nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	us, err := s.o.Store.FindUsers(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(us))
	return nil
}

// TokenRequest asks for an API token; TTL is a Go duration ("720h"), empty
// for no expiry.
type TokenRequest struct {
	Name string `json:"name"`
	TTL  string `json:"ttl"`
	// Scopes (SMART on FHIR) limit the token to the FHIR API; Patient is
	// the launch patient of patient/ scopes.
	Scopes  []string `json:"scopes,omitempty"`
	Patient string   `json:"patient,omitempty"`
}

// TokenCreated is the answer: the token string is shown once.
type TokenCreated struct {
	Token  string       `json:"token"`
	Record *vigil.Token `json:"record"`
}

// TOTPEnrolled is a user's new authenticator secret, shown once.
type TOTPEnrolled struct {
	User   string `json:"user"`
	URL    string `json:"otpauthUrl"`
	Secret string `json:"secret"`
}

func (s *Server) enrollTOTP(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	url, secret, err := s.o.Admin.EnrollTOTP(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, TOTPEnrolled{User: r.PathValue("id"), URL: url, Secret: secret})
	return nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	var tr TokenRequest
	if err := s.decode(r, &tr); err != nil {
		return err
	}
	var ttl time.Duration
	if tr.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(tr.TTL); err != nil || ttl < 0 {
			return vigil.FieldErrorf("ttl", "invalid", "ttl %q is not a duration such as 720h", tr.TTL)
		}
	}
	tok, rec, err := s.o.Admin.CreateToken(r.Context(), r.PathValue("id"), admin.TokenSpec{Name: tr.Name, TTL: ttl, Scopes: tr.Scopes, Patient: tr.Patient})
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, TokenCreated{Token: tok, Record: rec})
	return nil
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	q := r.URL.Query()
	f := vigil.DeadLetterFilter{DeviceID: q.Get("device"), Reason: q.Get("reason")}
	var err error
	if f.Limit, err = intParam(q.Get("limit"), 100); err != nil {
		return err
	}
	ds, err := s.o.Store.FindDeadLetters(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(ds))
	return nil
}

func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	q := r.URL.Query()
	f := vigil.AlertFilter{PatientID: q.Get("patient"), States: q["state"]}
	var err error
	if f.Limit, err = intParam(q.Get("limit"), 100); err != nil {
		return err
	}
	as, err := s.o.Alerts.Alerts(r.Context(), f)
	if err != nil {
		return err
	}
	as = visible(r.Context(), s, p, as, func(a *vigil.Alert) string { return a.PatientID })
	writeJSON(w, http.StatusOK, nonNil(as))
	return nil
}

// AckRequest acknowledges an alert with an optional note.
type AckRequest struct {
	Note string `json:"note"`
}

func (s *Server) ackAlert(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	return s.alertNote(w, r, p, s.o.Alerts.Acknowledge)
}

// escalateAlert raises an open alert one tier by hand (body: optional
// {"note"}).
func (s *Server) escalateAlert(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	return s.alertNote(w, r, p, s.o.Alerts.Escalate)
}

// alertNote applies an action with an optional {"note"} body to an alert
// of a patient the caller may see, as the caller.
func (s *Server) alertNote(w http.ResponseWriter, r *http.Request, p *vigil.Principal, act func(ctx context.Context, id, by, note string) (*vigil.Alert, error)) error {
	var req AckRequest
	if r.ContentLength != 0 {
		if err := s.decode(r, &req); err != nil {
			return err
		}
	}
	if err := s.seesAlert(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	a, err := act(r.Context(), r.PathValue("id"), p.UserID, req.Note)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (s *Server) alertStats(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	q := r.URL.Query()
	to, from := s.o.Now().UTC(), time.Time{}
	var err error
	if v := q.Get("to"); v != "" {
		if to, err = time.Parse(time.RFC3339, v); err != nil {
			return vigil.FieldErrorf("to", "invalid", "to must be RFC 3339")
		}
	}
	from = to.Add(-7 * 24 * time.Hour)
	if v := q.Get("from"); v != "" {
		if from, err = time.Parse(time.RFC3339, v); err != nil {
			return vigil.FieldErrorf("from", "invalid", "from must be RFC 3339")
		}
	}
	if !from.Before(to) {
		return vigil.FieldErrorf("from", "invalid", "from must be before to")
	}
	target := 5 * time.Minute
	if v := q.Get("target"); v != "" {
		if target, err = time.ParseDuration(v); err != nil || target <= 0 {
			return vigil.FieldErrorf("target", "invalid", "target is a duration such as 5m")
		}
	}
	as, err := s.o.Alerts.Alerts(r.Context(), vigil.AlertFilter{Limit: 1_000_000})
	if err != nil {
		return err
	}
	_, patients, err := s.o.Store.FindPatients(r.Context(), vigil.PatientFilter{Limit: 1})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, alerting.ComputeStats(as, from, to, patients, target))
	return nil
}

// OverridesRequest sets a patient's alert limits (replacing earlier ones).
type OverridesRequest struct {
	Overrides []vigil.ThresholdOverride `json:"overrides"`
}

func (s *Server) putOverrides(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	var req OverridesRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	now := s.o.Now().UTC()
	for i := range req.Overrides {
		req.Overrides[i].By, req.Overrides[i].Set = p.UserID, now
	}
	pt, err := s.o.Store.FindPatientByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := s.o.Alerts.SetOverrides(pt.ID, req.Overrides); err != nil {
		return err
	}
	pt.Overrides = req.Overrides
	if err := s.o.Store.UpdatePatient(r.Context(), pt, pt.Version); err != nil {
		return err
	}
	s.log.Info("alert limits overridden", "patient_version", pt.Version, "by", p.UserID, "overrides", len(req.Overrides))
	writeJSON(w, http.StatusOK, pt)
	return nil
}

// SnoozeRequest silences an alert for Minutes (1 to 1440).
type SnoozeRequest struct {
	Minutes int    `json:"minutes"`
	Note    string `json:"note"`
}

func (s *Server) snoozeAlert(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	var req SnoozeRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	if err := s.seesAlert(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	a, err := s.o.Alerts.Snooze(r.Context(), r.PathValue("id"), p.UserID, time.Duration(req.Minutes)*time.Minute, req.Note)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func intParam(v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, vigil.FieldErrorf("", "invalid", "%q is not a non-negative integer", v)
	}
	return n, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// seesAlert refuses an alert of a patient the principal may not see.
func (s *Server) seesAlert(ctx context.Context, p *vigil.Principal, alertID string) error {
	a, err := s.o.Store.FindAlertByID(ctx, alertID)
	if err != nil {
		return nil // the engine answers for an unknown alert
	}
	if len(visible(ctx, s, p, []*vigil.Alert{a}, func(a *vigil.Alert) string { return a.PatientID })) == 0 {
		return vigil.Errorf(vigil.EFORBIDDEN, "this alert's patient is not on your wards")
	}
	return nil
}

// BreakGlassRequest opens a patient outside the user's wards in an
// emergency: a reason (at least 10 characters) and minutes (1 to 240,
// default 60).
type BreakGlassRequest struct {
	Reason  string `json:"reason"`
	Minutes int    `json:"minutes,omitempty"`
}

// breakGlass records an emergency access and opens the patient to the
// user until it ends; it is audited with its reason and logged loudly.
func (s *Server) breakGlass(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	var req BreakGlassRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	if len(strings.TrimSpace(req.Reason)) < 10 {
		return vigil.FieldErrorf("reason", "required", "say why (at least 10 characters): it is audited and reviewed")
	}
	if req.Minutes == 0 {
		req.Minutes = 60
	}
	if req.Minutes < 1 || req.Minutes > 240 {
		return vigil.FieldErrorf("minutes", "invalid", "break-glass access lasts 1 to 240 minutes")
	}
	pt, err := s.o.Store.FindPatientByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	now := s.o.Now().UTC()
	g := vigil.BreakGlass{Patient: pt.ID, Reason: req.Reason, From: now, Until: now.Add(time.Duration(req.Minutes) * time.Minute)}
	for attempt := 0; ; attempt++ {
		u, err := s.o.Store.FindUserByID(r.Context(), p.UserID)
		if err != nil {
			return err
		}
		u.BreakGlass = append(u.BreakGlass, g)
		err = s.o.Store.UpdateUser(r.Context(), u, u.Version)
		if vigil.ErrorCode(err) == vigil.ECONFLICT && attempt < 3 {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	if s.o.Audit != nil {
		e := audit.FromRequest(r, p.UserID, p.Role, nil)
		e.Action, e.Detail = "BREAK-GLASS", req.Reason
		s.o.Audit(r.Context(), e)
	}
	s.log.Warn("BREAK-GLASS: emergency access to a patient outside the user's wards", "user", p.UserID, "patient_id", pt.ID, "minutes", req.Minutes)
	writeJSON(w, http.StatusCreated, g)
	return nil
}

// BreakGlassUse is one emergency access, for the report.
type BreakGlassUse struct {
	User string `json:"user"`
	Role string `json:"role"`
	vigil.BreakGlass
}

// breakGlassReport lists every break-glass access since ?from (RFC 3339;
// default the last 30 days), newest first, for review.
func (s *Server) breakGlassReport(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	from := s.o.Now().UTC().AddDate(0, 0, -30)
	if v := r.URL.Query().Get("from"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return vigil.FieldErrorf("from", "invalid", "from is RFC 3339")
		}
		from = t
	}
	us, err := s.o.Store.FindUsers(r.Context())
	if err != nil {
		return err
	}
	out := []BreakGlassUse{}
	for _, u := range us {
		for _, g := range u.BreakGlass {
			if !g.From.Before(from) {
				out = append(out, BreakGlassUse{User: u.ID, Role: u.Role, BreakGlass: g})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].From.After(out[j].From) })
	writeJSON(w, http.StatusOK, out)
	return nil
}

// ShareRequest asks for a share link: who it is for, why, how long.
type ShareRequest struct {
	Guest  string `json:"guest"`
	Reason string `json:"reason"`
	Hours  int    `json:"hours,omitempty"` // 1 to 72; default 4
}

// createShare makes a time-limited, read-only link to one patient for a
// named external clinician; audited as SHARE with who, for whom and why.
// The link (url) is shown once.
func (s *Server) createShare(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	var req ShareRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	sh, err := s.o.Admin.CreateShare(r.Context(), p.UserID, r.PathValue("id"), req.Guest, req.Reason, req.Hours)
	if err != nil {
		return err
	}
	if s.o.Audit != nil {
		e := audit.FromRequest(r, p.UserID, p.Role, nil)
		e.Action, e.Detail = "SHARE", fmt.Sprintf("share:%s for %s until %s: %s", sh.ID, sh.Guest, sh.Expires.Format(time.RFC3339), sh.Reason)
		s.o.Audit(r.Context(), e)
	}
	s.log.Warn("SHARE: a patient is open to an external clinician", "user", p.UserID, "patient_id", sh.Patient, "share", sh.ID, "until", sh.Expires)
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, struct {
		*admin.ShareLink
		URL string `json:"url"`
	}{sh, scheme + "://" + r.Host + "/share/" + sh.Token})
	return nil
}

func (s *Server) revokeShare(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	if err := s.o.Admin.RevokeShare(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// CommandRequest is a command to send a device.
type CommandRequest struct {
	Type   string          `json:"type"`
	Params json.RawMessage `json:"params,omitempty"`
	TTL    string          `json:"ttl,omitempty"` // how long it may wait for the device (default 10m, at most 24h)
}

// sendCommand signs and sends a command to a device (audited as a POST).
func (s *Server) sendCommand(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	var req CommandRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			return vigil.FieldErrorf("ttl", "invalid", "ttl %q is not a duration such as 10m", req.TTL)
		}
	}
	c, err := s.o.Admin.SendCommand(r.Context(), p.UserID, r.PathValue("id"), req.Type, req.Params, ttl)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, c)
	return nil
}

func (s *Server) listCommands(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	d, err := s.o.Store.FindDeviceByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	out := d.Commands
	if out == nil {
		out = []vigil.DeviceCommand{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// commandKey serves the public key devices verify commands with (not a
// secret: it only verifies).
func (s *Server) commandKey(w http.ResponseWriter, r *http.Request) {
	if s.o.Admin == nil || s.o.Admin.CommandKey == nil {
		writeProblem(w, problemFor(vigil.Errorf(vigil.ENOTFOUND, "this server sends no device commands")))
		return
	}
	pub := s.o.Admin.CommandKey.Public().(ed25519.PublicKey)
	writeJSON(w, http.StatusOK, map[string]string{"alg": "Ed25519", "publicKey": base64.StdEncoding.EncodeToString(pub)})
}
