// Package ingest is Vigil's embedded ingest pipeline: it validates and
// normalizes device messages, resolves each reading's patient from the
// device's assignment at the reading's time, makes the readings durable
// in group commits, and reports each message's outcome in submission
// order, so that MQTT PUBACKs and HTTP responses are written only after
// the data is on disk.
//
// Message format: docs/formats/reading-message.md.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/mapping"
)

// Store is what the pipeline needs from storage.
type Store interface {
	vigil.ReadingStore
	FindDeviceByID(ctx context.Context, id string) (*vigil.Device, error)
	Assignments(ctx context.Context, deviceID string) ([]vigil.Assignment, error)
	FindPatients(ctx context.Context, f vigil.PatientFilter) ([]*vigil.Patient, int, error)
	vigil.DeadLetterStore
}

// Options configure a Pipeline.
type Options struct {
	MaxPayload  int           // bytes per message (default 1 MiB)
	MaxReadings int           // readings per message (default 5000)
	MaxFuture   time.Duration // how far ahead of Vigil's clock a reading may be (default 5 min)
	MaxAge      time.Duration // how old a reading may be (default 30 days; negative: unlimited)
	QueueSize   int           // messages waiting for a commit before Submit blocks (default 8192)
	// MaxQueueBytes: once the payloads waiting for a commit reach it (or
	// the queue is three-quarters full), messages marked Shed are refused
	// as overloaded (default 64 MiB).
	MaxQueueBytes int64
	// MaxQueueDelay: while messages wait longer than this for their
	// commit, messages marked Shed are refused as overloaded (default 1 s).
	MaxQueueDelay time.Duration
	MaxBatch      int // readings per group commit (default 8192)
	// Commits is how many group commits may be under way at once
	// (default 1). A store whose commits wait on another server
	// (PostgreSQL) takes more a second with several; answers and OnStored
	// calls still come in Submit order.
	Commits   int
	DeviceTTL time.Duration // how long device assignments are cached (default 1 min)
	// DeadLetterSources lists the message sources whose refusals are kept
	// as dead letters (default: mqtt; HTTP clients get the error in the
	// response).
	DeadLetterSources []string
	// Decoders read payload formats (vigil.Message.Format); "" is Vigil's
	// canonical JSON and is always present.
	Decoders   map[string]Decoder
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Admit, when set, is asked before each message: an error (EFULL
	// while the disk is nearly full) refuses the whole message unread,
	// and the device sends it again later.
	Admit func() error
	// OnStored are called, in order and outside the commit path, with the
	// newly stored readings of each group commit (duplicates excluded).
	OnStored []func(context.Context, []*vigil.Reading)
}

// DefaultOptions returns the options a node uses.
func DefaultOptions() Options {
	return Options{
		MaxPayload:        1 << 20,
		MaxReadings:       defaultMaxMsgs,
		MaxFuture:         5 * time.Minute,
		MaxAge:            30 * 24 * time.Hour,
		QueueSize:         8192,
		MaxQueueBytes:     64 << 20,
		MaxQueueDelay:     time.Second,
		MaxBatch:          8192,
		DeviceTTL:         time.Minute,
		DeadLetterSources: []string{"mqtt", "mllp"},
		Now:               time.Now,
	}
}

// clockSlack is how far ahead of Vigil's clock a device time may be
// before it counts as a fast device clock (network and clock jitter).
const clockSlack = 2 * time.Second

// Pipeline implements vigil.Ingester over a Store.
type Pipeline struct {
	store Store
	table *mapping.Table
	opts  Options
	log   *slog.Logger
	m     *metrics

	queuedBytes atomic.Int64 // payload bytes of the messages in queue
	queueDelay  atomic.Int64 // how long the latest batch's first message waited, ns
	committing  atomic.Int64 // when the oldest commit under way began (Unix ns), 0 between commits
	// commitsMu guards commitsBegan: when each group commit not yet
	// answered began, oldest first.
	commitsMu    sync.Mutex
	commitsBegan []int64

	mu      sync.RWMutex // guards closed against queue sends
	closed  bool
	queue   chan *job
	drained chan struct{}
	hooks   chan []*vigil.Reading
	hooksOK chan struct{}

	devMu    sync.Mutex
	devices  map[string]*deviceEntry
	patients map[string]patientEntry // by registry identifier
}

type patientEntry struct {
	id     string
	loaded time.Time
}

var _ vigil.Ingester = (*Pipeline)(nil)

type deviceEntry struct {
	assignments []vigil.Assignment
	loaded      time.Time
}

// job is one submitted message on its way to disk.
type job struct {
	m        vigil.Message
	res      vigil.IngestResult
	readings []*vigil.Reading // accepted by validation, to store
	index    []int            // position of each in res.Readings
	done     func(vigil.IngestResult)
	queued   time.Time // when it entered the queue (monotonic)
	// A message of one reading (most MQTT messages) keeps its outcome,
	// reading and index here instead of in three allocations.
	one struct {
		outcome [1]vigil.ReadingOutcome
		reading [1]*vigil.Reading
		index   [1]int
	}
}

// New starts a pipeline. Close it to drain.
func New(st Store, table *mapping.Table, o Options) *Pipeline {
	d := DefaultOptions()
	if o.MaxPayload <= 0 {
		o.MaxPayload = d.MaxPayload
	}
	if o.MaxReadings <= 0 {
		o.MaxReadings = d.MaxReadings
	}
	if o.MaxFuture <= 0 {
		o.MaxFuture = d.MaxFuture
	}
	if o.MaxAge == 0 {
		o.MaxAge = d.MaxAge
	}
	if o.QueueSize <= 0 {
		o.QueueSize = d.QueueSize
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = d.MaxBatch
	}
	if o.MaxQueueBytes <= 0 {
		o.MaxQueueBytes = d.MaxQueueBytes
	}
	if o.Commits <= 0 {
		o.Commits = 1
	}
	if o.MaxQueueDelay <= 0 {
		o.MaxQueueDelay = d.MaxQueueDelay
	}
	if o.DeviceTTL <= 0 {
		o.DeviceTTL = d.DeviceTTL
	}
	if o.DeadLetterSources == nil {
		o.DeadLetterSources = d.DeadLetterSources
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	decoders := map[string]Decoder{"": PayloadDecoder(DecodeCanonical)}
	for k, v := range o.Decoders {
		decoders[k] = v
	}
	o.Decoders = decoders
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{
		store:    st,
		table:    table,
		opts:     o,
		log:      o.Logger,
		queue:    make(chan *job, o.QueueSize),
		drained:  make(chan struct{}),
		hooks:    make(chan []*vigil.Reading, 256),
		hooksOK:  make(chan struct{}),
		devices:  make(map[string]*deviceEntry),
		patients: make(map[string]patientEntry),
	}
	p.m = newMetrics(o.Registerer, p)
	go p.commitLoop()
	go p.hookLoop()
	return p
}

var errOverloaded = &vigil.Error{Code: vigil.EUNAVAILABLE, Reason: "overloaded",
	Message: "Vigil is overloaded: readings wait for the disk; nothing of this message was stored, send it again in a few seconds"}

// overloaded reports whether messages arrive faster than they become
// durable: the queue is three-quarters full, holds MaxQueueBytes of
// payloads, or is not empty while the latest commit's messages waited
// longer than MaxQueueDelay or the commit under way has taken longer (the
// disk is behind: a device would wait that long for its acknowledgement
// anyway).
func (p *Pipeline) overloaded() bool {
	n := len(p.queue)
	if n >= cap(p.queue)*3/4 || p.queuedBytes.Load() >= p.opts.MaxQueueBytes {
		return true
	}
	if n == 0 {
		return false
	}
	c := p.committing.Load()
	return time.Duration(p.queueDelay.Load()) > p.opts.MaxQueueDelay ||
		(c != 0 && time.Since(time.Unix(0, c)) > p.opts.MaxQueueDelay) // a commit that hangs
}

func (p *Pipeline) admit() error {
	if p.opts.Admit == nil {
		return nil
	}
	return p.opts.Admit()
}

// Ingest is Submit that waits for the result.
func (p *Pipeline) Ingest(ctx context.Context, m vigil.Message) vigil.IngestResult {
	ch := make(chan vigil.IngestResult, 1)
	p.Submit(ctx, m, func(r vigil.IngestResult) { ch <- r })
	return <-ch
}

// Submit validates m, queues its readings for the next group commit and
// calls done once they are durable (or with the reason they were not).
// Calls to done happen in Submit order. Submit blocks only when the queue
// is full (back-pressure on the device connection).
func (p *Pipeline) Submit(ctx context.Context, m vigil.Message, done func(vigil.IngestResult)) {
	if m.Received.IsZero() {
		m.Received = p.opts.Now().UTC()
	}
	j := &job{m: m, done: done}
	if m.Shed && p.overloaded() {
		// Refused before it takes room or work; the sender is told to
		// send again (its answer need not wait for earlier messages').
		j.res = vigil.IngestResult{Err: errOverloaded}
		p.finish(j)
		return
	}
	if err := p.admit(); err != nil {
		j.res = vigil.IngestResult{Err: err}
	} else {
		p.prepare(ctx, j)
	}
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		<-p.drained // everything submitted before has been answered
		j.res = vigil.IngestResult{Err: vigil.Errorf(vigil.EUNAVAILABLE, "Vigil is shutting down; send again after it restarts")}
		p.finish(j)
		return
	}
	p.queuedBytes.Add(int64(len(j.m.Payload)))
	j.queued = time.Now()
	p.queue <- j
	p.m.queued.Inc()
	p.mu.RUnlock()
}

// prepare parses and validates the message and resolves patients.
func (p *Pipeline) prepare(ctx context.Context, j *job) {
	m := j.m
	if len(m.Payload) > p.opts.MaxPayload {
		j.res.Err = vigil.FieldErrorf("", "too-large", "message is %d bytes; the limit is %d", len(m.Payload), p.opts.MaxPayload)
		j.res.Err.(*vigil.Error).Code = vigil.ETOOLARGE
		return
	}
	decode, ok := p.opts.Decoders[m.Format]
	if !ok {
		j.res.Err = vigil.FieldErrorf("format", "unknown-format", "payload format %q is not one Vigil reads", m.Format)
		return
	}
	raws, err := decode(ctx, m, p.opts.MaxReadings)
	if err != nil {
		j.res.Err = err
		return
	}
	defer recycle(raws) // the readings below hold none of it
	assignments, err := p.assignments(ctx, m.DeviceID)
	if err != nil {
		j.res.Err = err
		return
	}
	if len(raws) == 1 {
		j.res.Readings, j.readings, j.index = j.one.outcome[:], j.one.reading[:0], j.one.index[:0]
	} else {
		j.res.Readings = make([]vigil.ReadingOutcome, len(raws))
	}
	sl := newSlab(raws)
	for i := range raws {
		raw := &raws[i]
		j.res.Readings[i].ID = raw.ID
		r, err := p.normalize(raw, m.Received, sl)
		if err != nil {
			j.res.Readings[i].Err = err
			continue
		}
		r.DeviceID, r.Source = m.DeviceID, m.Source
		if r.Time.Sub(r.Received) > clockSlack {
			// Accepted, but the device's clock runs ahead of ours: both
			// times are kept with the reading; this says it happens.
			p.m.clockAhead.WithLabelValues(m.Source).Inc()
		}
		if raw.PatientIdentifier != "" {
			if r.PatientID, err = p.patientByIdentifier(ctx, raw.PatientIdentifier); err != nil {
				if vigil.ErrorCode(err) == vigil.ENOTFOUND {
					err = vigil.FieldErrorf(raw.Field+"patient", "unknown-patient", "no patient with identifier %q is registered (vigil patient add --identifier ...)", raw.PatientIdentifier)
				}
				j.res.Readings[i].Err = err
				continue
			}
		} else {
			for _, a := range assignments {
				if a.Covers(r.Time) {
					r.PatientID = a.PatientID
				}
			}
			if r.PatientID == "" {
				j.res.Readings[i].Err = vigil.FieldErrorf(raw.Field+"time", "unassigned",
					"device %s is not assigned to a patient at %s: assign it first (vigil device assign)", m.DeviceID, r.Time.Format(time.RFC3339))
				continue
			}
			if raw.PatientID != "" && raw.PatientID != r.PatientID {
				j.res.Readings[i].Err = vigil.FieldErrorf(raw.Field+"subject", "subject-mismatch",
					"the reading names patient %s but device %s was assigned to another patient at %s", raw.PatientID, m.DeviceID, r.Time.Format(time.RFC3339))
				continue
			}
		}
		j.readings = append(j.readings, r)
		j.index = append(j.index, i)
	}
	if m.Atomic && len(j.readings) < len(raws) {
		bad := len(raws) - len(j.readings)
		j.readings, j.index = nil, nil
		j.res.Err = vigil.FieldErrorf("", "atomic-refused", "%d of %d readings are invalid, so none was stored (all or nothing)", bad, len(raws))
	}
}

// patientByIdentifier resolves a registry identifier (MRN) to a patient id,
// cached for DeviceTTL.
func (p *Pipeline) patientByIdentifier(ctx context.Context, identifier string) (string, error) {
	now := p.opts.Now()
	p.devMu.Lock()
	e, ok := p.patients[identifier]
	p.devMu.Unlock()
	if ok && now.Sub(e.loaded) < p.opts.DeviceTTL {
		return e.id, nil
	}
	ps, _, err := p.store.FindPatients(ctx, vigil.PatientFilter{Identifier: identifier, Limit: 2})
	if err != nil {
		return "", vigil.Errorf(vigil.EUNAVAILABLE, "cannot read the registry: %v", vigil.ErrorMessage(err))
	}
	if len(ps) == 0 {
		return "", vigil.Errorf(vigil.ENOTFOUND, "unknown patient identifier")
	}
	if len(ps) > 1 {
		return "", vigil.FieldErrorf("patient", "ambiguous-patient", "identifier %q names more than one patient", identifier)
	}
	p.devMu.Lock()
	p.patients[identifier] = patientEntry{id: ps[0].ID, loaded: now}
	p.devMu.Unlock()
	return ps[0].ID, nil
}

// assignments returns the device's assignments from the cache or store.
func (p *Pipeline) assignments(ctx context.Context, deviceID string) ([]vigil.Assignment, error) {
	now := p.opts.Now()
	p.devMu.Lock()
	e, ok := p.devices[deviceID]
	p.devMu.Unlock()
	if ok && now.Sub(e.loaded) < p.opts.DeviceTTL {
		return e.assignments, nil
	}
	if _, err := p.store.FindDeviceByID(ctx, deviceID); err != nil {
		if vigil.ErrorCode(err) == vigil.ENOTFOUND {
			return nil, vigil.FieldErrorf("device", "unknown-device", "device %s is not registered", deviceID)
		}
		return nil, vigil.Errorf(vigil.EUNAVAILABLE, "cannot read the registry: %v", vigil.ErrorMessage(err))
	}
	as, err := p.store.Assignments(ctx, deviceID)
	if err != nil {
		return nil, vigil.Errorf(vigil.EUNAVAILABLE, "cannot read the registry: %v", vigil.ErrorMessage(err))
	}
	p.devMu.Lock()
	p.devices[deviceID] = &deviceEntry{assignments: as, loaded: now}
	p.devMu.Unlock()
	return as, nil
}

// InvalidateDevice drops the cached assignments of a device; the admin
// service calls it when a device is assigned or changed.
func (p *Pipeline) InvalidateDevice(id string) {
	p.devMu.Lock()
	delete(p.devices, id)
	p.devMu.Unlock()
}

// InvalidatePatients drops the cached patient identifiers (after a
// patient was erased or re-identified).
func (p *Pipeline) InvalidatePatients() {
	p.devMu.Lock()
	clear(p.patients)
	p.devMu.Unlock()
}

// commitLoop takes everything queued and stores it in one call, with up
// to Commits calls unanswered; finishLoop answers them in order.
func (p *Pipeline) commitLoop() {
	inflight := make(chan *groupCommit, p.opts.Commits)
	slots := make(chan struct{}, p.opts.Commits)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		p.finishLoop(inflight, slots)
	}()
	defer func() {
		close(inflight)
		<-finished
		close(p.drained)
	}()
	for {
		slots <- struct{}{} // a commit may begin: meanwhile the queue fills
		j, ok := <-p.queue
		if !ok {
			return
		}
		batch := []*job{j}
		n := len(j.readings)
		p.queueDelay.Store(int64(time.Since(j.queued)))
		open := true
	more:
		for n < p.opts.MaxBatch {
			select {
			case j, ok := <-p.queue:
				if !ok {
					open = false
					break more
				}
				batch = append(batch, j)
				n += len(j.readings)
			default:
				break more
			}
		}
		g := &groupCommit{batch: batch, n: n, began: time.Now().UnixNano(), done: make(chan struct{})}
		p.underWay(g.began, true)
		go func() {
			defer close(g.done)
			g.store(p)
		}()
		inflight <- g
		if !open {
			return
		}
	}
}

