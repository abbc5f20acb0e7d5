package edge

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/pebble"
	"github.com/vigil-iomt/vigil/internal/pump"
)

// Outbox is the edge store's store-and-forward buffer (internal/pebble
// with Options.Outbox).
type Outbox interface {
	OutboxAfter(ctx context.Context, after uint64, n int) ([]pebble.OutboxEntry, error)
	OutboxDelete(ctx context.Context, es []pebble.OutboxEntry) error
	OutboxSize() (count, bytes int64)
	vigil.DeadLetterStore
	// The change feed holds the alerts saved here, to reconcile upstream.
	FeedAfter(ctx context.Context, after uint64, n int) ([]vigil.FeedEntry, error)
	TrimFeed(ctx context.Context, seqs []uint64) error
	FindAlertByID(ctx context.Context, id string) (*vigil.Alert, error)
}

// What the edge does when its buffer is full (ForwarderOptions.Policy).
const (
	// PolicyRefuse (the default) refuses new readings while the buffer is
	// full — MQTT 5 PUBACK 0x97, HTTP 507, no HL7 ACK — so devices keep
	// them and send them again: nothing acknowledged is ever lost, and the
	// edge still evaluates nothing new until the uplink drains the buffer.
	PolicyRefuse = "refuse"
	// PolicyDropOldest keeps taking readings (local rules and alerts go on)
	// and removes the oldest unforwarded ones to make room; each eviction
	// is logged, counted and kept as a dead letter saying which devices
	// and times were not forwarded (the readings stay in the edge's own
	// store).
	PolicyDropOldest = "drop-oldest"
)

// NearFull is the share of the buffer at which the edge raises its
// buffer alarm (and clears it again below NearFull − 10 %).
const NearFull = 0.8

