package vigil

import (
	"context"
	"time"
)

// Retention says how long each class of data is kept; zero keeps it for
// ever. Dead letters have their own retention; the audit log is never
// pruned (its Merkle proofs cover every entry since the first: archive
// it with the syslog export instead).
type Retention struct {
	// Readings: raw samples (numbers, text values, origins), by device
	// time. Numeric samples are rolled up (1-minute and 1-hour min, max,
	// mean, count) before they go, so trends outlive them.
	Readings time.Duration
	// Rollups: the 1-minute and 1-hour rollups, by their start.
	Rollups time.Duration
	// Alerts: resolved alerts, by the time they were raised.
	Alerts time.Duration
}

// RetentionStats says what one enforcement of the retention removed.
type RetentionStats struct {
	Samples int // raw samples removed (numeric ones rolled up first)
	Rollups int // rollup buckets written or updated
	Expired int // rollup ranges expired (the embedded store: one per series and resolution; PostgreSQL: rows)
	Alerts  int // resolved alerts removed
}

// Rollup resolutions.
const (
	RollupMinute = time.Minute
	RollupHour   = time.Hour
)

// Rollup is one rollup bucket of a series.
type Rollup struct {
	Start time.Time `json:"start"`
	Min   float64   `json:"min"`
	Max   float64   `json:"max"`
	Mean  float64   `json:"mean"`
	Count int       `json:"count"`
}

// RollupSeries is a device's (and method's) rollups of one code.
type RollupSeries struct {
	Device  string   `json:"device"`
	Method  string   `json:"method,omitempty"`
	Unit    string   `json:"unit"`
	Rollups []Rollup `json:"rollups"`
}

// ErasureReport counts what erasing a patient removed.
type ErasureReport struct {
	Series      int `json:"series"` // time series (each with all its samples)
	Samples     int `json:"samples,omitempty"`
	Assignments int `json:"assignments"` // device assignments to the patient (the devices stay)
	Alerts      int `json:"alerts"`
	Events      int `json:"events"`  // device events (pill bottle openings)
	Reviews     int `json:"reviews"` // clinician review records
	Users       int `json:"users"`   // the patient's own login accounts
	Feed        int `json:"feed"`    // change-feed entries not yet sent
}

// Lifecycle is what both stores offer for data's end of life: retention
// with rollups, and erasure on a lawful request.
type Lifecycle interface {
	// EnforceRetention applies the store's retention at now.
	EnforceRetention(ctx context.Context, now time.Time) (RetentionStats, error)
	// ReadRollups returns the patient's rollups of code at resolution res
	// (RollupMinute or RollupHour) starting in [from, to), per series.
	ReadRollups(ctx context.Context, patientID, code string, res time.Duration, from, to time.Time) ([]RollupSeries, error)
	// ErasePatient removes everything held about the patient but the
	// devices, the idempotency keys, dead letters and the audit log.
	// ENOTFOUND for an unknown patient.
	ErasePatient(ctx context.Context, id string) (*ErasureReport, error)
}
