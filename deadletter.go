package vigil

import (
	"context"
	"time"
)

// DeadLetter is a message that was accepted on the wire but could not be
// stored as readings, kept with its reason so it can be inspected and
// replayed. Payload may contain PHI: it is never logged.
type DeadLetter struct {
	ID       string    `json:"id"` // time-ordered
	Time     time.Time `json:"time"`
	Source   string    `json:"source"`           // "mqtt", "http", ...
	Format   string    `json:"format,omitempty"` // vigil.Message.Format of the payload
	DeviceID string    `json:"device,omitempty"`
	Topic    string    `json:"topic,omitempty"`
	Reason   string    `json:"reason"` // machine-readable, as vigil.Error.Reason
	Message  string    `json:"message"`
	Field    string    `json:"field,omitempty"`
	Payload  []byte    `json:"payload"`
}

// DeadLetterFilter selects dead letters. Zero fields match everything.
type DeadLetterFilter struct {
	DeviceID string
	Reason   string
	Limit    int // 0 means 100
}

// DeadLetterStore keeps dead letters. Implementations are safe for
// concurrent use.
type DeadLetterStore interface {
	// AddDeadLetter stores d durably, setting d.ID when it is empty.
	AddDeadLetter(ctx context.Context, d *DeadLetter) error
	// FindDeadLetters returns matching dead letters, newest first.
	FindDeadLetters(ctx context.Context, f DeadLetterFilter) ([]*DeadLetter, error)
	FindDeadLetterByID(ctx context.Context, id string) (*DeadLetter, error)
	// DeleteDeadLetter removes one; deleting a missing one is not an error.
	DeleteDeadLetter(ctx context.Context, id string) error
}
