package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vigil-iomt/vigil"
)

// wireReading is Vigil's canonical reading message as devices send it.
type wireReading struct {
	ID     *string     `json:"id"`
	Time   *string     `json:"time"`
	Values []wireValue `json:"values"`
	// Battery is the device's battery charge in percent (optional).
	Battery *float64 `json:"battery"`
}

type wireValue struct {
	System string   `json:"system"`
	Code   *string  `json:"code"`
	Value  *float64 `json:"value"`
	Unit   string   `json:"unit"`
}

// Limits of one message.
const (
	maxIDLen       = 64
	maxValues      = 64
	defaultMaxMsgs = 1000
)

// parse splits a payload into raw readings: one object or an array.
// A malformed payload is a message-level error.
func parse(payload []byte, maxReadings int) ([]json.RawMessage, bool, error) {
	p := bytes.TrimLeft(payload, " \t\r\n")
	if len(p) == 0 {
		return nil, false, vigil.FieldErrorf("", "malformed", "empty body: send one reading object or an array of them")
	}
	if !utf8.Valid(p) {
		return nil, false, vigil.FieldErrorf("", "malformed", "body is not valid UTF-8 JSON")
	}
	if p[0] == '[' {
		var arr []json.RawMessage
		if err := json.Unmarshal(p, &arr); err != nil {
			return nil, true, malformed(err)
		}
		if len(arr) == 0 {
			return nil, true, vigil.FieldErrorf("", "empty", "the array holds no readings")
		}
		if len(arr) > maxReadings {
			return nil, true, vigil.FieldErrorf("", "too-many", "%d readings in one message; at most %d", len(arr), maxReadings)
		}
		return arr, true, nil
	}
	if p[0] != '{' {
		return nil, false, vigil.FieldErrorf("", "malformed", "body must be a JSON object or array of reading objects")
	}
	if !json.Valid(p) {
		var v any
		return nil, false, malformed(json.Unmarshal(p, &v))
	}
	return []json.RawMessage{json.RawMessage(p)}, false, nil
}

func malformed(err error) error {
	msg := "malformed JSON"
	if err != nil {
		msg += ": " + err.Error()
	}
	return vigil.FieldErrorf("", "malformed", "%s", msg)
}

// Raw is one reading as a decoder read it from a device's format, before
// validation against Vigil's rules and normalization of its values.
type Raw struct {
	ID     string
	Time   time.Time
	Field  string // where the reading is in the message, prefixed to error fields ("", "[3].", "OBX[4].")
	Values []RawValue
	// PatientIdentifier names the patient (the registry's identifier, such
	// as an MRN from HL7 PID-3) when the message does; otherwise the
	// patient is the device's assignment at Time.
	PatientIdentifier string
	// PatientID, when set, is the patient the message claims (a FHIR
	// subject); it must agree with the device's assignment.
	PatientID string
	// Battery is the device's battery charge in percent, when it said.
	Battery *float64
	// Origin is where the reading was taken, when the message says.
	Origin *vigil.Origin
	// Err is set when the decoder already refused this reading.
	Err error
}

// RawValue is one value as sent.
type RawValue struct {
	System, Code, Unit string
	Value              float64
	Field              string // e.g. "values[2]" or "OBX[3]"
}

// A Decoder turns a message into readings. An error refuses the whole
// message (*vigil.Error with Field and Reason); per-reading problems go in
// Raw.Err.
type Decoder func(ctx context.Context, m vigil.Message, maxReadings int) ([]Raw, error)

// PayloadDecoder makes a Decoder of a function that needs only the
// payload.
func PayloadDecoder(f func(payload []byte, maxReadings int) ([]Raw, error)) Decoder {
	return func(_ context.Context, m vigil.Message, max int) ([]Raw, error) { return f(m.Payload, max) }
}

// DecodeCanonical decodes Vigil's canonical reading message: one object or
// an array of them.
func DecodeCanonical(payload []byte, maxReadings int) ([]Raw, error) {
	raws, isArray, err := parse(payload, maxReadings)
	if err != nil {
		return nil, err
	}
	out := make([]Raw, len(raws))
	for i, raw := range raws {
		prefix := ""
		if isArray {
			prefix = fmt.Sprintf("[%d].", i)
		}
		out[i] = decodeOne(raw, prefix)
	}
	return out, nil
}