// underWay notes a group commit begun (add) or answered, and keeps
// committing at the start of the oldest one unanswered.
func (p *Pipeline) underWay(began int64, add bool) {
	p.commitsMu.Lock()
	defer p.commitsMu.Unlock()
	if add {
		p.commitsBegan = append(p.commitsBegan, began)
	} else if len(p.commitsBegan) > 0 {
		p.commitsBegan = p.commitsBegan[1:]
	}
	if len(p.commitsBegan) > 0 {
		p.committing.Store(p.commitsBegan[0])
	} else {
		p.committing.Store(0)
	}
}

// finishLoop answers group commits in the order they began, freeing a
// slot for the next after each.
func (p *Pipeline) finishLoop(inflight <-chan *groupCommit, slots <-chan struct{}) {
	for g := range inflight {
		<-g.done
		p.underWay(g.began, false)
		p.commit(g)
		<-slots
	}
}

// A groupCommit is one call to the store for a batch of jobs.
type groupCommit struct {
	batch []*job
	n     int   // readings in the batch
	began int64 // Unix ns
	done  chan struct{}
	res   []vigil.AppendResult
	err   error
}

func (g *groupCommit) store(p *Pipeline) {
	if g.n == 0 {
		return
	}
	all := make([]*vigil.Reading, 0, g.n)
	for _, j := range g.batch {
		all = append(all, j.readings...)
	}
	g.res, g.err = p.store.AppendReadings(context.Background(), all)
}

