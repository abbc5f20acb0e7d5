// Package live fans out events (stored readings, alert transitions) from the
// pipeline to the web app's Server-Sent Events streams and other listeners.
//
// Publishing never blocks: a subscriber that falls more than its buffer
// behind is dropped (its channel is closed) so that it reconnects and
// reloads, instead of stalling ingest.
package live

import (
	"sync"
	"time"
)

// Event types.
const (
	TypeReading = "reading" // Data is *vigil.Reading
	TypeAlert   = "alert"   // Data is *vigil.Alert
	TypeNEWS2   = "news2"   // Data is *news2.Update
	// TypeSignal is a public-health aberration (Data is *pubhealth.Signal),
	// for the public-health webhooks; no patient.
	TypeSignal = "public-health-signal"
	// TypeNotice is a notice for everyone on this node's web pages, not
	// about a patient (Data is *Notice): an edge gateway's link to its
	// server down, its forwarding buffer nearly full.
	TypeNotice = "notice"
)

// Event is one thing that happened. PatientID lets subscribers filter
// without looking into Data.
type Event struct {
	Type      string
	PatientID string
	Time      time.Time // when Vigil published it
	Data      any
	// Origin is "" for an event of this node, else the node it came from
	// (another node's worker, relayed over NATS for this node's live
	// views). Listeners with effects that must happen once — webhooks,
	// FHIR subscription notifications — take only their own node's.
	Origin string
}

// Notice is a system notice: while Active, the web pages show Text across
// the top; ID names it, so a later notice with the same ID replaces it.
type Notice struct {
	ID     string `json:"id"`
	Active bool   `json:"active"`
	Text   string `json:"text"`
}

// Hub broadcasts events to subscribers. The zero value is ready to use and
// safe for concurrent use.
type Hub struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

// Subscription receives events on C until Close is called or it falls
// behind, in which case C is closed.
type Subscription struct {
	C      <-chan Event
	c      chan Event
	hub    *Hub
	filter func(Event) bool
	closed bool
}

// Subscribe returns a subscription with a buffer of n events that receives
// every event for which filter returns true (all events when filter is nil).
func (h *Hub) Subscribe(n int, filter func(Event) bool) *Subscription {
	c := make(chan Event, n)
	s := &Subscription{C: c, c: c, hub: h, filter: filter}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs == nil {
		h.subs = make(map[*Subscription]struct{})
	}
	h.subs[s] = struct{}{}
	return s
}

// Close stops the subscription and closes C. It is safe to call twice.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.closeLocked()
}

func (s *Subscription) closeLocked() {
	if s.closed {
		return
	}
	s.closed = true
	delete(s.hub.subs, s)
	close(s.c)
}

// Publish delivers e to every matching subscriber without blocking.
func (h *Hub) Publish(e Event) { h.PublishAll([]Event{e}) }

// PublishAll delivers events in order to every matching subscriber
// without blocking (one too slow to take an event is dropped, so it
// reconnects and reloads), under one lock and one clock reading: a
// stored batch of thousands of readings.
func (h *Hub) PublishAll(events []Event) {
	now := time.Now().UTC()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return
	}
	// Subscriber by subscriber, each taking the events in order: one walk
	// of the subscriber map per call, not one per event (for a batch of
	// thousands, the walks cost more than the filters).
	for s := range h.subs {
		for _, e := range events {
			if s.filter != nil && !s.filter(e) {
				continue
			}
			if e.Time.IsZero() {
				e.Time = now
			}
			select {
			case s.c <- e:
				continue
			default:
			}
			s.closeLocked() // too slow: drop it so it reconnects and reloads
			break
		}
	}
}

// Len returns the number of subscribers.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}