func decodeOne(raw json.RawMessage, prefix string) Raw {
	r := Raw{Field: prefix}
	var w wireReading
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&w); err != nil {
		var te *json.UnmarshalTypeError
		if ok := asTypeError(err, &te); ok {
			r.Err = vigil.FieldErrorf(prefix+te.Field, "wrong-type", "%s must be a %s", fieldName(prefix, te.Field), jsonType(te.Type.Kind().String()))
		} else {
			r.Err = vigil.FieldErrorf(strings.TrimSuffix(prefix, "."), "malformed", "reading is not a JSON object: %v", err)
		}
		return r
	}
	if w.ID == nil || *w.ID == "" {
		r.Err = vigil.FieldErrorf(prefix+"id", "required", "every reading needs an id, unique per device, so that re-sending it is harmless")
		return r
	}
	r.ID = *w.ID
	if w.Time == nil || *w.Time == "" {
		r.Err = vigil.FieldErrorf(prefix+"time", "required", "every reading needs a time (RFC 3339 with offset, e.g. 2026-11-24T10:15:00Z)")
		return r
	}
	t, err := time.Parse(time.RFC3339Nano, *w.Time)
	if err != nil {
		r.Err = vigil.FieldErrorf(prefix+"time", "invalid", "time %q is not RFC 3339 with an offset (e.g. 2026-11-24T10:15:00Z)", *w.Time)
		return r
	}
	r.Time = t
	r.Battery = w.Battery
	if len(w.Values) == 0 {
		r.Err = vigil.FieldErrorf(prefix+"values", "required", "a reading needs at least one value")
		return r
	}
	for i, v := range w.Values {
		f := fmt.Sprintf("%svalues[%d]", prefix, i)
		if v.Code == nil || *v.Code == "" {
			r.Err = vigil.FieldErrorf(f+".code", "required", "every value needs a code (LOINC, or an IEEE 11073 code with \"system\": %q)", vigil.SystemMDC)
			return r
		}
		if v.Value == nil {
			r.Err = vigil.FieldErrorf(f+".value", "required", "every value needs a numeric value")
			return r
		}
		r.Values = append(r.Values, RawValue{System: v.System, Code: *v.Code, Unit: v.Unit, Value: *v.Value, Field: f})
	}
	return r
}

// normalize checks a decoded reading against Vigil's rules and maps its
// values to canonical measurements.
func (p *Pipeline) normalize(raw Raw, received time.Time) (*vigil.Reading, error) {
	if raw.Err != nil {
		return nil, raw.Err
	}
	prefix := raw.Field
	if raw.ID == "" {
		return nil, vigil.FieldErrorf(prefix+"id", "required", "every reading needs an id")
	}
	if len(raw.ID) > maxIDLen || strings.IndexFunc(raw.ID, func(r rune) bool { return r == 0 || unicode.IsControl(r) }) >= 0 {
		return nil, vigil.FieldErrorf(prefix+"id", "invalid", "id must be 1–%d printable characters", maxIDLen)
	}
	r := &vigil.Reading{ID: raw.ID, Received: received, Time: raw.Time.UTC()}
	if r.Time.IsZero() {
		return nil, vigil.FieldErrorf(prefix+"time", "required", "the reading has no time")
	}
	if d := r.Time.Sub(received); d > p.opts.MaxFuture {
		return nil, vigil.FieldErrorf(prefix+"time", "future", "time is %s ahead of Vigil's clock (more than %s): check the device clock", d.Round(time.Second), p.opts.MaxFuture)
	}
	if d := received.Sub(r.Time); p.opts.MaxAge > 0 && d > p.opts.MaxAge {
		return nil, vigil.FieldErrorf(prefix+"time", "too-old", "time is %s in the past (more than %s): check the device clock", d.Round(time.Hour), p.opts.MaxAge)
	}
	if len(raw.Values) == 0 {
		return nil, vigil.FieldErrorf(prefix+"values", "required", "a reading needs at least one value")
	}
	r.Origin = raw.Origin
	if b := raw.Battery; b != nil {
		if *b < 0 || *b > 100 || *b != *b {
			return nil, vigil.FieldErrorf(prefix+"battery", "out-of-range", "battery %v: send the charge in percent, 0 to 100", *b)
		}
		v := *b
		r.Battery = &v
	}
	if len(raw.Values) > maxValues {
		return nil, vigil.FieldErrorf(prefix+"values", "too-many", "%d values in one reading; at most %d", len(raw.Values), maxValues)
	}
	seen := make(map[string]bool, len(raw.Values))
	for _, v := range raw.Values {
		m, err := p.table.Normalize(v.Field, v.System, v.Code, v.Value, v.Unit)
		if err != nil {
			return nil, err
		}
		if seen[m.Code] {
			return nil, vigil.FieldErrorf(v.Field+".code", "duplicate", "code %s appears twice in one reading", m.Code)
		}
		seen[m.Code] = true
		r.Values = append(r.Values, m)
	}
	return r, nil
}

func asTypeError(err error, te **json.UnmarshalTypeError) bool {
	e, ok := err.(*json.UnmarshalTypeError)
	if ok {
		*te = e
	}
	return ok
}

func fieldName(prefix, f string) string {
	if f == "" {
		return "the reading"
	}
	return prefix + f
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "float64", "int", "int64":
		return "number"
	case "slice":
		return "array"
	case "struct", "ptr":
		return "object"
	}
	return kind
}
