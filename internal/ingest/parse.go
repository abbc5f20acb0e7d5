package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/vigil-iomt/vigil"
)

// Limits of one message.
const (
	maxIDLen       = 64
	maxValues      = 64
	defaultMaxMsgs = 5000
)

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
	// Received, when set, is when the reading first reached Vigil (an
	// edge gateway forwarding what it took in earlier); otherwise the
	// message's receive time.
	Received time.Time
	// Err is set when the decoder already refused this reading.
	Err error
	// buf, on a batch's first reading, is the room the batch was decoded
	// into (recycle).
	buf *batchBuf
}

// RawValue is one value as sent.
type RawValue struct {
	System, Code, Unit string
	Value              float64
	Field              string // e.g. "values[2]" or "OBX[3]"
	// Text or Concept instead of Value: a value that is not a number
	// (from MedTech String and CodeableConcept mappings).
	Text    string
	Concept *vigil.Concept
	// Sampling: a MedTech SampledData value's grouping for FHIR.
	Sampling *vigil.Sampling
	// OrigUnit is the unit the device sent when Value was already
	// converted from it (an edge gateway forwards normalized values).
	OrigUnit string
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
// an array of them. It parses with fastjson (no reflection: a fifth of the
// CPU encoding/json took on the MQTT ingest path, docs/decisions/0001-fastjson-canonical-readings.md) and
// names the field of every problem.
func DecodeCanonical(payload []byte, maxReadings int) ([]Raw, error) {
	p := bytes.TrimLeft(payload, " \t\r\n")
	if len(p) == 0 {
		return nil, vigil.FieldErrorf("", "malformed", "empty body: send one reading object or an array of them")
	}
	if !utf8.Valid(p) {
		return nil, vigil.FieldErrorf("", "malformed", "body is not valid UTF-8 JSON")
	}
	if p[0] != '[' && p[0] != '{' {
		return nil, vigil.FieldErrorf("", "malformed", "body must be a JSON object or array of reading objects")
	}
	if out, ok := decodeFast(p, maxReadings); ok {
		return out, nil
	}
	return decodeTree(p, maxReadings)
}

// decodeTree is DecodeCanonical for any message: it parses p (trimmed,
// valid UTF-8, an object or an array) into fastjson's tree and reads each
// member, naming the field of every problem.
func decodeTree(p []byte, maxReadings int) ([]Raw, error) {
	parser := parsers.Get()
	defer parsers.Put(parser)
	v, err := parser.ParseBytes(p)
	if err != nil {
		// fastjson's message quotes the payload; encoding/json's names
		// the position only.
		var x any
		return nil, malformed(json.Unmarshal(p, &x))
	}
	if v.Type() != fastjson.TypeArray {
		out := make([]Raw, 1)
		decodeOne(v, -1, nil, &out[0])
		return out, nil
	}
	arr, _ := v.Array()
	if len(arr) == 0 {
		return nil, vigil.FieldErrorf("", "empty", "the array holds no readings")
	}
	if len(arr) > maxReadings {
		return nil, vigil.FieldErrorf("", "too-many", "%d readings in one message; at most %d", len(arr), maxReadings)
	}
	out := make([]Raw, len(arr))
	values := make([]RawValue, 0, len(arr)) // most readings hold one value
	for i, e := range arr {
		decodeOne(e, i, &values, &out[i])
	}
	return out, nil
}

// elemPrefixes are the field prefixes "[i]." of an array's readings, made
// once for the first defaultMaxMsgs rather than per reading of every batch.
var elemPrefixes = sync.OnceValue(func() []string {
	p := make([]string, defaultMaxMsgs)
	for i := range p {
		p[i] = "[" + strconv.Itoa(i) + "]."
	}
	return p
})

// elemValues0 are the field names "[i].values[0]", likewise.
var elemValues0 = sync.OnceValue(func() []string {
	p := elemPrefixes()
	f := make([]string, len(p))
	for i := range f {
		f[i] = p[i] + "values[0]"
	}
	return f
})

// elemPrefix is the field prefix of reading elem of an array, "" for a
// lone reading (elem < 0).
func elemPrefix(elem int) string {
	if elem < 0 {
		return ""
	}
	if p := elemPrefixes(); elem < len(p) {
		return p[elem]
	}
	return "[" + strconv.Itoa(elem) + "]."
}

// carve returns an empty slice with room for n, taken from what is left
// of *pool when there is enough (one allocation for a message's values or
// readings instead of one per reading), else a new one.
func carve[T any](pool *[]T, n int) []T {
	if pool == nil || cap(*pool)-len(*pool) < n {
		return make([]T, 0, n)
	}
	k := len(*pool)
	*pool = (*pool)[:k+n]
	return (*pool)[k : k : k+n]
}

// interned holds the code, unit and system strings seen, so that the
// same few strings of every reading are not allocated again; bounded,
// since devices may send anything.
// Lookups read the current map without a lock (three per reading, from
// every handler at once); a new string replaces the map with a copy.
var interned struct {
	mu sync.Mutex // serializes replacing m
	m  atomic.Pointer[map[string]string]
}

func intern(b []byte) string {
	if m := interned.m.Load(); m != nil {
		if s, ok := (*m)[string(b)]; ok { // no allocation for the lookup
			return s
		}
	}
	s := string(b)
	if len(s) > 64 {
		return s
	}
	interned.mu.Lock()
	defer interned.mu.Unlock()
	old := interned.m.Load()
	if old != nil && len(*old) >= 4096 {
		return s
	}
	m := make(map[string]string, 1)
	if old != nil {
		if o, ok := (*old)[s]; ok {
			return o
		}
		m = maps.Clone(*old)
	}
	m[s] = s
	interned.m.Store(&m)
	return s
}

var parsers fastjson.ParserPool

// decodeOne decodes one reading object into *r, which is zero. Members
// other than id, time, values and battery are ignored; null is the same
// as absent. elem is the reading's index in an array (-1: a lone
// reading); its values are carved from *values (they live as long as the
// message's decoding). It fills r and its values in place: copying them
// (168 and 120 bytes holding pointers) was a sixth of a batch's decoding.
func decodeOne(v *fastjson.Value, elem int, values *[]RawValue, r *Raw) {
	prefix := elemPrefix(elem)
	r.Field = prefix
	if v.Type() != fastjson.TypeObject {
		r.Err = vigil.FieldErrorf(strings.TrimSuffix(prefix, "."), "wrong-type", "the reading must be a JSON object")
		return
	}
	id, ok := str(v, "id")
	if !ok {
		r.Err = wrongType(prefix+"id", "string")
		return
	}
	if id == "" {
		r.Err = vigil.FieldErrorf(prefix+"id", "required", "every reading needs an id, unique per device, so that re-sending it is harmless")
		return
	}
	r.ID = id
	ts, ok := str(v, "time")
	if !ok {
		r.Err = wrongType(prefix+"time", "string")
		return
	}
	if ts == "" {
		r.Err = vigil.FieldErrorf(prefix+"time", "required", "every reading needs a time (RFC 3339 with offset, e.g. 2026-11-24T10:15:00Z)")
		return
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		r.Err = vigil.FieldErrorf(prefix+"time", "invalid", "time %q is not RFC 3339 with an offset (e.g. 2026-11-24T10:15:00Z)", ts)
		return
	}
	r.Time = t
	if b := v.Get("battery"); b != nil && b.Type() != fastjson.TypeNull {
		f, err := b.Float64()
		if err != nil {
			r.Err = wrongType(prefix+"battery", "number")
			return
		}
		r.Battery = &f
	}
	vals := v.Get("values")
	if vals != nil && vals.Type() != fastjson.TypeNull && vals.Type() != fastjson.TypeArray {
		r.Err = wrongType(prefix+"values", "array")
		return
	}
	var arr []*fastjson.Value
	if vals != nil {
		arr, _ = vals.Array()
	}
	if len(arr) == 0 {
		r.Err = vigil.FieldErrorf(prefix+"values", "required", "a reading needs at least one value")
		return
	}
	r.Values = carve(values, len(arr))
	for i, e := range arr {
		var f string
		if i == 0 && elem >= 0 && elem < defaultMaxMsgs {
			f = elemValues0()[elem] // the usual one value of a batch's reading: made once
		} else {
			f = valueField(prefix, i)
		}
		if e.Type() != fastjson.TypeObject {
			r.Err = wrongType(f, "object")
			return
		}
		rv := &r.Values[:i+1][i] // in the carved slab; counted once complete
		rv.Field = f
		if rv.System, ok = internedStr(e, "system"); !ok {
			r.Err = wrongType(f+".system", "string")
			return
		}
		if rv.Code, ok = internedStr(e, "code"); !ok {
			r.Err = wrongType(f+".code", "string")
			return
		}
		if rv.Unit, ok = internedStr(e, "unit"); !ok {
			r.Err = wrongType(f+".unit", "string")
			return
		}
		if rv.Code == "" {
			r.Err = vigil.FieldErrorf(f+".code", "required", "every value needs a code (LOINC, or an IEEE 11073 code with \"system\": %q)", vigil.SystemMDC)
			return
		}
		x := e.Get("value")
		if x == nil || x.Type() == fastjson.TypeNull {
			r.Err = vigil.FieldErrorf(f+".value", "required", "every value needs a numeric value")
			return
		}
		if rv.Value, err = x.Float64(); err != nil {
			r.Err = wrongType(f+".value", "number")
			return
		}
		r.Values = r.Values[:i+1]
	}
}

// str returns member key of object v as a string: "" when absent or null;
// ok is false when it is another type.
func str(v *fastjson.Value, key string) (s string, ok bool) {
	x := v.Get(key)
	if x == nil || x.Type() == fastjson.TypeNull {
		return "", true
	}
	b, err := x.StringBytes()
	return string(b), err == nil
}

// internedStr is str for the strings of a small vocabulary (codes,
// units, systems).
func internedStr(v *fastjson.Value, key string) (s string, ok bool) {
	x := v.Get(key)
	if x == nil || x.Type() == fastjson.TypeNull {
		return "", true
	}
	b, err := x.StringBytes()
	if err != nil {
		return "", false
	}
	return intern(b), true
}

func wrongType(field, want string) error {
	return vigil.FieldErrorf(field, "wrong-type", "%s must be a %s", field, want)
}

// valueFields are the field names of a single reading's first values,
// made once rather than per value of every message.
var valueFields = func() []string {
	f := make([]string, maxValues)
	for i := range f {
		f[i] = fmt.Sprintf("values[%d]", i)
	}
	return f
}()

func valueField(prefix string, i int) string {
	if i < len(valueFields) {
		return prefix + valueFields[i]
	}
	return fmt.Sprintf("%svalues[%d]", prefix, i)
}

// normalize checks a decoded reading against Vigil's rules and maps its
// values to canonical measurements.
// slab hands out the readings and values of one message from two
// allocations instead of two per reading (a batch holds thousands).
type slab struct {
	rs []vigil.Reading
	ms []vigil.Measurement
}

func newSlab(raws []Raw) *slab {
	n := 0
	for _, r := range raws {
		n += len(r.Values)
	}
	if len(raws) == 1 && n == 1 { // one reading of one value: one allocation
		one := new(struct {
			r [1]vigil.Reading
			m [1]vigil.Measurement
		})
		return &slab{rs: one.r[:0], ms: one.m[:0]}
	}
	return &slab{rs: make([]vigil.Reading, 0, len(raws)), ms: make([]vigil.Measurement, 0, n)}
}

func (s *slab) reading() *vigil.Reading { return &carve(&s.rs, 1)[:1][0] }

func (s *slab) values(n int) []vigil.Measurement { return carve(&s.ms, n) }

func (p *Pipeline) normalize(raw *Raw, received time.Time, sl *slab) (*vigil.Reading, error) {
	if raw.Err != nil {
		return nil, raw.Err
	}
	prefix := raw.Field
	if raw.ID == "" {
		return nil, vigil.FieldErrorf(prefix+"id", "required", "every reading needs an id")
	}
	if len(raw.ID) > maxIDLen || !printable(raw.ID) {
		return nil, vigil.FieldErrorf(prefix+"id", "invalid", "id must be 1–%d printable characters", maxIDLen)
	}
	if !raw.Received.IsZero() {
		received = raw.Received.UTC()
	}
	r := sl.reading() // zero: set field by field, not copied whole
	r.ID, r.Received, r.Time = raw.ID, received, raw.Time.UTC()
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
	r.Values = sl.values(len(raw.Values))
	for i := range raw.Values {
		v := &raw.Values[i]
		m := &r.Values[:i+1][i] // in the slab; counted once complete
		var err error
		if v.Text != "" || v.Concept != nil {
			*m, err = p.table.NormalizeText(v.Field, v.System, v.Code, v.Text, v.Concept)
		} else {
			err = p.table.NormalizeTo(m, v.Field, v.System, v.Code, v.Value, v.Unit)
		}
		if err != nil {
			return nil, err
		}
		m.Sampling = v.Sampling
		if v.OrigUnit != "" && v.OrigUnit != m.Unit {
			m.OrigUnit = v.OrigUnit
		}
		for _, o := range r.Values { // one value per code and method
			if o.Code == m.Code && o.Method == m.Method {
				return nil, vigil.FieldErrorf(v.Field+".code", "duplicate", "code %s appears twice in one reading", m.Code)
			}
		}
		r.Values = r.Values[:i+1]
	}
	return r, nil
}

// printable tells whether id holds no zero byte or control character.
func printable(id string) bool {
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c == 0x7f {
			return false
		} else if c >= 0x80 {
			return strings.IndexFunc(id[i:], unicode.IsControl) < 0
		}
	}
	return true
}