// ForwarderOptions configure a Forwarder.
type ForwarderOptions struct {
	// Upstream is the server's base URL (https://vigil.example:8443).
	Upstream string
	ID       string // this edge's device id on the server
	Client   *http.Client
	Store    Outbox
	// Batch is the most readings per request (default 2000).
	Batch int
	// MaxBytes bounds the buffer (0: only the disk does).
	MaxBytes int64
	Policy   string
	// Backoff is the first retry delay after a failure (doubling up to
	// MaxBackoff; defaults 500 ms and 30 s); Poll how often an idle
	// outbox is looked at without a Kick (default 1 s).
	Backoff, MaxBackoff, Poll time.Duration
	// Linger is how long after one batch the next waits to fill up when
	// fewer than Batch readings are waiting (default 50 ms; negative:
	// never).
	Linger time.Duration
	// Notify is told, with a sentence for the people at the edge, when the
	// buffer crosses NearFull and when it is back below (id "buffer"),
	// and when the uplink has been down for DownNotice and when it is back
	// (id "uplink").
	Notify func(id string, active bool, text string)
	// DownNotice is how long the uplink must be down before Notify says
	// so (default 30 s: a reset connection is no news).
	DownNotice time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Forwarder sends the outbox upstream, one batch in flight at a time (so
// each device's readings arrive in order), and deletes what the server
// acknowledged.
type Forwarder struct {
	o        ForwarderOptions
	kick     chan struct{}
	cancel   context.CancelFunc
	done     chan struct{}
	cursor   uint64    // the highest sequence settled in this process
	lastSend time.Time // when the last batch went

	mu        sync.Mutex
	status    Status
	alarm     bool
	downSince time.Time // when the uplink stopped answering (zero: it answers)
	downTold  bool      // Notify was told it is down

	forwarded *prometheus.CounterVec
	evicted   prometheus.Counter
	failures  prometheus.Counter
	upG, skew prometheus.Gauge
	lag       prometheus.Gauge
}

// Status is what the forwarder has done, for operators.
type Status struct {
	Upstream     string `json:"upstream"`
	Connected    bool   `json:"connected"`
	Pending      int64  `json:"pending"`
	PendingBytes int64  `json:"pendingBytes"`
	MaxBytes     int64  `json:"maxBytes,omitempty"`
	Policy       string `json:"policy"`
	Forwarded    int64  `json:"forwarded"`
	Refused      int64  `json:"refused"`
	Evicted      int64  `json:"evicted"`
	// AlertsReconciled counts the edge alerts sent to the server.
	AlertsReconciled int64     `json:"alertsReconciled"`
	ClockSkewMS      int64     `json:"clockSkewMs"`
	LastOK           time.Time `json:"lastOK,omitzero"`
	LastError        string    `json:"lastError,omitempty"`
}

// StartForwarder begins forwarding.
func StartForwarder(o ForwarderOptions) (*Forwarder, error) {
	if !strings.HasPrefix(o.Upstream, "https://") && !strings.HasPrefix(o.Upstream, "http://") {
		return nil, fmt.Errorf("upstream %q: give the server's base URL, https://vigil.example:8443", o.Upstream)
	}
	o.Upstream = strings.TrimSuffix(o.Upstream, "/")
	if o.Client == nil {
		o.Client = &http.Client{Timeout: time.Minute}
	}
	if o.Batch <= 0 {
		o.Batch = 2000
	}
	switch o.Policy {
	case "":
		o.Policy = PolicyRefuse
	case PolicyRefuse, PolicyDropOldest:
	default:
		return nil, fmt.Errorf("buffer policy %q: use %s or %s", o.Policy, PolicyRefuse, PolicyDropOldest)
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Linger == 0 {
		o.Linger = 50 * time.Millisecond
	}
	if o.DownNotice <= 0 {
		o.DownNotice = 30 * time.Second
	}
	if o.Notify == nil {
		o.Notify = func(string, bool, string) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{o: o, kick: make(chan struct{}, 1), done: make(chan struct{}),
		status:    Status{Upstream: o.Upstream, MaxBytes: o.MaxBytes, Policy: o.Policy},
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_edge_forwarded_total", Help: "Readings the upstream server settled, by status (stored, duplicate, refused)."}, []string{"status"}),
		evicted:   prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_edge_evicted_total", Help: "Readings removed from a full buffer unforwarded (policy drop-oldest)."}),
		failures:  prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_edge_forward_failures_total", Help: "Batches the upstream server did not take (sent again)."}),
		upG:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_edge_uplink_up", Help: "1 when the last request to the upstream server succeeded."}),
		skew:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_edge_clock_skew_seconds", Help: "How far this edge's clock is behind the upstream server's (negative: ahead)."}),
		lag:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_edge_forward_lag_seconds", Help: "How long the oldest reading not yet forwarded has waited since the edge received it."}),
	}
	if o.Registerer != nil {
		pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vigil_edge_buffer_readings", Help: "Readings waiting in the store-and-forward buffer."},
			func() float64 { n, _ := o.Store.OutboxSize(); return float64(n) })
		size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vigil_edge_buffer_bytes", Help: "Bytes the store-and-forward buffer holds."},
			func() float64 { _, b := o.Store.OutboxSize(); return float64(b) })
		for _, c := range []prometheus.Collector{f.forwarded, f.evicted, f.failures, f.upG, f.skew, f.lag, pending, size} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() {
		defer close(f.done)
		pump.Run(ctx, f.kick, o.Poll, o.Backoff, o.MaxBackoff, f.step)
	}()
	return f, nil
}

// Kick wakes the forwarder (new readings in the outbox).
func (f *Forwarder) Kick() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Close stops forwarding; what is not forwarded stays in the outbox.
func (f *Forwarder) Close() {
	f.cancel()
	<-f.done
}

// Status reports the forwarder's state.
func (f *Forwarder) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.status
	s.Pending, s.PendingBytes = f.o.Store.OutboxSize()
	return s
}

// Admit refuses new readings while the buffer is full under PolicyRefuse
// (the ingest pipeline asks before each message).
func (f *Forwarder) Admit() error {
	if f.o.MaxBytes <= 0 || f.o.Policy != PolicyRefuse {
		return nil
	}
	n, b := f.o.Store.OutboxSize()
	if b < f.o.MaxBytes {
		return nil
	}
	return &vigil.Error{Code: vigil.EFULL, Reason: "edge-buffer-full",
		Message: fmt.Sprintf("this edge gateway's forwarding buffer is full (%d readings wait for the uplink to %s): keep the readings and send them again later", n, f.o.Upstream)}
}

// step forwards one batch.
func (f *Forwarder) step(ctx context.Context) (bool, time.Duration, error) {
	f.checkBuffer(ctx)
	es, err := f.o.Store.OutboxAfter(ctx, f.cursor, f.o.Batch)
	if err == nil && len(es) == 0 && f.cursor > 0 {
		// Look again from the start: nothing may stay behind the cursor.
		f.cursor = 0
		es, err = f.o.Store.OutboxAfter(ctx, 0, f.o.Batch)
	}
	if err == nil && len(es) > 0 && len(es) < f.o.Batch {
		// A steady trickle goes in batches of up to Linger's worth, not
		// a request per reading; a reading after a quiet spell goes at once.
		if wait := f.o.Linger - time.Since(f.lastSend); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			es, err = f.o.Store.OutboxAfter(ctx, f.cursor, f.o.Batch)
		}
	}
	if err != nil {
		return false, 0, f.fail(err)
	}
	if len(es) == 0 {
		f.lag.Set(0)
		// Caught up: the server has every reading, so its own alerts
		// from them are in place; now reconcile the edge's.
		return f.alerts(ctx)
	}
	f.lag.Set(max(0, f.o.Now().Sub(es[0].Reading.Received).Seconds()))
	req := ForwardRequest{Sent: f.o.Now().UTC(), Readings: make([]*vigil.Reading, len(es))}
	for i, e := range es {
		req.Readings[i] = e.Reading
	}
	f.lastSend = time.Now()
	resp, retryAfter, err := f.post(ctx, req)
	if err != nil {
		return false, retryAfter, f.fail(err)
	}
	if len(resp.Results) != len(es) {
		return false, 0, f.fail(fmt.Errorf("the upstream server answered %d results for %d readings", len(resp.Results), len(es)))
	}
	var refused int64
	for i, r := range resp.Results {
		f.forwarded.WithLabelValues(r.Status).Inc()
		if r.Status != StatusRefused {
			continue
		}
		refused++
		rd := es[i].Reading
		payload, _ := json.Marshal(rd)
		if err := f.o.Store.AddDeadLetter(ctx, &vigil.DeadLetter{Time: f.o.Now().UTC(), Source: "edge-forward", Format: Format,
			DeviceID: rd.DeviceID, Reason: r.Reason, Message: "the upstream server refused this reading: " + r.Detail, Payload: payload}); err != nil {
			return false, 0, f.fail(err)
		}
		f.o.Logger.Warn("the upstream server refused a forwarded reading; kept as a dead letter", "device", rd.DeviceID, "reason", r.Reason)
	}
	if err := f.o.Store.OutboxDelete(ctx, es); err != nil {
		return false, 0, f.fail(err)
	}
	f.cursor = es[len(es)-1].Seq
	f.skew.Set(float64(resp.ClockSkewMS) / 1000)
	f.up()
	f.mu.Lock()
	f.status.Connected, f.status.LastOK, f.status.LastError = true, f.o.Now().UTC(), ""
	f.status.Forwarded += int64(len(es)) - refused
	f.status.Refused += refused
	f.status.ClockSkewMS = resp.ClockSkewMS
	f.mu.Unlock()
	return true, 0, nil
}

func (f *Forwarder) fail(err error) error {
	f.failures.Inc()
	f.upG.Set(0)
	now := time.Now()
	f.mu.Lock()
	first := f.status.Connected || f.status.LastError == ""
	f.status.Connected, f.status.LastError = false, err.Error()
	if f.downSince.IsZero() {
		f.downSince = now
	}
	tell := !f.downTold && now.Sub(f.downSince) >= f.o.DownNotice
	f.downTold = f.downTold || tell
	since := f.downSince
	f.mu.Unlock()
	if first {
		f.o.Logger.Warn("cannot forward to the upstream server; readings wait in the buffer and go when it answers", "upstream", f.o.Upstream, "err", err)
	}
	if tell {
		n, _ := f.o.Store.OutboxSize()
		f.o.Notify("uplink", true, fmt.Sprintf("No link to the central Vigil server since %s. Monitoring and alerts continue here; %d readings are kept and will be sent when the link returns.",
			since.Local().Format("15:04"), n))
	}
	return err
}

// up records that the uplink answers again.
func (f *Forwarder) up() {
	f.upG.Set(1)
	f.mu.Lock()
	told := f.downTold
	f.downSince, f.downTold = time.Time{}, false
	f.mu.Unlock()
	if told {
		f.o.Notify("uplink", false, "")
	}
}

// alerts sends the alerts saved here since the last reconciliation (the
// latest state of each), and trims the feed once the server took them.
func (f *Forwarder) alerts(ctx context.Context) (bool, time.Duration, error) {
	es, err := f.o.Store.FeedAfter(ctx, 0, 500)
	if err != nil || len(es) == 0 {
		return false, 0, err
	}
	var req AlertsRequest
	seen := map[string]bool{}
	seqs := make([]uint64, 0, len(es))
	for _, e := range es {
		seqs = append(seqs, e.Seq)
		if e.Kind != vigil.FeedAlert || seen[e.AlertID] {
			continue
		}
		seen[e.AlertID] = true
		a, err := f.o.Store.FindAlertByID(ctx, e.AlertID)
		if vigil.ErrorCode(err) == vigil.ENOTFOUND {
			continue
		}
		if err != nil {
			return false, 0, err
		}
		req.Alerts = append(req.Alerts, a)
	}
	if len(req.Alerts) > 0 {
		var resp AlertsResponse
		if retry, err := f.call(ctx, "/alerts", req, &resp); err != nil {
			return false, retry, f.fail(err)
		}
		for _, r := range resp.Results {
			if r.Status == StatusRefused {
				f.o.Logger.Warn("the upstream server refused an edge alert", "alert", r.ID, "reason", r.Reason)
			}
		}
		f.mu.Lock()
		f.status.AlertsReconciled += int64(len(req.Alerts))
		f.mu.Unlock()
	}
	if err := f.o.Store.TrimFeed(ctx, seqs); err != nil {
		return false, 0, err
	}
	return true, 0, nil
}

// post sends one batch; an error means nothing is settled.
func (f *Forwarder) post(ctx context.Context, req ForwardRequest) (*ForwardResponse, time.Duration, error) {
	var out ForwardResponse
	retry, err := f.call(ctx, "/readings", req, &out)
	if err != nil {
		return nil, retry, err
	}
	return &out, 0, nil
}

// call POSTs req to the edge's route path on the server and decodes a
// 200 answer into out.
func (f *Forwarder) call(ctx context.Context, path string, req, out any) (time.Duration, error) {
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, f.o.Upstream+"/api/v1/edges/"+f.o.ID+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	hr.Header.Set("Content-Type", "application/json")
	res, err := f.o.Client.Do(hr)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return 0, err
	}
	if res.StatusCode != http.StatusOK {
		var retry time.Duration
		if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil {
			retry = time.Duration(s) * time.Second
		}
		var p struct{ Detail, Title string }
		json.Unmarshal(b, &p)
		if res.StatusCode == http.StatusRequestEntityTooLarge && f.o.Batch > 50 {
			f.o.Batch /= 2
		}
		return retry, fmt.Errorf("upstream answered %s: %s", res.Status, cmp.Or(p.Detail, p.Title, strings.TrimSpace(string(b))))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return 0, fmt.Errorf("upstream answer to %s is not what an edge expects: %v", path, err)
	}
	return 0, nil
}

