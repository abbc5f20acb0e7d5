package vigil

import (
	"context"
	"time"
)

// Code systems.
const (
	SystemLOINC = "http://loinc.org"
	SystemMDC   = "urn:iso:std:iso:11073:10101"
	SystemUCUM  = "http://unitsofmeasure.org"
)

// LOINC codes Vigil treats specially.
const (
	LOINCHeartRate   = "8867-4"
	LOINCSpO2        = "59408-5" // pulse oximetry; FHIR's oxygensat profile also wants 2708-6
	LOINCSpO2Profile = "2708-6"
	LOINCRespRate    = "9279-1"
	LOINCBodyTemp    = "8310-5"
	LOINCBPPanel     = "85354-9"
	LOINCSystolic    = "8480-6"
	LOINCDiastolic   = "8462-4"
	LOINCMeanBP      = "8478-0"
	LOINCGlucoseMass = "2339-0"  // mg/dL
	LOINCGlucoseMol  = "15074-8" // mmol/L
	LOINCBodyWeight  = "29463-7"
	LOINCNEWS2       = "1104051000000101" // SNOMED CT: Royal College of Physicians NEWS2 score (used by a later issue)
)

// Measurement is one normalized value of a reading: a LOINC code, a value
// in the code's canonical UCUM unit, and what the device originally sent
// when that differed.
type Measurement struct {
	Code  string  `json:"code"`  // LOINC
	Value float64 `json:"value"` // in Unit
	Unit  string  `json:"unit"`  // canonical UCUM unit of Code
	// The code, system and unit as sent, when they differ from the
	// canonical ones (for example an MDC code or [degF]).
	OrigCode   string `json:"origCode,omitempty"`
	OrigSystem string `json:"origSystem,omitempty"`
	OrigUnit   string `json:"origUnit,omitempty"`
	// Method is the device's own code for how the value was measured
	// (an IEEE 11073 MDC code, e.g. 149530 pulse rate from the
	// oximeter), set when Code alone does not tell apart values a device
	// reports at one time: heart rate from the ECG and pulse rate from
	// the oximeter are both LOINC 8867-4. Values with different methods
	// are kept apart (stores keep one series per method).
	Method string `json:"method,omitempty"`
	// A value that is not a number (Value is then 0 and Unit ""): Text
	// is a text value (FHIR valueString), Concept a coded one (FHIR
	// valueCodeableConcept), as MedTech String and CodeableConcept
	// mappings produce. Rules, scores and charts use numeric values only.
	Text    string   `json:"text,omitempty"`
	Concept *Concept `json:"concept,omitempty"`
	// Sampling, from a MedTech SampledData mapping, is how FHIR presents
	// this code's values from this device: one Observation per interval
	// holding the values at their period (stores keep each value).
	Sampling *Sampling `json:"sampling,omitempty"`
}

// Sampling is a MedTech SampledData mapping's grouping: values every
// PeriodMS milliseconds, one Observation per IntervalMin minutes (0: one
// per time a value was taken, 60: per hour, 1440: per UTC day).
type Sampling struct {
	PeriodMS    float64 `json:"periodMs"`
	IntervalMin int     `json:"intervalMin"`
}

// SampledData is an observation that groups a period's values of a
// sampled series (FHIR valueSampledData): Data holds one value per
// PeriodMS from the observation's Time to End, "E" where none was taken.
type SampledData struct {
	PeriodMS float64   `json:"periodMs"`
	End      time.Time `json:"end"`
	Data     string    `json:"data"`
	Count    int       `json:"count"` // values present
}

// Textual says whether the measurement holds text or a concept rather
// than a number.
func (m Measurement) Textual() bool { return m.Text != "" || m.Concept != nil }

// Concept is a coded value (a FHIR CodeableConcept).
type Concept struct {
	Text   string   `json:"text,omitempty"`
	Coding []Coding `json:"coding,omitempty"`
}

// Coding is one code from a code system.
type Coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code,omitempty"`
	Display string `json:"display,omitempty"`
}

