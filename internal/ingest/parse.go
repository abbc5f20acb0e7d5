package ingest

import (
	"bytes"
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

// validate turns one raw reading into a Reading without device or patient.
// prefix is the field prefix in errors ("" or "[3]."). It returns the id
// it found, even when the reading is invalid.
func (p *Pipeline) validate(raw json.RawMessage, prefix string, received time.Time) (*vigil.Reading, string, error) {
	var w wireReading
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&w); err != nil {
		var te *json.UnmarshalTypeError
		if ok := asTypeError(err, &te); ok {
			return nil, "", vigil.FieldErrorf(prefix+te.Field, "wrong-type", "%s must be a %s", fieldName(prefix, te.Field), jsonType(te.Type.Kind().String()))
		}
		return nil, "", vigil.FieldErrorf(strings.TrimSuffix(prefix, "."), "malformed", "reading is not a JSON object: %v", err)
	}
	id := ""
	if w.ID == nil || *w.ID == "" {
		return nil, "", vigil.FieldErrorf(prefix+"id", "required", "every reading needs an id, unique per device, so that re-sending it is harmless")
	}
	id = *w.ID
	if len(id) > maxIDLen || strings.IndexFunc(id, func(r rune) bool { return r == 0 || unicode.IsControl(r) }) >= 0 {
		return nil, "", vigil.FieldErrorf(prefix+"id", "invalid", "id must be 1–%d printable characters", maxIDLen)
	}
	r := &vigil.Reading{ID: id, Received: received}
	if w.Time == nil || *w.Time == "" {
		return nil, id, vigil.FieldErrorf(prefix+"time", "required", "every reading needs a time (RFC 3339 with offset, e.g. 2026-11-24T10:15:00Z)")
	}
	t, err := time.Parse(time.RFC3339Nano, *w.Time)
	if err != nil {
		return nil, id, vigil.FieldErrorf(prefix+"time", "invalid", "time %q is not RFC 3339 with an offset (e.g. 2026-11-24T10:15:00Z)", *w.Time)
	}
	r.Time = t.UTC()
	if d := r.Time.Sub(received); d > p.opts.MaxFuture {
		return nil, id, vigil.FieldErrorf(prefix+"time", "future", "time is %s ahead of Vigil's clock (more than %s): check the device clock", d.Round(time.Second), p.opts.MaxFuture)
	}
	if d := received.Sub(r.Time); p.opts.MaxAge > 0 && d > p.opts.MaxAge {
		return nil, id, vigil.FieldErrorf(prefix+"time", "too-old", "time is %s in the past (more than %s): check the device clock", d.Round(time.Hour), p.opts.MaxAge)
	}
	if len(w.Values) == 0 {
		return nil, id, vigil.FieldErrorf(prefix+"values", "required", "a reading needs at least one value")
	}
	if len(w.Values) > maxValues {
		return nil, id, vigil.FieldErrorf(prefix+"values", "too-many", "%d values in one reading; at most %d", len(w.Values), maxValues)
	}
	seen := make(map[string]bool, len(w.Values))
	for i, v := range w.Values {
		f := fmt.Sprintf("%svalues[%d]", prefix, i)
		if v.Code == nil || *v.Code == "" {
			return nil, id, vigil.FieldErrorf(f+".code", "required", "every value needs a code (LOINC, or an IEEE 11073 code with \"system\": %q)", vigil.SystemMDC)
		}
		if v.Value == nil {
			return nil, id, vigil.FieldErrorf(f+".value", "required", "every value needs a numeric value")
		}
		m, err := p.table.Normalize(f, v.System, *v.Code, *v.Value, v.Unit)
		if err != nil {
			return nil, id, err
		}
		if seen[m.Code] {
			return nil, id, vigil.FieldErrorf(f+".code", "duplicate", "code %s appears twice in one reading", m.Code)
		}
		seen[m.Code] = true
		r.Values = append(r.Values, m)
	}
	return r, id, nil
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
