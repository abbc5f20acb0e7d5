package vigil

import (
	"context"
	"time"
)

// DeviceEvent is something a device reports that is not a measurement,
// such as a smart pill bottle being opened. (DeviceID, ID) is its
// idempotency key, as for readings.
type DeviceEvent struct {
	DeviceID  string    `json:"device"`
	ID        string    `json:"id"`
	PatientID string    `json:"patient"` // from the device's assignment at Time
	Type      string    `json:"type"`
	Time      time.Time `json:"time"`     // device time
	Received  time.Time `json:"received"` // Vigil's receive time
}

// Device event types.
const (
	EventBottleOpened = "bottle-opened"
)

// DevicePillBottle is a smart pill bottle: it reports openings.
const DevicePillBottle = "pill-bottle"

// MedicationSchedule is a prescription a home programme follows: doses at
// local times of day, taken when the patient's pill bottle opens within
// WindowMinutes of the time.
type MedicationSchedule struct {
	ID            string   `json:"id"`   // e.g. "metformin"
	Name          string   `json:"name"` // e.g. "Metformin 500 mg"
	Times         []string `json:"times"`
	WindowMinutes int      `json:"windowMinutes"` // ± around each time; 0 means 60
	Device        string   `json:"device"`        // the pill bottle
	TimeZone      string   `json:"timeZone"`      // IANA name of the patient's zone, e.g. Europe/London
	// Start is when the schedule begins counting (set when saved).
	Start time.Time `json:"start"`
}

// EventStore keeps device events. Implementations are safe for
// concurrent use.
type EventStore interface {
	// AppendEvents stores the events durably before it returns nil; an
	// event whose (DeviceID, ID) is stored already is reported as a
	// duplicate and not stored again.
	AppendEvents(ctx context.Context, es []*DeviceEvent) ([]AppendResult, error)
	// FindEvents returns a patient's events with Time in [from, to),
	// oldest first.
	FindEvents(ctx context.Context, patientID string, from, to time.Time) ([]*DeviceEvent, error)
}

// Review is time a clinician spent reviewing a remote-monitoring
// patient's data (or talking with them about it), logged for the
// monthly remote-monitoring report.
type Review struct {
	ID        string    `json:"id"`
	PatientID string    `json:"patient"`
	By        string    `json:"by"`      // user id
	At        time.Time `json:"at"`      // when the review took place
	Minutes   int       `json:"minutes"` // 1 to 240
	Note      string    `json:"note,omitempty"`
	Logged    time.Time `json:"logged"`
}

// ReviewStore keeps reviews.
type ReviewStore interface {
	// AddReview stores r durably (its ID set by the caller).
	AddReview(ctx context.Context, r *Review) error
	// FindReviews returns a patient's reviews with At in [from, to),
	// oldest first.
	FindReviews(ctx context.Context, patientID string, from, to time.Time) ([]*Review, error)
}
