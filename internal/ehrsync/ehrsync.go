// Package ehrsync pushes Vigil's Observations and alerts (as
// DetectedIssue) to an external FHIR server — an EHR — from the store's
// durable change feed.
//
// Each resource goes as a conditional update on a stable identifier
// (PUT Observation?identifier=urn:vigil:observation|{id}), so a resend
// never duplicates; resources travel in batch Bundles of up to Options.Batch
// entries, one batch in flight at a time (back-pressure: the EHR sets the
// pace, and what waits stays on disk in the feed, never in memory).
// A batch the EHR could not take (no answer, 5xx, 429, 408) is retried
// with backoff, honouring Retry-After; an entry the EHR refuses for good
// (any other 4xx) is kept as a dead letter (source ehr-sync) with the
// EHR's reason and skipped. Feed entries are trimmed only after their
// batch is settled, so a crash resends rather than loses.
//
// Patients and devices are referenced by identifier (logical references:
// the patient's MRN under urn:vigil:patient-identifier, the device id under
// urn:vigil:device), since the EHR's resource ids are its own.
package ehrsync

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/fhir"
	"github.com/vigil-iomt/vigil/internal/pump"
)

// Identifier systems of what Vigil pushes.
const (
	SystemObservation = "urn:vigil:observation"
	SystemDevice      = "urn:vigil:device"
	SystemPatient     = "urn:vigil:patient" // a patient without an MRN
)

// Feed is the store's change feed (internal/pebble with ChangeFeed).
type Feed interface {
	FeedAfter(ctx context.Context, after uint64, n int) ([]vigil.FeedEntry, error)
	TrimFeed(ctx context.Context, seqs []uint64) error
}

// Store is what the sync reads.
type Store interface {
	Feed
	vigil.ObservationStore
	vigil.AlertStore
	vigil.PatientStore
	vigil.DeadLetterStore
}

// Options configure a Syncer.
type Options struct {
	// URL is the EHR's FHIR R4 base, e.g. https://ehr.example/fhir/R4.
	URL string
	// Token is sent as Authorization: Bearer (empty: none).
	Token  string
	Store  Store
	Client *http.Client
	// Alerts also pushes alerts as DetectedIssue.
	Alerts bool
	// Batch is the most entries per Bundle (default 100).
	Batch int
	// Backoff is the first retry delay (doubling up to MaxBackoff,
	// defaults 1 s and 1 min); Poll how often an idle feed is read.
	Backoff, MaxBackoff, Poll time.Duration
	Now                       func() time.Time
	Logger                    *slog.Logger
	Registerer                prometheus.Registerer
}

// Syncer runs the push loop.
type Syncer struct {
	o      Options
	dest   destination
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	lag                   prometheus.Gauge
	pending               prometheus.Gauge
	pushed                *prometheus.CounterVec
	failures              prometheus.Counter
	mu                    sync.Mutex
	lastOK                time.Time
	lastError             string
	pushedN, deadLettered int
}

// destination is where the sync sends: an EHR's FHIR API (fhirDest) or
// an interface engine's MLLP listener (hl7Dest, hl7out.go).
type destination interface {
	// build turns feed entries into what to send; entries with nothing
	// to send are returned in skip.
	build(ctx context.Context, es []vigil.FeedEntry) ([]item, []uint64, error)
	// send delivers items and says, per item, whether the receiver took
	// it; an error means nothing is settled (retry the batch).
	send(ctx context.Context, items []item) ([]result, time.Duration, error)
	close()
}

type fhirDest struct{ s *Syncer }

func (d fhirDest) build(ctx context.Context, es []vigil.FeedEntry) ([]item, []uint64, error) {
	return d.s.resources(ctx, es)
}
func (d fhirDest) send(ctx context.Context, items []item) ([]result, time.Duration, error) {
	return d.s.post(ctx, items)
}
func (fhirDest) close() {}

