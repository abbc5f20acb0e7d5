package fhir

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/smart"
)

// FHIR Bulk Data Access (Flat FHIR) export: asynchronous kick-off for the
// system ($export), all patients (Patient/$export) and a group
// (Group/{ward}/$export: a Vigil group is a ward), status polling and
// NDJSON files. See docs/fhir.md.

// Exporter runs bulk export jobs one at a time and keeps their files,
// sealed (sealedfile.go), in its directory until they expire.
type Exporter struct {
	dir string
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	jobs  map[string]*exportJob
	queue chan *exportJob

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ExportOptions configure an Exporter.
type ExportOptions struct {
	// Dir holds the sealed files; whatever is in it is removed at start
	// (the keys of earlier jobs died with their process).
	Dir string
	// TTL is how long finished jobs and their files are kept (default 24 h).
	TTL time.Duration
	// MaxJobs is how many jobs may be queued or running (default 16).
	MaxJobs int
	Now     func() time.Time
}

type exportJob struct {
	id, owner, request string
	key                []byte
	cancel             context.CancelFunc
	run                func(ctx context.Context, j *exportJob) error
	transaction        time.Time

	// guarded by Exporter.mu
	state    string // queued, running, done, failed, cancelled
	progress string
	files    []exportFile
	err      string
	finished time.Time
}

type exportFile struct {
	Type  string `json:"type"`
	URL   string `json:"url"`
	Count int    `json:"count"`
	name  string
}

// NewExporter starts an exporter.
func NewExporter(o ExportOptions) (*Exporter, error) {
	if o.TTL <= 0 {
		o.TTL = 24 * time.Hour
	}
	if o.MaxJobs <= 0 {
		o.MaxJobs = 16
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := os.RemoveAll(o.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &Exporter{dir: o.Dir, ttl: o.TTL, now: o.Now, jobs: map[string]*exportJob{}, queue: make(chan *exportJob, o.MaxJobs), ctx: ctx, cancel: cancel}
	x.wg.Add(1)
	go x.worker()
	return x, nil
}

// Close stops the running job and removes every file.
func (x *Exporter) Close() error {
	x.cancel()
	x.wg.Wait()
	return os.RemoveAll(x.dir)
}

func (x *Exporter) worker() {
	defer x.wg.Done()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-x.ctx.Done():
			return
		case <-tick.C:
			x.expire()
		case j := <-x.queue:
			x.mu.Lock()
			if j.state != "queued" {
				x.mu.Unlock()
				continue // cancelled while queued
			}
			j.state = "running"
			ctx, cancel := context.WithCancel(x.ctx)
			j.cancel = cancel
			x.mu.Unlock()
			err := j.run(ctx, j)
			cancel()
			x.mu.Lock()
			switch {
			case j.state == "cancelled":
			case err != nil:
				j.state, j.err = "failed", err.Error()
				os.RemoveAll(filepath.Join(x.dir, j.id))
			default:
				j.state = "done"
			}
			j.finished = x.now()
			x.mu.Unlock()
		}
	}
}

// expire forgets finished jobs older than the TTL and removes their files.
func (x *Exporter) expire() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, j := range x.jobs {
		if !j.finished.IsZero() && x.now().Sub(j.finished) > x.ttl {
			delete(x.jobs, id)
			os.RemoveAll(filepath.Join(x.dir, id))
		}
	}
}

func (x *Exporter) submit(j *exportJob) error {
	id := make([]byte, 16)
	rand.Read(id)
	j.id = hex.EncodeToString(id)
	j.key = make([]byte, 32)
	rand.Read(j.key)
	j.state = "queued"
	x.mu.Lock()
	defer x.mu.Unlock()
	select {
	case x.queue <- j:
	default:
		return vigil.Errorf(vigil.EUNAVAILABLE, "too many bulk exports are queued; try again when one has finished")
	}
	x.jobs[j.id] = j
	return nil
}

// job returns the caller's job; another user's job is not found.
func (x *Exporter) job(id, owner string) (*exportJob, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	j, ok := x.jobs[id]
	if !ok || j.owner != owner {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "no bulk export %s of yours (finished exports are kept for a while, then removed)", id)
	}
	return j, nil
}

