package vigil

import (
	"context"
	"time"
)

// Subscription states (FHIR R4 Subscription.status).
const (
	SubscriptionRequested = "requested" // waiting for the handshake
	SubscriptionActive    = "active"
	SubscriptionError     = "error" // delivery failed; Error says why
	SubscriptionOff       = "off"
)

// Subscription is a client's FHIR topic-based subscription (the
// Subscriptions R5 Backport for R4): notifications about a topic's events
// that match Filter, sent over a channel. Endpoint and Headers may hold
// secrets (stored sealed).
type Subscription struct {
	ID       string    `json:"id"`
	Owner    string    `json:"owner"` // the user who created it; events are those they may see
	Topic    string    `json:"topic"` // canonical URL of a Vigil topic
	Filter   string    `json:"filter,omitempty"`
	Channel  string    `json:"channel"` // rest-hook or websocket
	Endpoint string    `json:"endpoint,omitempty"`
	Headers  []string  `json:"headers,omitempty"`
	Payload  string    `json:"payload"`             // empty, id-only or full-resource
	Heart    int       `json:"heartbeat,omitempty"` // seconds between heartbeats when idle; 0: none
	Timeout  int       `json:"timeout,omitempty"`   // seconds per delivery attempt
	MaxCount int       `json:"maxCount,omitempty"`  // events per notification
	Status   string    `json:"status"`
	Error    string    `json:"error,omitempty"`
	Events   int64     `json:"events"` // events since the subscription started
	End      time.Time `json:"end,omitzero"`
	Reason   string    `json:"reason,omitempty"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Version  int       `json:"version"`
}

// SubscriptionStore keeps subscriptions. Implementations are safe for
// concurrent use.
type SubscriptionStore interface {
	// SaveSubscription creates or replaces s durably.
	SaveSubscription(ctx context.Context, s *Subscription) error
	// DeleteSubscription removes it (no error when there is none).
	DeleteSubscription(ctx context.Context, id string) error
	// FindSubscriptions returns every subscription, by id.
	FindSubscriptions(ctx context.Context) ([]*Subscription, error)
}