// commit answers the jobs of a group commit the store has done.
func (p *Pipeline) commit(g *groupCommit) {
	batch, n := g.batch, g.n
	p.m.queued.Sub(float64(len(batch)))
	var bytes int64
	for _, j := range batch {
		bytes += int64(len(j.m.Payload))
	}
	p.queuedBytes.Add(-bytes)
	var stored []*vigil.Reading
	if n > 0 {
		res, err := g.res, g.err
		if err != nil {
			p.log.Error("storing readings failed; devices will be told to send again", "readings", n, "err", err)
			refusal := vigil.Errorf(vigil.EUNAVAILABLE, "readings could not be stored; send them again")
			if errors.Is(err, syscall.ENOSPC) || vigil.ErrorCode(err) == vigil.EFULL {
				refusal = vigil.Errorf(vigil.EFULL, "the server's disk is full: nothing was stored; send the readings again later")
			}
			for _, j := range batch {
				if len(j.readings) > 0 {
					j.res = vigil.IngestResult{Err: refusal}
				}
			}
		} else {
			durable := p.opts.Now()
			p.m.batch.Observe(float64(n))
			k := 0
			for _, j := range batch {
				from := len(stored)
				for i, r := range j.readings {
					j.res.Readings[j.index[i]].Reading = r
					if res[k].Duplicate {
						j.res.Readings[j.index[i]].Duplicate = true
					} else {
						stored = append(stored, r)
					}
					k++
				}
				observeSince(p.m.durable, durable, stored[from:])
			}
		}
	}
	for _, j := range batch {
		p.deadLetter(j)
		p.finish(j)
	}
	if len(stored) > 0 && len(p.opts.OnStored) > 0 {
		p.hooks <- stored
	}
}