// checkBuffer raises or clears the buffer alarm and, under
// PolicyDropOldest, evicts the oldest readings over the bound.
func (f *Forwarder) checkBuffer(ctx context.Context) {
	if f.o.MaxBytes <= 0 {
		return
	}
	n, b := f.o.Store.OutboxSize()
	ratio := float64(b) / float64(f.o.MaxBytes)
	f.mu.Lock()
	change, active := false, f.alarm
	switch {
	case !f.alarm && ratio >= NearFull:
		f.alarm, change, active = true, true, true
	case f.alarm && ratio < NearFull-0.1:
		f.alarm, change, active = false, true, false
	}
	f.mu.Unlock()
	if change {
		what := "new readings will be refused (devices keep them)"
		if f.o.Policy == PolicyDropOldest {
			what = "the oldest unsent readings will be dropped from it (they stay on this gateway)"
		}
		detail := fmt.Sprintf("The store of readings not yet sent to the central server is %.0f %% full (%d readings): the link is down or too slow. When it is full, %s. Tell IT: edge gateway %s.",
			100*ratio, n, what, f.o.ID)
		if !active {
			detail = ""
		}
		if active {
			f.o.Logger.Error("edge forwarding buffer nearly full", "readings", n, "bytes", b, "max_bytes", f.o.MaxBytes, "policy", f.o.Policy)
		} else {
			f.o.Logger.Info("edge forwarding buffer no longer nearly full", "readings", n, "bytes", b)
		}
		f.o.Notify("buffer", active, detail)
	}
	if f.o.Policy != PolicyDropOldest || b <= f.o.MaxBytes {
		return
	}
	// Evict down to 90 % of the bound, oldest first, and say what went.
	target := b - f.o.MaxBytes*9/10
	var drop []pebble.OutboxEntry
	var size int64
	for size < target {
		es, err := f.o.Store.OutboxAfter(ctx, 0, 1000)
		if err != nil || len(es) == 0 {
			break
		}
		for _, e := range es {
			if size >= target {
				break
			}
			drop = append(drop, e)
			size += int64(e.Size)
		}
		if err := f.evict(ctx, drop); err != nil {
			f.o.Logger.Error("could not evict from the full forwarding buffer", "err", err)
			return
		}
		drop = drop[:0]
	}
}