// Start begins pushing.
func Start(o Options) (*Syncer, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "mllp" && u.Scheme != "mllps") {
		return nil, fmt.Errorf("EHR URL %q: give the base of its FHIR API (https://ehr.example/fhir/R4) or an HL7 v2 MLLP listener (mllps://engine.example:2575)", o.URL)
	}
	o.URL = strings.TrimSuffix(o.URL, "/")
	if o.Client == nil {
		o.Client = &http.Client{Timeout: time.Minute}
	}
	if o.Batch <= 0 {
		o.Batch = 100
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Syncer{o: o, kick: make(chan struct{}, 1), done: make(chan struct{}),
		lag:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_ehr_sync_lag_seconds", Help: "How long the oldest reading not yet in the EHR has waited since Vigil received it (0: all pushed)."}),
		pending:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_ehr_sync_pending", Help: "Change-feed entries read but not yet settled with the EHR."}),
		pushed:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_ehr_sync_resources_total", Help: "Resources sent to the EHR, by type and outcome (stored, refused)."}, []string{"type", "outcome"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_ehr_sync_retries_total", Help: "Batches the EHR could not take and that were retried."}),
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{s.lag, s.pending, s.pushed, s.failures} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	switch u.Scheme {
	case "mllp", "mllps":
		s.dest = &hl7Dest{s: s, addr: u.Host, tls: u.Scheme == "mllps", serverName: u.Hostname()}
	default:
		s.dest = fhirDest{s}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.loop(ctx)
	return s, nil
}

// Kick wakes the loop (new data in the feed).
func (s *Syncer) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Close stops the loop; what is not pushed stays in the feed.
func (s *Syncer) Close() {
	s.cancel()
	<-s.done
}

