// Package medtech runs Azure MedTech (IoMT FHIR Connector) device-mapping
// and FHIR-mapping templates, so a MedTech user's templates work
// unchanged: the device mapping normalizes a device payload into
// measurements ({type, occurrenceTimeUtc, deviceId, properties}), the
// FHIR mapping turns them into coded values.
//
// Supported: CollectionContent, JsonPathContent, IotJsonPathContent,
// IotCentralJsonPathContent and CalculatedContent with JSONPath or
// JMESPath expressions (with MedTech's custom functions add, subtract,
// multiply, divide, pow, insertString, fromUnixTimestamp,
// fromUnixTimestampMs); CollectionFhir with CodeValueFhir Quantity,
// SampledData, String and CodeableConcept values and components.
// SampledData samples are stored one by one at their own times; String
// values become valueString Observations and CodeableConcept values the
// template's concept (valueCodeableConcept), under a LOINC code.
package medtech

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	jmespath "github.com/jmespath-community/go-jmespath"
)

// Error is a template problem with where it is: a line and column for
// JSON syntax, or a JSON path to the offending field.
type Error struct {
	Path   string // e.g. template[0].template.values[0].valueExpression
	Line   int
	Column int
	Msg    string
}

func (e *Error) Error() string {
	switch {
	case e.Line > 0:
		return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Column, e.Msg)
	case e.Path != "":
		return e.Path + ": " + e.Msg
	}
	return e.Msg
}

// syntaxError locates a JSON syntax error.
func syntaxError(b []byte, err error) error {
	var se *json.SyntaxError
	var off int64
	switch e := err.(type) {
	case *json.SyntaxError:
		se, off = e, e.Offset
	case *json.UnmarshalTypeError:
		off = e.Offset
		line, col := position(b, off)
		return &Error{Line: line, Column: col, Path: e.Field, Msg: fmt.Sprintf("%s must be a %s", e.Field, e.Type)}
	default:
		return &Error{Msg: err.Error()}
	}
	line, col := position(b, off)
	return &Error{Line: line, Column: col, Msg: se.Error()}
}

func position(b []byte, off int64) (int, int) {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	pre := b[:off]
	line := bytes.Count(pre, []byte("\n")) + 1
	col := int(off) - bytes.LastIndexByte(pre, '\n')
	return line, col
}

// expr is a template expression: a JSONPath string or {value, language}.
type expr struct {
	Value    string
	Language string
	steps    []step
	jp       jmespath.JMESPath
}

// eval evaluates the expression; a JMESPath array result is its elements
// (so a typeMatchExpression can match several tokens), null is nothing.
func (e *expr) eval(v any) []any {
	if e == nil {
		return nil
	}
	if e.jp != nil {
		r, err := e.jp.Search(v)
		if err != nil || r == nil {
			return nil
		}
		if a, ok := r.([]any); ok {
			return a
		}
		return []any{r}
	}
	if e.steps == nil {
		return nil
	}
	return evalPath(e.steps, v)
}