// evict removes es from the outbox, recording what went in a dead letter.
func (f *Forwarder) evict(ctx context.Context, es []pebble.OutboxEntry) error {
	if len(es) == 0 {
		return nil
	}
	type span struct {
		Device   string    `json:"device"`
		Readings int       `json:"readings"`
		From     time.Time `json:"from"`
		To       time.Time `json:"to"`
	}
	byDevice := map[string]*span{}
	var spans []*span
	for _, e := range es {
		r := e.Reading
		s := byDevice[r.DeviceID]
		if s == nil {
			s = &span{Device: r.DeviceID, From: r.Time, To: r.Time}
			byDevice[r.DeviceID] = s
			spans = append(spans, s)
		}
		s.Readings++
		if r.Time.Before(s.From) {
			s.From = r.Time
		}
		if r.Time.After(s.To) {
			s.To = r.Time
		}
	}
	payload, _ := json.Marshal(spans)
	if err := f.o.Store.AddDeadLetter(ctx, &vigil.DeadLetter{Time: f.o.Now().UTC(), Source: "edge-evicted", Reason: "edge-buffer-full",
		Message: fmt.Sprintf("%d readings of %d devices were removed from the full forwarding buffer without reaching the upstream server (policy drop-oldest); they remain in this edge's store", len(es), len(spans)),
		Payload: payload}); err != nil {
		return err
	}
	if err := f.o.Store.OutboxDelete(ctx, es); err != nil {
		return err
	}
	f.evicted.Add(float64(len(es)))
	f.mu.Lock()
	f.status.Evicted += int64(len(es))
	f.mu.Unlock()
	f.o.Logger.Error("readings evicted unforwarded from the full forwarding buffer (policy drop-oldest); listed in a dead letter", "readings", len(es), "devices", len(spans))
	return nil
}
