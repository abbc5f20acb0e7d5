package vigil

import (
	"context"
	"time"
)

// Alert states. An alert moves pending → firing → acknowledged → resolved;
// a firing alert may resolve without acknowledgement, and a pending one
// that never fires is simply dropped (never stored).
const (
	AlertPending      = "pending"
	AlertFiring       = "firing"
	AlertAcknowledged = "acknowledged"
	AlertResolved     = "resolved"
)

// Alert priorities in the sense of IEC 60601-1-8.
const (
	PriorityLow    = "low"
	PriorityMedium = "medium"
	PriorityHigh   = "high"
)

// Threshold is a first-cut alert rule: the code's value is below Below (when
// set) or above Above (when set) continuously for For.
type Threshold struct {
	ID       string        `json:"id"`
	Code     string        `json:"code"` // LOINC
	Below    *float64      `json:"below,omitempty"`
	Above    *float64      `json:"above,omitempty"`
	For      time.Duration `json:"for"`
	Priority string        `json:"priority"`
	Title    string        `json:"title"` // e.g. "SpO2 below 90 %"
}

// AlertEvent is one transition in an alert's life, with who made it.
// Events in an alert's history that are not states.
const (
	EventEscalated = "escalated"
	EventSnoozed   = "snoozed"
	EventWoke      = "snooze-ended"
)

type AlertEvent struct {
	Time  time.Time `json:"time"`
	State string    `json:"state"`
	By    string    `json:"by,omitempty"` // user id, or "" for Vigil itself
	Note  string    `json:"note,omitempty"`
}

// Alert is raised for a patient by a rule. There is at most one open
// (firing or acknowledged) alert per patient and rule.
type Alert struct {
	ID        string    `json:"id"`
	PatientID string    `json:"patient"`
	RuleID    string    `json:"rule"`
	Code      string    `json:"code,omitempty"`
	Title     string    `json:"title"`
	Priority  string    `json:"priority"`
	State     string    `json:"state"`
	Value     float64   `json:"value"` // the value that triggered it
	Unit      string    `json:"unit,omitempty"`
	Since     time.Time `json:"since"`   // device time the condition began
	Raised    time.Time `json:"raised"`  // Vigil time the alert fired
	Updated   time.Time `json:"updated"` // last transition
	ReadingID string    `json:"reading"` // the reading that made it fire
	// Detail explains it in words: the values a rule read when it fired,
	// or how far a value is from the patient's baseline.
	Detail string `json:"detail,omitempty"`
	// Tier is the escalation tier: 0 for the primary team; raised while
	// the alert stays unacknowledged (see the engine's escalation policy).
	Tier int `json:"tier,omitempty"`
	// SnoozedUntil silences escalation and re-notification until then.
	SnoozedUntil time.Time    `json:"snoozedUntil,omitzero"`
	History      []AlertEvent `json:"history"`
	// Origin is the edge gateway that raised the alert while its link to
	// this server was down ("" for this server's own), and EdgeID the
	// alert's id there.
	Origin string `json:"origin,omitempty"`
	EdgeID string `json:"edgeId,omitempty"`
}

// Open reports whether the alert still needs attention (firing or acknowledged).
func (a *Alert) Open() bool { return a.State == AlertFiring || a.State == AlertAcknowledged }

// AlertFilter selects alerts. Zero fields match everything.
type AlertFilter struct {
	PatientID string
	States    []string
	Limit     int // 0 means 100
}

// AlertStore keeps alerts. Implementations are safe for concurrent use.
type AlertStore interface {
	// SaveAlert creates or replaces the alert with a.ID durably.
	SaveAlert(ctx context.Context, a *Alert) error
	// FindAlertByID returns ENOTFOUND if there is no such alert.
	FindAlertByID(ctx context.Context, id string) (*Alert, error)
	// FindAlerts returns matching alerts, newest Raised first.
	FindAlerts(ctx context.Context, f AlertFilter) ([]*Alert, error)
}

// ThresholdOverride replaces a rule's limits for one patient until it
// expires: a clinician's patient-specific decision, with the reason.
type ThresholdOverride struct {
	Rule    string    `json:"rule"`
	Below   *float64  `json:"below,omitempty"`
	Above   *float64  `json:"above,omitempty"`
	Reason  string    `json:"reason"`
	Expires time.Time `json:"expires"`
	By      string    `json:"by"`
	Set     time.Time `json:"set"`
}
