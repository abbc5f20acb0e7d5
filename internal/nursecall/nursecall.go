// Package nursecall publishes alert transitions to nurse-call systems over
// the embedded MQTT broker.
//
// Every alert transition (firing, acknowledged, escalated, snoozed,
// resolved) is published at QoS 1 on
//
//	vigil/v1/alerts/{ward}/{patient id}/{alert id}
//
// ("-" for a patient without a ward; "/", "+" and "#" in a ward become "_") as a small JSON document (Message).
// While the alert is open the message is retained, so a nurse-call
// system that (re)connects receives every open alert at once; the
// resolution is published, then the retained message is removed (an
// empty retained payload, which subscribers receive as an empty message
// and ignore). Only devices of kind nurse-call may subscribe; the
// message carries the bed and the patient id, never a name.
package nursecall

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/broker"
	"github.com/vigil-iomt/vigil/internal/live"
)

// Message is what a nurse-call system receives.
type Message struct {
	ID       string  `json:"id"`
	Patient  string  `json:"patient"`
	Ward     string  `json:"ward,omitempty"`
	Bed      string  `json:"bed,omitempty"`
	Rule     string  `json:"rule"`
	Title    string  `json:"title"`
	Priority string  `json:"priority"` // high, medium, low (IEC 60601-1-8)
	State    string  `json:"state"`    // firing, acknowledged, resolved
	Tier     int     `json:"tier"`     // escalation tier: 0 the primary team
	Snoozed  bool    `json:"snoozed,omitempty"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit,omitempty"`
	Raised   string  `json:"raised"`  // RFC 3339
	Updated  string  `json:"updated"` // RFC 3339
}

// Publisher forwards alert events from the hub to the broker.
type Publisher struct {
	sub  *live.Subscription
	done chan struct{}
}

// Options configure a Publisher.
type Options struct {
	Hub      *live.Hub
	Broker   *broker.Broker
	Patients func(ctx context.Context, id string) (*vigil.Patient, error) // ward and bed
	Logger   *slog.Logger
	// Registerer receives vigil_nursecall_published_total and
	// vigil_nursecall_errors_total; nil: not registered.
	Registerer prometheus.Registerer
}

// Start subscribes to the hub's alert events and publishes them until
// Close.
func Start(o Options) (*Publisher, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	published := prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_nursecall_published_total", Help: "Alert transitions published to nurse-call systems."})
	failed := prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_nursecall_errors_total", Help: "Alert transitions that could not be published to nurse-call systems."})
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{published, failed} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	p := &Publisher{
		sub:  o.Hub.Subscribe(1<<14, func(e live.Event) bool { return e.Type == live.TypeAlert }),
		done: make(chan struct{}),
	}
	var cache sync.Map // patient id → *vigil.Patient (ward and bed change rarely; refreshed on firing)
	go func() {
		defer close(p.done)
		for ev := range p.sub.C {
			a, ok := ev.Data.(*vigil.Alert)
			if !ok {
				continue
			}
			var pt *vigil.Patient
			if v, ok := cache.Load(a.PatientID); ok && a.State != vigil.AlertFiring {
				pt = v.(*vigil.Patient)
			} else if x, err := o.Patients(context.Background(), a.PatientID); err == nil {
				pt = x
				cache.Store(a.PatientID, x)
			} else {
				pt = &vigil.Patient{ID: a.PatientID}
			}
			if err := publish(o.Broker, a, pt); err != nil {
				failed.Inc()
				o.Logger.Error("nurse-call publish failed", "alert", a.ID, "err", err)
				continue
			}
			published.Inc()
		}
	}()
	return p, nil
}

// Topic returns the topic of an alert.
func Topic(ward, patient, alert string) string {
	if ward == "" {
		ward = "-"
	}
	ward = strings.NewReplacer("/", "_", "+", "_", "#", "_").Replace(ward) // one topic level
	return broker.AlertsRoot + ward + "/" + patient + "/" + alert
}

func publish(b *broker.Broker, a *vigil.Alert, p *vigil.Patient) error {
	m := Message{ID: a.ID, Patient: a.PatientID, Ward: p.Ward, Bed: p.Bed, Rule: a.RuleID, Title: a.Title, Priority: a.Priority,
		State: a.State, Tier: a.Tier, Snoozed: !a.SnoozedUntil.IsZero() && a.SnoozedUntil.After(a.Updated), Value: a.Value, Unit: a.Unit,
		Raised: a.Raised.UTC().Format("2006-01-02T15:04:05.000Z07:00"), Updated: a.Updated.UTC().Format("2006-01-02T15:04:05.000Z07:00")}
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	topic := Topic(p.Ward, a.PatientID, a.ID)
	if a.Open() {
		return b.PublishAlert(topic, body, true)
	}
	if err := b.PublishAlert(topic, body, false); err != nil {
		return err
	}
	return b.PublishAlert(topic, nil, true) // forget the retained open state
}

// Close stops publishing (events already taken are published first).
func (p *Publisher) Close() {
	p.sub.Close()
	<-p.done
}