// Reading is one message from a device after validation and
// normalization: a set of measurements taken at one device time.
// (DeviceID, ID) is the idempotency key at every hop.
type Reading struct {
	DeviceID  string        `json:"device"`
	ID        string        `json:"id"`       // unique per device, chosen by the device
	PatientID string        `json:"patient"`  // from the device's assignment at Time
	Time      time.Time     `json:"time"`     // device time, UTC
	Received  time.Time     `json:"received"` // Vigil's receive time, UTC
	Values    []Measurement `json:"values"`
	Source    string        `json:"source,omitempty"` // "mqtt", "http", ...
	// Battery is the device's own battery charge in percent when it
	// reported one with the reading (device status, not a clinical value:
	// it drives low-battery alerts and is not stored as an observation).
	Battery *float64 `json:"battery,omitempty"`
	// Origin is where in the hospital and in the device the values come
	// from, when the message says (HL7 v2 PV1-3, OBX-18, OBX-4). It is
	// stored with the values and served with the Observations.
	Origin *Origin `json:"origin,omitempty"`
}

// Origin says where a reading was taken, as an HL7 v2 gateway reports it.
type Origin struct {
	Location    string `json:"location,omitempty"`    // PV1-3 assigned patient location, e.g. "3 WEST ICU^3001^1"
	Equipment   string `json:"equipment,omitempty"`   // OBX-18 equipment instance identifier
	Containment string `json:"containment,omitempty"` // OBX-4 IEEE 11073 containment (MDS.VMD.channel.metric), e.g. "1.6.1.1"
}

// AppendResult says what happened to one reading passed to AppendReadings.
type AppendResult struct {
	// Duplicate is true when (DeviceID, ID) was stored before; the reading
	// was not stored again.
	Duplicate bool
}

// ReadingStore makes readings durable. Implementations are safe for
// concurrent use and coalesce concurrent appends into group commits.
type ReadingStore interface {
	// AppendReadings stores the readings durably (synced to disk) before it
	// returns nil. Readings whose (DeviceID, ID) is already stored are not
	// stored again and are reported as duplicates. The result has one
	// entry per reading, in order. Returns EUNAVAILABLE when the store is
	// closing; any error means none of the readings is guaranteed durable.
	AppendReadings(ctx context.Context, rs []*Reading) ([]AppendResult, error)
}

// Observation is one stored measurement of a patient as the read side
// sees it. ID is stable and derived from the stored sample so it can be
// read back by id.
type Observation struct {
	ID        string   `json:"id"`
	PatientID string   `json:"patient"`
	DeviceID  string   `json:"device"`
	Code      string   `json:"code"`
	Value     float64  `json:"value"`
	Unit      string   `json:"unit"`
	Method    string   `json:"method,omitempty"` // as Measurement.Method
	Text      string   `json:"text,omitempty"`   // as Measurement.Text
	Concept   *Concept `json:"concept,omitempty"`
	// Sampled is set on the one observation per period that
	// ObservationFilter.SampledData asks for; Value is then the period's
	// last value.
	Sampled  *SampledData `json:"sampled,omitempty"`
	Time     time.Time    `json:"time"`     // device time
	Received time.Time    `json:"received"` // receive time (at 1 s resolution once compacted)
	// Components hold the systolic and diastolic values of a blood
	// pressure panel (Code LOINCBPPanel); empty for other codes.
	Components []Measurement `json:"components,omitempty"`
	// Origin is filled by stores that keep it, on request (FillOrigins).
	Origin *Origin `json:"origin,omitempty"`
}

// ObservationFilter selects observations of one patient.
type ObservationFilter struct {
	PatientID string   // required
	Codes     []string // LOINC codes; empty means all. LOINCBPPanel selects BP panels.
	DeviceID  string
	From      time.Time // inclusive; zero means unbounded
	To        time.Time // exclusive; zero means unbounded
	Desc      bool      // newest first
	Limit     int       // 0 means 100
	Cursor    string    // opaque, from a previous page's NextCursor
	// Exclude drops observations whose time falls in any of these
	// periods (FHIR's date=ne...).
	Exclude []Period
	// SampledData serves each series with a Sampling as one observation
	// per period (Observation.Sampled) instead of one per value, as a
	// MedTech user's FHIR server holds them. The observation's time is
	// the period's start, and it is found when any of its values is in
	// [From, To).
	SampledData bool
}

// Channel is one kind of value a device has reported: a LOINC code and
// its canonical UCUM unit (FHIR's DeviceMetric).
type Channel struct {
	Device string `json:"device"`
	Code   string `json:"code"`
	Unit   string `json:"unit"`
}

// SeriesData is one device's numeric values of one code over a time
// range, in time order, as columns: what a chart or an analysis reads
// (86,400 points for a day at 1 Hz), without a resource per value.
type SeriesData struct {
	Device string    `json:"device"`
	Method string    `json:"method,omitempty"`
	Unit   string    `json:"unit"`
	T      []int64   // device times, Unix ms
	V      []float64 // values in Unit
}

