// Package notify delivers alert transitions to webhooks: a JSON POST per
// transition, signed with HMAC-SHA256 over "timestamp.body", retried with
// exponential backoff on network errors, 429 and 5xx, and kept as a dead
// letter when it keeps failing.
//
// Headers: X-Vigil-Timestamp (Unix seconds), X-Vigil-Signature
// ("sha256=" + hex HMAC of timestamp + "." + body with the target's
// secret), X-Vigil-Delivery (unique per transition, stable across
// retries, for receivers to de-duplicate).
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/live"
)

// Target is one webhook.
type Target struct {
	URL    string
	Secret string
}

// Options configure a Notifier.
type Options struct {
	Targets []Target
	// Events are the hub event types delivered: live.TypeAlert (the
	// default) or live.TypeSignal (public-health webhooks).
	Events      []string
	Hub         *live.Hub
	DeadLetters vigil.DeadLetterStore // nil: failures are only logged
	Client      *http.Client          // default: 10 s timeout
	MaxAttempts int                   // default 6
	Backoff     time.Duration         // first retry delay, doubled each time (default 1 s)
	Now         func() time.Time
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// Notifier delivers alert events until Close.
type Notifier struct {
	o       Options
	sub     *live.Subscription
	wg      sync.WaitGroup
	stop    chan struct{}
	results *prometheus.CounterVec
}

// Payload is the JSON body of a delivery.
type Payload struct {
	Event string `json:"event"` // "alert" or "public-health-signal"
	// ID identifies the event: the same event sent again (by another node,
	// or after a restart) has the same id, so receivers can drop repeats.
	ID     string       `json:"id"`
	Time   time.Time    `json:"time"`
	Alert  *vigil.Alert `json:"alert,omitempty"`
	Signal any          `json:"signal,omitempty"` // *pubhealth.Signal
}

// Start subscribes to alert events and delivers them.
func Start(o Options) *Notifier {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 6
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{o: o, stop: make(chan struct{})}
	n.results = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_webhook_deliveries_total", Help: "Webhook deliveries by outcome (delivered, retried, failed).",
	}, []string{"outcome"})
	if o.Registerer != nil {
		o.Registerer.MustRegister(n.results)
	}
	if len(o.Events) == 0 {
		o.Events = []string{live.TypeAlert}
	}
	n.sub = o.Hub.Subscribe(1<<16, func(e live.Event) bool { return slices.Contains(o.Events, e.Type) && e.Origin == "" })
	// One queue per target, so a slow receiver delays only itself.
	queues := make([]chan []byte, len(o.Targets))
	for i := range o.Targets {
		queues[i] = make(chan []byte, 1<<14)
		n.wg.Add(1)
		go n.deliverLoop(o.Targets[i], queues[i])
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() {
			for _, q := range queues {
				close(q)
			}
		}()
		for ev := range n.sub.C {
			p := Payload{Event: ev.Type, Time: ev.Time}
			switch d := ev.Data.(type) {
			case *vigil.Alert:
				p.Alert, p.ID = d, fmt.Sprintf("%s@%d", d.ID, d.Updated.UnixNano())
			case interface{ EventID() string }:
				p.Signal, p.ID = d, d.EventID()
			default:
				continue
			}
			body, _ := json.Marshal(p)
			for _, q := range queues {
				select {
				case q <- body:
				default:
					n.results.WithLabelValues("failed").Inc()
					o.Logger.Error("webhook queue full; delivery dropped to a dead letter", "event", p.ID)
					n.deadLetter(Target{}, body, "queue full")
				}
			}
		}
	}()
	return n
}

// Close stops taking events and waits for deliveries in progress
// (including their retries).
func (n *Notifier) Close() {
	n.sub.Close()
	close(n.stop)
	n.wg.Wait()
}

func (n *Notifier) deliverLoop(t Target, q chan []byte) {
	defer n.wg.Done()
	for body := range q {
		n.deliver(t, body)
	}
}

func (n *Notifier) deliver(t Target, body []byte) {
	var id [12]byte
	rand.Read(id[:])
	delivery := hex.EncodeToString(id[:])
	wait := n.o.Backoff
	var last string
	for attempt := 1; attempt <= n.o.MaxAttempts; attempt++ {
		retry, err := n.post(t, body, delivery)
		if err == nil {
			n.results.WithLabelValues("delivered").Inc()
			return
		}
		last = err.Error()
		if !retry || attempt == n.o.MaxAttempts {
			break
		}
		n.results.WithLabelValues("retried").Inc()
		select {
		case <-time.After(wait):
		case <-n.stop:
			// Shutting down: one last attempt is not worth delaying
			// the shutdown; keep it as a dead letter.
			last = "shut down while retrying: " + last
			n.results.WithLabelValues("failed").Inc()
			n.deadLetter(t, body, last)
			return
		}
		wait *= 2
	}
	n.results.WithLabelValues("failed").Inc()
	n.o.Logger.Error("webhook delivery failed; kept as a dead letter", "url", t.URL, "err", last)
	n.deadLetter(t, body, last)
}

// Sign returns the signature header value for a body sent at ts.
func Sign(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.", ts)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (n *Notifier) post(t Target, body []byte, delivery string) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", t.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	ts := n.o.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Vigil-Webhook/1")
	req.Header.Set("X-Vigil-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("X-Vigil-Signature", Sign(t.Secret, ts, body))
	req.Header.Set("X-Vigil-Delivery", delivery)
	resp, err := n.o.Client.Do(req)
	if err != nil {
		return true, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == 429 || resp.StatusCode >= 500:
		return true, fmt.Errorf("receiver answered %s", resp.Status)
	default:
		return false, fmt.Errorf("receiver refused the delivery: %s", resp.Status)
	}
}

func (n *Notifier) deadLetter(t Target, body []byte, reason string) {
	if n.o.DeadLetters == nil {
		return
	}
	d := &vigil.DeadLetter{Time: n.o.Now().UTC(), Source: "webhook", Topic: t.URL, Reason: "webhook-failed", Message: reason, Payload: body}
	if err := n.o.DeadLetters.AddDeadLetter(context.Background(), d); err != nil {
		n.o.Logger.Error("webhook dead letter could not be stored", "err", err)
	}
}
