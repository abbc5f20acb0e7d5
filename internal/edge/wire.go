package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/ingest"
)

// Format is the ingest payload format of readings an edge forwards: a
// JSON array of normalized vigil.Reading, all of one device (the server's
// handler splits a batch by device).
const Format = "vigil-edge"

// ForwardRequest is the body of POST /api/v1/edges/{id}/readings.
type ForwardRequest struct {
	// Sent is the edge's clock when it sent the batch: the server
	// compares it with its own to detect clock skew.
	Sent     time.Time        `json:"sent"`
	Readings []*vigil.Reading `json:"readings"`
}

// Reading statuses in a ForwardResponse.
const (
	StatusStored    = "stored"
	StatusDuplicate = "duplicate"
	// StatusRefused: the server will never take this reading (invalid,
	// or its device is not one the edge serves); the edge keeps it as a
	// dead letter instead of sending it again.
	StatusRefused = "refused"
)

// ForwardResponse is the answer of a batch the server settled: every
// reading stored (or stored before) or refused for good.
type ForwardResponse struct {
	ServerTime time.Time `json:"serverTime"`
	// ClockSkewMS is how far the edge's clock is behind the server's
	// (server time at receipt − the batch's sent time, network delay
	// included). Past MaxSkew the server moved the readings' receive
	// times onto its own clock.
	ClockSkewMS int64           `json:"clockSkewMs"`
	Results     []ForwardResult `json:"results"`
}

// ForwardResult is the outcome of one reading, in request order.
type ForwardResult struct {
	Device string `json:"device"`
	ID     string `json:"id"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// AlertsRequest is the body of POST /api/v1/edges/{id}/alerts: the
// latest state of alerts the edge raised or changed, sent once its
// readings are all upstream.
type AlertsRequest struct {
	Alerts []*vigil.Alert `json:"alerts"`
}

// AlertsResponse says, per alert in request order, which server alert now
// stands for it (Status stored), or why it was refused.
type AlertsResponse struct {
	Results []AlertResult `json:"results"`
}

// AlertResult is the outcome of one edge alert.
type AlertResult struct {
	ID     string `json:"id"`               // the edge's alert id
	Server string `json:"server,omitempty"` // the server's alert standing for it
	Status string `json:"status"`           // stored or refused
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// MaxSkew is the clock difference between an edge and the server beyond
// which the server corrects forwarded receive times (and says so).
const MaxSkew = 2 * time.Second

// Decode is the server's ingest decoder for Format: the edge's normalized
// readings become raw ones again (the original code, so the method is
// found again; the canonical value and unit, with the unit as sent), and
// go through the same validation as any device's.
func Decode(_ context.Context, m vigil.Message, maxReadings int) ([]ingest.Raw, error) {
	var rs []*vigil.Reading
	if err := json.Unmarshal(m.Payload, &rs); err != nil {
		return nil, vigil.FieldErrorf("", "malformed", "forwarded readings are not a JSON array of readings: %v", err)
	}
	if len(rs) > maxReadings {
		return nil, vigil.FieldErrorf("", "too-many", "%d readings in one message; at most %d", len(rs), maxReadings)
	}
	out := make([]ingest.Raw, len(rs))
	for i, r := range rs {
		raw := ingest.Raw{ID: r.ID, Time: r.Time, Field: fmt.Sprintf("[%d].", i), PatientID: r.PatientID,
			Battery: r.Battery, Origin: r.Origin, Received: r.Received}
		for j, v := range r.Values {
			rv := ingest.RawValue{System: vigil.SystemLOINC, Code: v.Code, Value: v.Value, Unit: v.Unit,
				Field: fmt.Sprintf("values[%d]", j), Text: v.Text, Concept: v.Concept, Sampling: v.Sampling, OrigUnit: v.OrigUnit}
			if v.OrigCode != "" {
				rv.System, rv.Code = v.OrigSystem, v.OrigCode
			}
			raw.Values = append(raw.Values, rv)
		}
		out[i] = raw
	}
	return out, nil
}