// deadLetter keeps the refused parts of a message from a source that
// cannot be told on the wire. If that fails the message is not
// acknowledged, so the device sends it again.
func (p *Pipeline) deadLetter(j *job) {
	keep := false
	for _, s := range p.opts.DeadLetterSources {
		keep = keep || s == j.m.Source
	}
	if !keep || vigil.Retryable(j.res.Err) {
		return
	}
	var errs []error
	if j.res.Err != nil {
		errs = append(errs, j.res.Err)
	}
	for _, o := range j.res.Readings {
		if o.Err != nil {
			errs = append(errs, o.Err)
		}
	}
	if len(errs) == 0 {
		return
	}
	// One dead letter per message: the payload once, the first refusal as
	// its reason, every refusal in the message text.
	e, _ := errs[0].(*vigil.Error)
	if e == nil {
		e = &vigil.Error{Code: vigil.EINTERNAL, Message: errs[0].Error()}
	}
	msg := e.Message
	if len(errs) > 1 || (j.res.Err == nil && len(j.res.Readings) > 1) {
		parts := make([]string, 0, len(errs))
		for _, err := range errs {
			parts = append(parts, describe(err))
		}
		msg = fmt.Sprintf("%d of %d readings refused: %s", len(errs), max(len(j.res.Readings), 1), strings.Join(parts, "; "))
	}
	d := &vigil.DeadLetter{
		Time: j.m.Received, Source: j.m.Source, Format: j.m.Format, DeviceID: j.m.DeviceID, Topic: j.m.Topic,
		Reason: reasonOf(e), Message: msg, Field: e.Field, Payload: j.m.Payload,
	}
	if err := p.store.AddDeadLetter(context.Background(), d); err != nil {
		p.log.Error("keeping a refused message as a dead letter failed; it stays unacknowledged", "device", j.m.DeviceID, "err", err)
		j.res = vigil.IngestResult{Err: vigil.Errorf(vigil.EUNAVAILABLE, "refused message could not be recorded; send again")}
		return
	}
	p.m.deadLetters.Inc()
}