func (e *expr) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		e.Value = s
		return nil
	}
	var o struct {
		Value    string `json:"value"`
		Language string `json:"language"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return fmt.Errorf("an expression is a JSONPath string or {\"value\", \"language\"}")
	}
	e.Value, e.Language = o.Value, o.Language
	return nil
}

func (e *expr) compile(path string, required bool, defaultLanguage string) error {
	if e == nil || e.Value == "" {
		if required {
			return &Error{Path: path, Msg: "required"}
		}
		return nil
	}
	lang := e.Language
	if lang == "" {
		lang = defaultLanguage
	}
	switch strings.ToLower(lang) {
	case "", "jsonpath":
	case "jmespath":
		jp, err := compileJMESPath(e.Value)
		if err != nil {
			return &Error{Path: path, Msg: err.Error()}
		}
		e.jp = jp
		return nil
	default:
		return &Error{Path: path, Msg: fmt.Sprintf("unknown expression language %q: use JsonPath", e.Language)}
	}
	steps, err := compilePath(e.Value)
	if err != nil {
		return &Error{Path: path, Msg: err.Error()}
	}
	e.steps = steps
	return nil
}

// flexBool accepts true or "true".
type flexBool bool

func (f *flexBool) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case bool:
		*f = flexBool(x)
	case string:
		p, err := strconv.ParseBool(x)
		if err != nil {
			return fmt.Errorf("required must be true or false")
		}
		*f = flexBool(p)
	default:
		return fmt.Errorf("required must be true or false")
	}
	return nil
}

type valueTemplate struct {
	ValueName       string   `json:"valueName"`
	ValueExpression *expr    `json:"valueExpression"`
	Required        flexBool `json:"required"`
}

type contentTemplate struct {
	DefaultExpressionLanguage string          `json:"defaultExpressionLanguage"`
	TypeName                  string          `json:"typeName"`
	TypeMatchExpression       *expr           `json:"typeMatchExpression"`
	DeviceIDExpression        *expr           `json:"deviceIdExpression"`
	PatientIDExpression       *expr           `json:"patientIdExpression"`
	EncounterIDExpression     *expr           `json:"encounterIdExpression"`
	TimestampExpression       *expr           `json:"timestampExpression"`
	CorrelationIDExpression   *expr           `json:"correlationIdExpression"`
	Values                    []valueTemplate `json:"values"`
}

type typed struct {
	TemplateType string          `json:"templateType"`
	Template     json.RawMessage `json:"template"`
}

// DeviceTemplate is a compiled device-mapping template.
type DeviceTemplate struct {
	parts []part
}

type part struct {
	kind string // JsonPathContent, IotJsonPathContent, IotCentralJsonPathContent, CalculatedContent
	t    contentTemplate
}

// ParseDeviceTemplate validates and compiles a device-mapping template.
func ParseDeviceTemplate(b []byte) (*DeviceTemplate, error) {
	var top typed
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, syntaxError(b, err)
	}
	dt := &DeviceTemplate{}
	if top.TemplateType == "CollectionContent" {
		var items []typed
		if err := json.Unmarshal(top.Template, &items); err != nil {
			return nil, &Error{Path: "template", Msg: "CollectionContent holds an array of templates"}
		}
		for i, it := range items {
			p, err := compilePart(fmt.Sprintf("template[%d]", i), it)
			if err != nil {
				return nil, err
			}
			dt.parts = append(dt.parts, p)
		}
	} else {
		p, err := compilePart("", top)
		if err != nil {
			return nil, err
		}
		dt.parts = append(dt.parts, p)
	}
	if len(dt.parts) == 0 {
		return nil, &Error{Path: "template", Msg: "no templates"}
	}
	return dt, nil
}

func join(prefix, field string) string {
	if prefix == "" {
		return field
	}
	return prefix + "." + field
}

func compilePart(path string, t typed) (part, error) {
	p := part{kind: t.TemplateType}
	switch t.TemplateType {
	case "JsonPathContent", "IotJsonPathContent", "IotCentralJsonPathContent", "CalculatedContent":
	case "":
		return p, &Error{Path: join(path, "templateType"), Msg: "required"}
	default:
		return p, &Error{Path: join(path, "templateType"), Msg: fmt.Sprintf("%q is not a device-mapping template type (CollectionContent, JsonPathContent, IotJsonPathContent, IotCentralJsonPathContent, CalculatedContent)", t.TemplateType)}
	}
	if err := json.Unmarshal(t.Template, &p.t); err != nil {
		return p, &Error{Path: join(path, "template"), Msg: err.Error()}
	}
	tp := join(path, "template")
	c := &p.t
	if c.TypeName == "" {
		return p, &Error{Path: tp + ".typeName", Msg: "required"}
	}
	needIDs := p.kind == "JsonPathContent" || p.kind == "CalculatedContent"
	for _, e := range []struct {
		name string
		x    *expr
		req  bool
	}{
		{"typeMatchExpression", c.TypeMatchExpression, true},
		{"deviceIdExpression", c.DeviceIDExpression, needIDs},
		{"timestampExpression", c.TimestampExpression, needIDs},
		{"patientIdExpression", c.PatientIDExpression, false},
		{"encounterIdExpression", c.EncounterIDExpression, false},
		{"correlationIdExpression", c.CorrelationIDExpression, false},
	} {
		if err := e.x.compile(tp+"."+e.name, e.req, c.DefaultExpressionLanguage); err != nil {
			return p, err
		}
	}
	if len(c.Values) == 0 {
		return p, &Error{Path: tp + ".values", Msg: "at least one value is required"}
	}
	for i := range c.Values {
		v := &c.Values[i]
		vp := fmt.Sprintf("%s.values[%d]", tp, i)
		if v.ValueName == "" {
			return p, &Error{Path: vp + ".valueName", Msg: "required"}
		}
		if err := v.ValueExpression.compile(vp+".valueExpression", true, c.DefaultExpressionLanguage); err != nil {
			return p, err
		}
	}
	return p, nil
}

// Property is one named value of a measurement, as a string (MedTech's
// normalized form).
type Property struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Measurement is MedTech's normalized measurement.
type Measurement struct {
	Type              string     `json:"type"`
	OccurrenceTimeUTC time.Time  `json:"occurrenceTimeUtc"`
	DeviceID          string     `json:"deviceId"`
	PatientID         string     `json:"patientId,omitempty"`
	EncounterID       string     `json:"encounterId,omitempty"`
	CorrelationID     string     `json:"correlationId,omitempty"`
	Properties        []Property `json:"properties"`
}

// MarshalJSON writes occurrenceTimeUtc as MedTech does (milliseconds, Z).
func (m Measurement) MarshalJSON() ([]byte, error) {
	type alias Measurement
	return json.Marshal(struct {
		alias
		OccurrenceTimeUTC string `json:"occurrenceTimeUtc"`
	}{alias(m), m.OccurrenceTimeUTC.UTC().Format("2006-01-02T15:04:05.000Z")})
}

// Normalize applies the template to a device message. A message no
// template matches yields no measurements and no error; a matched token
// that lacks a required value is an error naming the template and value.
func (dt *DeviceTemplate) Normalize(message []byte) ([]Measurement, error) {
	var doc any
	if err := json.Unmarshal(message, &doc); err != nil {
		return nil, syntaxError(message, err)
	}
	var out []Measurement
	for _, p := range dt.parts {
		ms, err := p.normalize(doc)
		if err != nil {
			return nil, err
		}
		out = append(out, ms...)
	}
	return out, nil
}

func (p part) normalize(doc any) ([]Measurement, error) {
	c := p.t
	var out []Measurement
	root := doc
	if p.kind == "CalculatedContent" {
		// CalculatedContent expressions see the message as Body.
		root = map[string]any{"Body": doc}
	}
	for _, tok := range c.TypeMatchExpression.eval(root) {
		// Where expressions are evaluated: the matched token, or for
		// CalculatedContent {Body: message, matchedToken: token}.
		ctx := tok
		if p.kind == "CalculatedContent" {
			ctx = map[string]any{"Body": doc, "matchedToken": tok}
		}
		m := Measurement{Type: c.TypeName}
		str := func(x *expr, from any) (string, bool) {
			vs := x.eval(from)
			if len(vs) == 0 || vs[0] == nil {
				return "", false
			}
			return scalar(vs[0]), true
		}
		var ts string
		switch p.kind {
		case "IotJsonPathContent":
			m.DeviceID, _ = str(mustPath("$.SystemProperties['iothub-connection-device-id']"), doc)
			ts, _ = str(mustPath("$.Properties['iothub-creation-time-utc']"), doc)
		case "IotCentralJsonPathContent":
			m.DeviceID, _ = str(mustPath("$.deviceId"), doc)
			ts, _ = str(mustPath("$.enqueuedTime"), doc)
		default:
			m.DeviceID, _ = str(c.DeviceIDExpression, ctx)
			ts, _ = str(c.TimestampExpression, ctx)
		}
		if c.DeviceIDExpression != nil && c.DeviceIDExpression.Value != "" && p.kind != "JsonPathContent" && p.kind != "CalculatedContent" {
			m.DeviceID, _ = str(c.DeviceIDExpression, ctx)
		}
		m.PatientID, _ = str(c.PatientIDExpression, ctx)
		m.EncounterID, _ = str(c.EncounterIDExpression, ctx)
		m.CorrelationID, _ = str(c.CorrelationIDExpression, ctx)
		if m.DeviceID == "" {
			return nil, &Error{Path: c.TypeName + ".deviceId", Msg: "the message has no device id where the template looks for it"}
		}
		t, err := parseTime(ts)
		if err != nil {
			return nil, &Error{Path: c.TypeName + ".timestamp", Msg: err.Error()}
		}
		m.OccurrenceTimeUTC = t
		for _, v := range c.Values {
			s, ok := str(v.ValueExpression, ctx)
			if !ok {
				if v.Required {
					return nil, &Error{Path: c.TypeName + "." + v.ValueName, Msg: fmt.Sprintf("required value %s not found by %s", v.ValueName, v.ValueExpression.Value)}
				}
				continue
			}
			m.Properties = append(m.Properties, Property{Name: v.ValueName, Value: s})
		}
		out = append(out, m)
	}
	return out, nil
}

func mustPath(s string) *expr {
	steps, err := compilePath(s)
	if err != nil {
		panic(err)
	}
	return &expr{Value: s, steps: steps}
}

func scalar(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// parseTime accepts RFC 3339 and the zone-less ISO times devices send
// (taken as UTC), and Unix seconds.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("the message has no timestamp where the template looks for it")
	}
	for _, l := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.9999999", "2006-01-02T15:04:05", "2006-01-02 15:04:05"} {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("timestamp %q is not an ISO 8601 date-time", s)
}