// Status is the sync's state, for operators.
type Status struct {
	Pushed       int       `json:"pushed"`
	DeadLettered int       `json:"deadLettered"`
	LastOK       time.Time `json:"lastOK,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
}

// Status reports what the sync has done since it started.
func (s *Syncer) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{Pushed: s.pushedN, DeadLettered: s.deadLettered, LastOK: s.lastOK, LastError: s.lastError}
}

func (s *Syncer) loop(ctx context.Context) {
	defer close(s.done)
	defer s.dest.close()
	pump.Run(ctx, s.kick, s.o.Poll, s.o.Backoff, s.o.MaxBackoff, func(ctx context.Context) (bool, time.Duration, error) {
		n, retryAfter, err := s.once(ctx)
		if err != nil && ctx.Err() == nil {
			s.failures.Inc()
			s.mu.Lock()
			s.lastError = err.Error()
			s.mu.Unlock()
			s.o.Logger.Warn("EHR sync: batch not taken; retrying", "err", err)
		}
		return n > 0, retryAfter, err
	})
}

type item struct {
	seq  []uint64 // feed entries this resource settles
	typ  string   // Observation, DetectedIssue or ORU^R01
	id   string
	url  string         // FHIR: the conditional update; HL7: the control id
	body map[string]any // FHIR
	msg  []byte         // HL7 v2
}

// once pushes one batch. It returns how many feed entries it settled and,
// on failure, the error and the EHR's Retry-After.
func (s *Syncer) once(ctx context.Context) (int, time.Duration, error) {
	es, err := s.o.Store.FeedAfter(ctx, 0, s.o.Batch)
	if err != nil || len(es) == 0 {
		s.lag.Set(0)
		s.pending.Set(0)
		return 0, 0, err
	}
	s.pending.Set(float64(len(es)))
	oldest := time.Time{}
	for _, e := range es {
		if e.Kind == vigil.FeedReading && (oldest.IsZero() || e.Received.Before(oldest)) {
			oldest = e.Received
		}
	}
	if !oldest.IsZero() {
		s.lag.Set(s.o.Now().Sub(oldest).Seconds())
	}
	items, skip, err := s.dest.build(ctx, es)
	if err != nil {
		return 0, 0, err
	}
	var settled []uint64
	settled = append(settled, skip...)
	if len(items) > 0 {
		results, retryAfter, err := s.dest.send(ctx, items)
		if err != nil {
			return 0, retryAfter, err
		}
		for i, it := range items {
			r := results[i]
			if r.ok {
				s.pushed.WithLabelValues(it.typ, "stored").Inc()
			} else {
				s.pushed.WithLabelValues(it.typ, "refused").Inc()
				if err := s.deadLetter(ctx, it, r.why); err != nil {
					return 0, 0, err // kept in the feed: tried again
				}
			}
			settled = append(settled, it.seq...)
		}
	}
	if err := s.o.Store.TrimFeed(ctx, settled); err != nil {
		return 0, 0, err
	}
	s.mu.Lock()
	s.lastOK, s.lastError = s.o.Now(), ""
	s.pushedN += len(items)
	s.mu.Unlock()
	return len(settled), 0, nil
}

// resources turns feed entries into the resources to push; entries with
// nothing to push (an alert when alerts are off, a reading whose values
// are gone) are returned in skip.
func (s *Syncer) resources(ctx context.Context, es []vigil.FeedEntry) ([]item, []uint64, error) {
	var items []item
	var skip []uint64
	byID := map[string]int{} // a resource changed twice in one batch goes once, in its latest form
	mrn := map[string]string{}
	patientRef := func(pid string) (map[string]any, error) {
		v, ok := mrn[pid]
		if !ok {
			p, err := s.o.Store.FindPatientByID(ctx, pid)
			if err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
				return nil, err
			}
			if p != nil {
				v = p.Identifier
			}
			mrn[pid] = v
		}
		if v != "" {
			return map[string]any{"identifier": map[string]string{"system": fhir.SystemIdentifier, "value": v}}, nil
		}
		return map[string]any{"identifier": map[string]string{"system": SystemPatient, "value": pid}}, nil
	}
	add := func(seq uint64, typ, id, system string, res any, patient string) error {
		b, _ := json.Marshal(res)
		var m map[string]any
		json.Unmarshal(b, &m)
		delete(m, "id")
		delete(m, "meta")
		ref, err := patientRef(patient)
		if err != nil {
			return err
		}
		switch typ {
		case "Observation":
			m["identifier"] = []map[string]string{{"system": system, "value": id}}
			m["subject"] = ref
			if d, ok := m["device"].(map[string]any); ok {
				m["device"] = map[string]any{"identifier": map[string]string{"system": SystemDevice, "value": strings.TrimPrefix(d["reference"].(string), "Device/")}}
			}
		case "DetectedIssue":
			m["patient"] = ref
		}
		key := typ + "/" + id
		if i, ok := byID[key]; ok {
			items[i].body = m
			items[i].seq = append(items[i].seq, seq)
			return nil
		}
		byID[key] = len(items)
		items = append(items, item{seq: []uint64{seq}, typ: typ, id: id, body: m,
			url: typ + "?identifier=" + url.QueryEscape(system+"|"+id)})
		return nil
	}
	for _, e := range es {
		switch e.Kind {
		case vigil.FeedReading:
			obs, err := fhir.ReadingObservations(ctx, s.o.Store, e.PatientID, e.DeviceID, e.Time)
			if err != nil {
				return nil, nil, err
			}
			if len(obs) == 0 {
				skip = append(skip, e.Seq)
			}
			for _, o := range obs {
				if err := add(e.Seq, "Observation", o.ID, SystemObservation, fhir.ObservationResource(o), o.PatientID); err != nil {
					return nil, nil, err
				}
			}
		case vigil.FeedAlert:
			if !s.o.Alerts {
				skip = append(skip, e.Seq)
				continue
			}
			a, err := s.o.Store.FindAlertByID(ctx, e.AlertID)
			if vigil.ErrorCode(err) == vigil.ENOTFOUND {
				skip = append(skip, e.Seq)
				continue
			} else if err != nil {
				return nil, nil, err
			}
			if err := add(e.Seq, "DetectedIssue", a.ID, fhir.SystemAlert, fhir.AlertResource(a), a.PatientID); err != nil {
				return nil, nil, err
			}
		default:
			skip = append(skip, e.Seq)
		}
	}
	return items, skip, nil
}

type result struct {
	ok  bool
	why string
}

// post sends one batch Bundle and reads each entry's outcome. An error
// means the EHR did not take the batch (retry it).
func (s *Syncer) post(ctx context.Context, items []item) ([]result, time.Duration, error) {
	entries := make([]map[string]any, len(items))
	for i, it := range items {
		entries[i] = map[string]any{"resource": it.body, "request": map[string]string{"method": "PUT", "url": it.url}}
	}
	body, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "batch", "entry": entries})
	req, err := http.NewRequestWithContext(ctx, "POST", s.o.URL, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Accept", "application/fhir+json")
	if s.o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.o.Token)
	}
	resp, err := s.o.Client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("the EHR could not be reached: %w", err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("reading the EHR's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		ra := time.Duration(0)
		if v, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			ra = time.Duration(v) * time.Second
		}
		return nil, ra, fmt.Errorf("the EHR answered %d to a batch of %d: %s", resp.StatusCode, len(items), outcomeText(rb))
	}
	var out struct {
		Type  string `json:"type"`
		Entry []struct {
			Response struct {
				Status  string          `json:"status"`
				Outcome json.RawMessage `json:"outcome"`
			} `json:"response"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(rb, &out); err != nil || out.Type != "batch-response" || len(out.Entry) != len(items) {
		return nil, 0, fmt.Errorf("the EHR's answer is not a batch-response with %d entries", len(items))
	}
	results := make([]result, len(items))
	for i, e := range out.Entry {
		code, _ := strconv.Atoi(strings.Fields(e.Response.Status + " 0")[0])
		switch {
		case code/100 == 2:
			results[i].ok = true
		case code/100 == 4 && code != 408 && code != 429:
			results[i].why = fmt.Sprintf("the EHR refused it (%d): %s", code, outcomeText(e.Response.Outcome))
		default:
			return nil, 0, fmt.Errorf("the EHR could not store %s now (%s)", items[i].url, e.Response.Status)
		}
	}
	return results, 0, nil
}