// describe renders an error as "field (reason): message".
func describe(err error) string {
	e, ok := err.(*vigil.Error)
	if !ok {
		return err.Error()
	}
	s := e.Message
	if e.Reason != "" {
		s = "(" + e.Reason + ") " + s
	}
	if e.Field != "" {
		s = e.Field + " " + s
	}
	return s
}

func reasonOf(e *vigil.Error) string {
	if e.Reason != "" {
		return e.Reason
	}
	return e.Code
}

// finish counts the outcome and calls done.
func (p *Pipeline) finish(j *job) {
	src := j.m.Source
	if j.res.Err != nil {
		p.m.rejected.WithLabelValues(src, reasonOf(errOf(j.res.Err))).Inc()
	}
	var accepted, duplicate, rejected int
	for _, o := range j.res.Readings {
		switch {
		case j.res.Err != nil:
		case o.Err != nil:
			rejected++
			p.m.rejected.WithLabelValues(src, reasonOf(errOf(o.Err))).Inc()
		case o.Duplicate:
			duplicate++
		default:
			accepted++
		}
	}
	for _, c := range [...]struct {
		outcome string
		n       int
	}{{"accepted", accepted}, {"duplicate", duplicate}, {"rejected", rejected}} {
		if c.n > 0 {
			p.m.readings.WithLabelValues(src, c.outcome).Add(float64(c.n))
		}
	}
	if j.done != nil {
		j.done(j.res)
	}
}