func (x *Exporter) setProgress(j *exportJob, format string, args ...any) {
	x.mu.Lock()
	j.progress = fmt.Sprintf(format, args...)
	x.mu.Unlock()
}

// ndjsonFile writes one resource type's NDJSON, sealed.
type ndjsonFile struct {
	f     *os.File
	w     *sealedWriter
	enc   *json.Encoder
	count int
	name  string
}

func (x *Exporter) create(j *exportJob, typ string) (*ndjsonFile, error) {
	dir := filepath.Join(x.dir, j.id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	name := typ + ".ndjson"
	f, err := os.OpenFile(filepath.Join(dir, name+".sealed"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	w, err := newSealedWriter(f, j.key)
	if err != nil {
		f.Close()
		return nil, err
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &ndjsonFile{f: f, w: w, enc: enc, name: name}, nil
}

func (n *ndjsonFile) add(res any) error {
	n.count++
	return n.enc.Encode(res) // one line per resource
}

func (n *ndjsonFile) close() error {
	err := n.w.Close()
	if cerr := n.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Bulk export levels and the types each exports.
var exportTypes = map[string][]string{
	"system":  {"Patient", "Device", "DeviceMetric", "Observation"},
	"patient": {"Patient", "Device", "Observation"},
	"group":   {"Patient", "Device", "Observation"},
}

// exportRequest is a parsed kick-off.
type exportRequest struct {
	level string // system, patient, group
	group string // the ward of a group export
	types []string
	since time.Time
}

func (h *handler) parseExport(r *http.Request, p *vigil.Principal, level string) (*exportRequest, error) {
	if h.o.Exporter == nil {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "bulk export is not enabled on this server")
	}
	if !strings.Contains(r.Header.Get("Prefer"), "respond-async") {
		return nil, vigil.Errorf(vigil.EINVALID, "a bulk export runs in the background: send Prefer: respond-async (and Accept: application/fhir+json)")
	}
	if a := r.Header.Get("Accept"); a != "" && !strings.Contains(a, "application/fhir+json") && !strings.Contains(a, "*/*") && !strings.Contains(a, "application/json") {
		return nil, vigil.Errorf(vigil.EINVALID, "Accept must be application/fhir+json, not %s", a)
	}
	q, err := params(r, "_type", "_since", "_outputFormat")
	if err != nil {
		return nil, err
	}
	switch q.Get("_outputFormat") {
	case "", "application/fhir+ndjson", "application/ndjson", "ndjson":
	default:
		return nil, vigil.FieldErrorf("_outputFormat", "invalid", "Vigil exports application/fhir+ndjson only")
	}
	if p.Role == vigil.RolePatient {
		return nil, vigil.Errorf(vigil.EFORBIDDEN, "bulk export is for clinical systems and researchers; a patient reads their own record with the FHIR API")
	}
	req := &exportRequest{level: level, group: r.PathValue("id")}
	allowed := exportTypes[level]
	granted := func(typ string) bool {
		if len(p.Scopes) == 0 {
			return true
		}
		g := smart.Grant(p.Scopes, typ, smart.Read)
		return g == smart.User || g == smart.System
	}
	if v := q.Get("_type"); v != "" {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if !slices.Contains(allowed, t) {
				return nil, vigil.FieldErrorf("_type", "invalid", "%s is not exported at this level; choose from %s", t, strings.Join(allowed, ", "))
			}
			if !granted(t) {
				return nil, vigil.Errorf(vigil.EFORBIDDEN, "this token's scopes do not allow exporting %s; it needs user/%s.read or system/%s.read", t, t, t)
			}
			if !slices.Contains(req.types, t) {
				req.types = append(req.types, t)
			}
		}
	} else {
		for _, t := range allowed {
			if granted(t) {
				req.types = append(req.types, t)
			}
		}
		if len(req.types) == 0 {
			return nil, vigil.Errorf(vigil.EFORBIDDEN, "this token's scopes allow exporting nothing; bulk export needs user/ or system/ read scopes (patient/ scopes open one record)")
		}
	}
	if v := q.Get("_since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return nil, vigil.FieldErrorf("_since", "invalid", "_since must be an instant with a time zone, e.g. 2026-11-24T08:00:00Z")
		}
		req.since = t
	}
	return req, nil
}

func (h *handler) kickOff(level string) call {
	return func(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
		req, err := h.parseExport(r, p, level)
		if err != nil {
			return err
		}
		if level == "group" {
			// A group is a ward; it must hold a patient the caller sees.
			ps, _, err := h.o.Patients.FindPatients(r.Context(), vigil.PatientFilter{Ward: req.group, Limit: math.MaxInt})
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(ps, func(pt *vigil.Patient) bool { return p.Sees(pt.ID, pt.Ward) }) {
				return vigil.Errorf(vigil.ENOTFOUND, "Group/%s: no ward of that name with patients you may see (a Vigil group is a ward)", req.group)
			}
		}
		j := &exportJob{owner: p.UserID, request: selfLink(r), transaction: h.o.Now().UTC()}
		pc := *p
		j.run = func(ctx context.Context, j *exportJob) error { return h.runExport(ctx, j, &pc, req) }
		if err := h.o.Exporter.submit(j); err != nil {
			return err
		}
		w.Header().Set("Content-Location", baseURL(r)+"/$export-status/"+j.id)
		writeOutcomeInfo(w, http.StatusAccepted, "bulk export "+j.id+" accepted: poll the Content-Location for its status")
		return nil
	}
}

func writeOutcomeInfo(w http.ResponseWriter, status int, msg string) {
	writeResource(w, status, OperationOutcome{ResourceType: "OperationOutcome", Issue: []Issue{{Severity: "information", Code: "informational", Diagnostics: msg}}})
}

// runExport writes the job's files: the patients the caller sees (of the
// group's ward), their devices and observations; system exports also
// every device and device metric.
func (h *handler) runExport(ctx context.Context, j *exportJob, p *vigil.Principal, req *exportRequest) error {
	x := h.o.Exporter
	f := vigil.PatientFilter{Limit: math.MaxInt}
	if req.level == "group" {
		f.Ward = req.group
	}
	all, _, err := h.o.Patients.FindPatients(ctx, f)
	if err != nil {
		return err
	}
	patients := slices.DeleteFunc(all, func(pt *vigil.Patient) bool { return !p.Sees(pt.ID, pt.Ward) })
	var files []exportFile
	for _, typ := range req.types {
		out, err := x.create(j, typ)
		if err != nil {
			return err
		}
		switch typ {
		case "Patient":
			for _, pt := range patients {
				if req.since.IsZero() || !pt.Updated.Before(req.since) {
					err = errors.Join(err, out.add(PatientResource(pt)))
				}
			}
		case "Device":
			err = h.exportDevices(ctx, req, patients, out)
		case "DeviceMetric":
			var chans []vigil.Channel
			if cs, ok := h.o.Observations.(channelStore); ok {
				chans, err = cs.DeviceChannels(ctx, "")
			}
			for _, c := range chans {
				d, derr := h.o.Devices.FindDeviceByID(ctx, c.Device)
				if derr != nil {
					continue // no longer registered
				}
				err = errors.Join(err, out.add(DeviceMetricResource(c, d.Revoked)))
			}
		case "Observation":
			for i, pt := range patients {
				x.setProgress(j, "exporting Observation: patient %d of %d, %d written", i+1, len(patients), out.count)
				if err = h.exportObservations(ctx, pt.ID, req.since, out); err != nil {
					break
				}
			}
		}
		if cerr := out.close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			return err
		}
		files = append(files, exportFile{Type: typ, Count: out.count, name: out.name})
		x.mu.Lock()
		j.files = slices.Clone(files)
		j.progress = fmt.Sprintf("%d of %d types written", len(files), len(req.types))
		x.mu.Unlock()
	}
	return nil
}

func (h *handler) exportDevices(ctx context.Context, req *exportRequest, patients []*vigil.Patient, out *ndjsonFile) error {
	ds, _, err := h.o.Devices.FindDevices(ctx, vigil.DeviceFilter{Limit: math.MaxInt})
	if err != nil {
		return err
	}
	include := map[string]bool{}
	for _, pt := range patients {
		include[pt.ID] = true
	}
	for _, d := range ds {
		if !req.since.IsZero() && d.Updated.Before(req.since) {
			continue
		}
		as, err := h.o.Devices.Assignments(ctx, d.ID)
		if err != nil {
			return err
		}
		pid := ""
		for _, a := range as {
			if a.To.IsZero() {
				pid = a.PatientID
			}
		}
		if req.level != "system" && !include[pid] {
			continue // patient and group exports: the devices on their patients
		}
		if err := out.add(DeviceResource(d, pid)); err != nil {
			return err
		}
	}
	return nil
}

func (h *handler) exportObservations(ctx context.Context, patientID string, since time.Time, out *ndjsonFile) error {
	f := vigil.ObservationFilter{PatientID: patientID, From: since, Limit: maxCount, SampledData: true}
	for {
		obs, cursor, err := h.o.Observations.FindObservations(ctx, f)
		if err != nil {
			return err
		}
		if err := h.fillOrigins(ctx, obs); err != nil {
			return err
		}
		for _, o := range obs {
			if err := out.add(ObservationResource(o)); err != nil {
				return err
			}
		}
		if cursor == "" {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		f.Cursor = cursor
	}
}

// ownJob finds the export job in the URL among the caller's.
func (h *handler) ownJob(r *http.Request, p *vigil.Principal) (*Exporter, *exportJob, error) {
	x := h.o.Exporter
	if x == nil {
		return nil, nil, vigil.Errorf(vigil.ENOTFOUND, "bulk export is not enabled on this server")
	}
	j, err := x.job(r.PathValue("job"), p.UserID)
	return x, j, err
}

// exportStatus answers a status poll: 202 with X-Progress while the job
// runs, the manifest when it is done, 500 with an OperationOutcome when
// it failed.
func (h *handler) exportStatus(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	x, j, err := h.ownJob(r, p)
	if err != nil {
		return err
	}
	x.mu.Lock()
	state, progress, files, msg := j.state, j.progress, slices.Clone(j.files), j.err
	x.mu.Unlock()
	switch state {
	case "queued", "running":
		if progress == "" {
			progress = state
		}
		w.Header().Set("X-Progress", progress)
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusAccepted)
		return nil
	case "failed":
		writeOutcome(w, http.StatusInternalServerError, "exception", "the bulk export failed: "+msg+"; kick it off again", "")
		return nil
	case "cancelled":
		return vigil.Errorf(vigil.ENOTFOUND, "bulk export %s was cancelled", j.id)
	}
	for i := range files {
		files[i].URL = baseURL(r) + "/$export-file/" + j.id + "/" + files[i].name
	}
	w.Header().Set("Expires", j.finished.Add(x.ttl).UTC().Format(http.TimeFormat))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	return json.NewEncoder(w).Encode(map[string]any{
		"transactionTime":     instant(j.transaction),
		"request":             j.request,
		"requiresAccessToken": true,
		"output":              files,
		"error":               []any{},
	})
}

// cancelExport deletes a job: a running one stops, its files go.
func (h *handler) cancelExport(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	x, j, err := h.ownJob(r, p)
	if err != nil {
		return err
	}
	x.mu.Lock()
	if j.cancel != nil {
		j.cancel()
	}
	j.state = "cancelled"
	delete(x.jobs, j.id)
	x.mu.Unlock()
	os.RemoveAll(filepath.Join(x.dir, j.id))
	writeOutcomeInfo(w, http.StatusAccepted, "bulk export "+j.id+" cancelled and its files removed")
	return nil
}

// exportFileHandler streams one file of a finished job to its owner.
func (h *handler) exportFileHandler(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	x, j, err := h.ownJob(r, p)
	if err != nil {
		return err
	}
	name := r.PathValue("file")
	x.mu.Lock()
	ok := j.state == "done" && slices.ContainsFunc(j.files, func(f exportFile) bool { return f.name == name })
	x.mu.Unlock()
	if !ok {
		return vigil.Errorf(vigil.ENOTFOUND, "bulk export %s has no file %s (or is not finished)", j.id, name)
	}
	f, err := os.Open(filepath.Join(x.dir, j.id, name+".sealed"))
	if err != nil {
		return vigil.Errorf(vigil.ENOTFOUND, "bulk export %s's file %s is gone", j.id, name)
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/fhir+ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := openSealed(w, f, j.key); err != nil {
		h.o.Logger.Error("bulk export file unreadable", "job", j.id, "file", name, "err", err)
	}
	return nil
}
