package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/edge"
	"github.com/vigil-iomt/vigil/internal/netlimit"
)

// maxEdgeBody is the largest batch an edge gateway may forward at once.
const maxEdgeBody = 8 << 20

// edgeDevice authenticates the edge gateway of the path (its client
// certificate, or HTTP Basic with its secret) and checks it is one. On
// failure it has answered and returns nil.
func (s *Server) edgeDevice(w http.ResponseWriter, r *http.Request) *vigil.Device {
	id := r.PathValue("id")
	user, err := s.o.Auth.DeviceFromRequest(r)
	if err == nil && user != id {
		err = vigil.Errorf(vigil.EFORBIDDEN, "edge %s may only use its own routes (/api/v1/edges/%s/...)", user, user)
	}
	var d *vigil.Device
	if err == nil {
		d, err = edge.EdgeDevice(r.Context(), s.o.Store, id)
	}
	if err != nil {
		if vigil.ErrorCode(err) == vigil.EUNAUTHORIZED {
			w.Header().Set("WWW-Authenticate", `Basic realm="vigil devices", charset="UTF-8"`)
		}
		writeProblem(w, problemFor(err))
		return nil
	}
	return d
}

// edgeConfig serves an edge its configuration bundle (ETag: its version;
// 304 when the edge has it). Every bundle sent is audited: it holds the
// served patients' registry entries.
func (s *Server) edgeConfig(w http.ResponseWriter, r *http.Request) {
	d := s.edgeDevice(w, r)
	if d == nil {
		return
	}
	b, err := edge.Build(r.Context(), s.o.Store, d.ID, s.o.Now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	etag := `"` + b.Version + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-store")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeJSON(w, http.StatusOK, b)
	if s.o.Audit != nil {
		e := audit.FromRequest(r, d.ID, "edge", nil)
		e.Detail = fmt.Sprintf("configuration %s: %d patients, %d devices, %d rules, %d mappings", b.Version, len(b.Patients), len(b.Devices), len(b.Rules), len(b.Mappings))
		s.o.Audit(r.Context(), e)
	}
}

// edgeStatus reports, on an edge gateway, what its forwarder and
// configuration sync are doing.
func (s *Server) edgeStatus(w http.ResponseWriter, _ *http.Request, _ *vigil.Principal) error {
	if s.o.EdgeStatus == nil {
		return vigil.Errorf(vigil.ENOTFOUND, "this Vigil node is not an edge gateway (vigil edge)")
	}
	writeJSON(w, http.StatusOK, s.o.EdgeStatus())
	return nil
}

// readEdgeBody reads an edge's request body (at most maxEdgeBody) as JSON
// into v; what names it in errors.
func readEdgeBody(r *http.Request, v any, what string) error {
	body, err := netlimit.ReadBody(r.Body, r.ContentLength, maxEdgeBody)
	if err != nil {
		return vigil.Errorf(vigil.EINVALID, "cannot read the request body: %v", err)
	}
	if len(body) > maxEdgeBody {
		return &vigil.Error{Code: vigil.ETOOLARGE, Reason: "too-large", Message: fmt.Sprintf("%s exceeds %d bytes: send fewer at once", what, maxEdgeBody)}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return vigil.FieldErrorf("", "malformed", "not a %s: %v", what, err)
	}
	return nil
}

// edgeReadings takes a batch an edge gateway forwards: each reading goes
// through the ingest pipeline under its own device (idempotent by device
// and reading id), in the edge's order per device, and the answer comes
// once all are durable. A reading whose device is not assigned to a
// patient the edge serves, or that is invalid, is refused for good (the
// edge keeps it as a dead letter); when the pipeline cannot take the
// batch now (overload, disk full) the whole batch is refused with 503 or
// 507 and the edge sends it again.
func (s *Server) edgeReadings(w http.ResponseWriter, r *http.Request) {
	d := s.edgeDevice(w, r)
	if d == nil {
		return
	}
	now := s.o.Now().UTC()
	var req edge.ForwardRequest
	if err := readEdgeBody(r, &req, "forwarded batch"); err != nil {
		writeProblem(w, problemFor(err))
		return
	}
	skew := now.Sub(req.Sent)
	if req.Sent.IsZero() {
		skew = 0
	}
	if skew > edge.MaxSkew || skew < -edge.MaxSkew {
		// The edge's clock is off: its receive times move onto ours.
		for _, rd := range req.Readings {
			if !rd.Received.IsZero() {
				rd.Received = rd.Received.Add(skew)
			}
		}
		if last, ok := s.edgeSkews.Load(d.ID); !ok || (last.(time.Duration)-skew).Abs() > time.Second {
			s.edgeSkews.Store(d.ID, skew)
			s.log.Warn("an edge gateway's clock differs from this server's: its receive times are corrected", "edge", d.ID, "skew", skew.Round(time.Millisecond).String())
		}
	}
	res := make([]edge.ForwardResult, len(req.Readings))
	// Which devices the edge may forward for: assigned, at the reading's
	// time, to a patient it serves.
	scope := &edgeScope{s: s, r: r, edge: d, assignments: map[string][]vigil.Assignment{}, patients: map[string]bool{}}
	var order []string
	byDevice := map[string][]int{}
	for i, rd := range req.Readings {
		if rd == nil {
			res[i] = edge.ForwardResult{Status: edge.StatusRefused, Reason: "malformed", Detail: "null in place of a reading"}
			continue
		}
		res[i] = edge.ForwardResult{Device: rd.DeviceID, ID: rd.ID}
		ok, err := scope.serves(rd)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !ok {
			res[i].Status, res[i].Reason = edge.StatusRefused, "not-served"
			res[i].Detail = fmt.Sprintf("device %s is not assigned to a patient edge %s serves at %s", rd.DeviceID, d.ID, rd.Time.Format(time.RFC3339))
			continue
		}
		if _, ok := byDevice[rd.DeviceID]; !ok {
			order = append(order, rd.DeviceID)
		}
		byDevice[rd.DeviceID] = append(byDevice[rd.DeviceID], i)
	}
	type answer struct {
		device string
		res    vigil.IngestResult
	}
	answers := make(chan answer, len(order))
	for _, dev := range order {
		idx := byDevice[dev]
		rs := make([]*vigil.Reading, len(idx))
		for j, i := range idx {
			rs[j] = req.Readings[i]
		}
		payload, _ := json.Marshal(rs)
		s.o.Ingester.Submit(r.Context(), vigil.Message{DeviceID: dev, Source: "edge", Format: edge.Format, Topic: r.URL.Path,
			Payload: payload, Received: now, Shed: true}, func(ir vigil.IngestResult) { answers <- answer{dev, ir} })
	}
	var retry error
	for range order {
		a := <-answers
		idx := byDevice[a.device]
		if a.res.Err != nil {
			if vigil.Retryable(a.res.Err) {
				retry = a.res.Err
				continue
			}
			e := problemFor(a.res.Err)
			for _, i := range idx {
				res[i].Status, res[i].Reason, res[i].Detail = edge.StatusRefused, e.Reason, e.Detail
			}
			continue
		}
		for j, o := range a.res.Readings {
			i := idx[j]
			switch {
			case o.Err != nil:
				e := problemFor(o.Err)
				res[i].Status, res[i].Reason, res[i].Detail = edge.StatusRefused, e.Reason, e.Detail
			case o.Duplicate:
				res[i].Status = edge.StatusDuplicate
			default:
				res[i].Status = edge.StatusStored
			}
		}
	}
	if retry != nil {
		// What was stored is a duplicate when the batch comes again.
		writeProblem(w, problemFor(retry))
		return
	}
	writeJSON(w, http.StatusOK, edge.ForwardResponse{ServerTime: now, ClockSkewMS: skew.Milliseconds(), Results: res})
}

// edgeAlerts reconciles the alerts an edge raised or changed while its
// link was down with this server's (alerting.Engine.Adopt): each is merged
// into the server's open alert of the same patient and rule, or kept as
// the edge's. Alerts of patients the edge does not serve are refused.
// Every reconciled alert is audited.
func (s *Server) edgeAlerts(w http.ResponseWriter, r *http.Request) {
	d := s.edgeDevice(w, r)
	if d == nil {
		return
	}
	var req edge.AlertsRequest
	if err := readEdgeBody(r, &req, "edge alert batch"); err != nil {
		writeProblem(w, problemFor(err))
		return
	}
	out := edge.AlertsResponse{Results: make([]edge.AlertResult, len(req.Alerts))}
	for i, a := range req.Alerts {
		res := &out.Results[i]
		if a == nil {
			res.Status, res.Reason = edge.StatusRefused, "malformed"
			continue
		}
		res.ID = a.ID
		p, err := s.o.Store.FindPatientByID(r.Context(), a.PatientID)
		if err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
			s.fail(w, r, err)
			return
		}
		if !d.Serves.Covers(p) {
			res.Status, res.Reason, res.Detail = edge.StatusRefused, "not-served", "edge "+d.ID+" does not serve the alert's patient"
			continue
		}
		got, err := s.o.Alerts.Adopt(r.Context(), d.ID, a)
		if err != nil {
			if vigil.ErrorCode(err) != vigil.EINVALID {
				s.fail(w, r, err)
				return
			}
			e := problemFor(err)
			res.Status, res.Reason, res.Detail = edge.StatusRefused, e.Reason, e.Detail
			continue
		}
		res.Status, res.Server = edge.StatusStored, got.ID
		if s.o.Audit != nil {
			e := audit.FromRequest(r, d.ID, "edge", nil)
			e.Patient, e.Resource = a.PatientID, "alert/"+got.ID
			e.Detail = "edge alert " + a.ID + " reconciled (" + a.State + " at the edge)"
			s.o.Audit(r.Context(), e)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// edgeScope answers whether an edge may forward a reading: its device
// was assigned at the reading's time to a patient the edge serves. It
// reads each device's assignments and each patient once per batch.
type edgeScope struct {
	s           *Server
	r           *http.Request
	edge        *vigil.Device
	assignments map[string][]vigil.Assignment
	patients    map[string]bool
}

func (e *edgeScope) serves(rd *vigil.Reading) (bool, error) {
	if rd == nil || !vigil.ValidID(rd.DeviceID) {
		return false, nil
	}
	as, ok := e.assignments[rd.DeviceID]
	if !ok {
		var err error
		if as, err = e.s.o.Store.Assignments(e.r.Context(), rd.DeviceID); err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
			return false, err
		}
		e.assignments[rd.DeviceID] = as
	}
	for _, a := range as {
		if !a.Covers(rd.Time) {
			continue
		}
		in, ok := e.patients[a.PatientID]
		if !ok {
			p, err := e.s.o.Store.FindPatientByID(e.r.Context(), a.PatientID)
			if err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
				return false, err
			}
			in = e.edge.Serves.Covers(p)
			e.patients[a.PatientID] = in
		}
		return in, nil
	}
	return false, nil
}