func errOf(err error) *vigil.Error {
	if e, ok := err.(*vigil.Error); ok {
		return e
	}
	return &vigil.Error{Code: vigil.EINTERNAL}
}

// observeSince records now − Received of each reading in h, one
// observation per run of readings received at the same time (a message's
// readings are).
func observeSince(h *countHistogram, now time.Time, rs []*vigil.Reading) {
	for i := 0; i < len(rs); {
		n := 1
		for i+n < len(rs) && rs[i+n].Received.Equal(rs[i].Received) {
			n++
		}
		h.ObserveN(now.Sub(rs[i].Received).Seconds(), n)
		i += n
	}
}

// hookLoop runs OnStored off the commit path.
func (p *Pipeline) hookLoop() {
	defer close(p.hooksOK)
	for rs := range p.hooks {
		ctx := context.Background()
		for _, h := range p.opts.OnStored {
			h(ctx, rs)
		}
		observeSince(p.m.evaluated, p.opts.Now(), rs)
	}
}

// Close stops accepting messages, answers everything queued (committing
// it first) and waits for the OnStored hooks. Messages submitted after
// Close are refused with EUNAVAILABLE.
func (p *Pipeline) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.hooksOK
		return nil
	}
	p.closed = true
	close(p.queue)
	p.mu.Unlock()
	<-p.drained
	close(p.hooks)
	<-p.hooksOK
	return nil
}

// for tests: the JSON form of a message.
func payload(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