func outcomeText(b []byte) string {
	var oo struct {
		Issue []struct {
			Diagnostics string `json:"diagnostics"`
			Details     struct {
				Text string `json:"text"`
			} `json:"details"`
		} `json:"issue"`
	}
	if json.Unmarshal(b, &oo) != nil || len(oo.Issue) == 0 {
		s := string(b)
		if len(s) > 200 {
			s = s[:200]
		}
		return s
	}
	var parts []string
	for _, i := range oo.Issue {
		parts = append(parts, strings.TrimSpace(i.Details.Text+" "+i.Diagnostics))
	}
	return strings.Join(parts, "; ")
}

// deadLetter keeps a resource the EHR refused, with its reason.
func (s *Syncer) deadLetter(ctx context.Context, it item, why string) error {
	payload, format := it.msg, "hl7v2"
	if it.body != nil {
		payload, _ = json.Marshal(it.body)
		format = "fhir"
	}
	d := &vigil.DeadLetter{Time: s.o.Now().UTC(), Source: "ehr-sync", Format: format, Topic: it.url, Reason: "ehr-refused", Message: why, Payload: payload}
	if err := s.o.Store.AddDeadLetter(ctx, d); err != nil {
		return err
	}
	s.mu.Lock()
	s.deadLettered++
	s.mu.Unlock()
	s.o.Logger.Warn("EHR sync: the EHR refused a resource; kept as a dead letter", "dead_letter", d.ID, "resource", it.typ)
	return nil
}