// SeriesChunks is SeriesData in Vigil's time-series chunk format
// (internal/tsdb, docs/formats/pebble.md), in time order: where a store's
// own compressed chunk lies wholly in the range it is passed on as it is.
type SeriesChunks struct {
	Device, Method, Unit string
	Chunks               [][]byte
}

// Period is the half-open time range [From, To); a zero bound is open.
type Period struct {
	From, To time.Time
}

// Contains reports whether t is in the period.
func (p Period) Contains(t time.Time) bool {
	return (p.From.IsZero() || !t.Before(p.From)) && (p.To.IsZero() || t.Before(p.To))
}

// ObservationStore reads stored measurements. Implementations are safe for
// concurrent use.
type ObservationStore interface {
	// FindObservations returns one page of matching observations in time
	// order (Desc: newest first) and the cursor of the next page ("" when
	// this is the last). Systolic and diastolic values of the same device
	// and time are returned as one LOINCBPPanel observation with two
	// components. Returns EINVALID for a bad cursor.
	FindObservations(ctx context.Context, f ObservationFilter) ([]*Observation, string, error)
	// FindObservationByID returns ENOTFOUND if there is no such observation.
	FindObservationByID(ctx context.Context, id string) (*Observation, error)
	// LatestObservations returns, per code, the patient's newest max
	// observations (newest first), keyed by LOINC code.
	LatestObservations(ctx context.Context, patientID string, codes []string, max int) (map[string][]*Observation, error)
}

// Message is one payload as it arrived from an authenticated device.
type Message struct {
	DeviceID string    // from authentication, never from the payload
	Source   string    // "mqtt", "http", "mllp", ...
	Format   string    // payload format: "" (Vigil's canonical JSON), "hl7v2", ...
	Topic    string    // MQTT topic or HTTP path, for dead letters
	Payload  []byte    // the raw body; may contain PHI, never logged
	Received time.Time // when Vigil received it, UTC
	// Atomic: store every reading of the message or none (a FHIR
	// transaction Bundle). When one is refused, the message is refused
	// with EINVALID and the outcomes say which.
	Atomic bool
	// Shed: the sender can be told to send again (HTTP 503, MQTT 5 PUBACK
	// 0x89), so when ingest is overloaded the message is refused at once
	// (EUNAVAILABLE) instead of waiting for room; other messages (MQTT
	// 3.1.1, HL7 over MLLP) wait, which slows their connection down.
	Shed bool
}

// ReadingOutcome is what happened to one reading of a message.
type ReadingOutcome struct {
	ID        string // the reading's id as sent ("" if it had none)
	Duplicate bool   // stored before; acknowledged again, not stored again
	Err       error  // a *Error (EINVALID with Field and Reason) when rejected
	// Reading is the normalized reading (with its patient) when accepted.
	Reading *Reading
}

// IngestResult is the outcome of one message. Err is set when the message
// as a whole was refused (malformed JSON, too large, unknown device,
// shutting down) and nothing of it was stored. Otherwise Readings has one
// outcome per reading in the message, in order; those with a nil Err are
// durable.
type IngestResult struct {
	Readings []ReadingOutcome
	Err      error
}

// Rejected returns the number of readings that were refused.
func (r IngestResult) Rejected() int {
	n := 0
	for _, o := range r.Readings {
		if o.Err != nil {
			n++
		}
	}
	return n
}

// Ingester validates, normalizes and durably stores device messages. The
// embedded pipeline (internal/ingest) and the JetStream ingest node of the
// scale-out issue implement it. Implementations are safe for concurrent use.
type Ingester interface {
	// Submit processes m and calls done exactly once, after every accepted
	// reading of m is durable or with the reason it was refused. Calls to
	// done happen in the order of the Submit calls, so an MQTT connection
	// can write its PUBACKs in receive order from done. Submit does not
	// block on disk I/O.
	Submit(ctx context.Context, m Message, done func(IngestResult))
	// Ingest is Submit that waits for the result.
	Ingest(ctx context.Context, m Message) IngestResult
}

// Change-feed entry kinds.
const (
	FeedReading = "reading"
	FeedAlert   = "alert"
)

// FeedEntry is one entry of a store's change feed: a reading stored or an
// alert saved, in the order they became durable.
type FeedEntry struct {
	Seq       uint64
	Kind      string // FeedReading or FeedAlert
	PatientID string
	DeviceID  string    // readings
	ReadingID string    // readings
	Time      time.Time // readings: device time
	Received  time.Time // readings
	AlertID   string    // alerts
}
