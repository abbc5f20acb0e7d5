package medtech

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/vigil-iomt/vigil"
)

type coding struct {
	Code    string `json:"code"`
	System  string `json:"system"`
	Display string `json:"display"`
}

type valueSpec struct {
	ValueName string `json:"valueName"`
	ValueType string `json:"valueType"`
	System    string `json:"system"`
	Code      string `json:"code"`
	Unit      string `json:"unit"`
	// DefaultPeriod (ms) of a SampledData value.
	DefaultPeriod *float64 `json:"defaultPeriod"`
	// Text and Codes of a CodeableConcept value: the concept the
	// Observation's value is when the measurement has the property.
	Text  string   `json:"text"`
	Codes []coding `json:"codes"`
}

type codeValueFhir struct {
	Codes      []coding   `json:"codes"`
	TypeName   string     `json:"typeName"`
	Value      *valueSpec `json:"value"`
	Components []struct {
		Codes []coding   `json:"codes"`
		Value *valueSpec `json:"value"`
	} `json:"components"`
	PeriodInterval *int `json:"periodInterval"`
}

// FhirTemplate is a compiled FHIR-mapping template.
type FhirTemplate struct {
	byType map[string]codeValueFhir
}

// Value is one coded value a measurement maps to: a number, or (from
// String and CodeableConcept mappings) a text or a concept.
type Value struct {
	System, Code, Unit string
	Value              float64
	Text               string
	Concept            *vigil.Concept
	Sampling           *vigil.Sampling // a SampledData value's grouping
	Field              string          // the property it came from
}

// ParseFhirTemplate validates and compiles a FHIR-mapping template.
func ParseFhirTemplate(b []byte) (*FhirTemplate, error) {
	var top typed
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, syntaxError(b, err)
	}
	items := []typed{top}
	prefix := ""
	if top.TemplateType == "CollectionFhir" {
		if err := json.Unmarshal(top.Template, &items); err != nil {
			return nil, &Error{Path: "template", Msg: "CollectionFhir holds an array of templates"}
		}
		prefix = "template"
	}
	ft := &FhirTemplate{byType: make(map[string]codeValueFhir)}
	for i, it := range items {
		p := fmt.Sprintf("%s[%d]", prefix, i)
		if prefix == "" {
			p = ""
		}
		if it.TemplateType != "CodeValueFhir" {
			return nil, &Error{Path: join(p, "templateType"), Msg: fmt.Sprintf("%q is not a FHIR-mapping template type (CollectionFhir, CodeValueFhir)", it.TemplateType)}
		}
		var cv codeValueFhir
		if err := json.Unmarshal(it.Template, &cv); err != nil {
			return nil, &Error{Path: join(p, "template"), Msg: err.Error()}
		}
		tp := join(p, "template")
		if cv.TypeName == "" {
			return nil, &Error{Path: tp + ".typeName", Msg: "required"}
		}
		if len(cv.Codes) == 0 {
			return nil, &Error{Path: tp + ".codes", Msg: "at least one code is required"}
		}
		if pi := cv.PeriodInterval; pi != nil && *pi != 0 && *pi != 60 && *pi != 1440 {
			return nil, &Error{Path: tp + ".periodInterval", Msg: fmt.Sprintf("%d: use 0 (one Observation per time), 60 (per hour) or 1440 (per day)", *pi)}
		}
		check := func(path string, codes []coding, v *valueSpec) error {
			if v == nil {
				return nil
			}
			if v.ValueName == "" {
				return &Error{Path: path + ".valueName", Msg: "required"}
			}
			switch v.ValueType {
			case "Quantity":
			case "SampledData":
				// Each sample is a numeric value at its own time: Vigil
				// stores it as such (and serves Quantity Observations).
				if v.Unit == "" {
					return &Error{Path: path + ".unit", Msg: "a SampledData value needs its unit (UCUM)"}
				}
				if v.DefaultPeriod == nil || *v.DefaultPeriod <= 0 {
					return &Error{Path: path + ".defaultPeriod", Msg: "a SampledData value needs a defaultPeriod in milliseconds"}
				}
				if pi := cv.PeriodInterval; pi != nil && float64(*pi)*60000 / *v.DefaultPeriod > 100_000 {
					return &Error{Path: path + ".defaultPeriod", Msg: fmt.Sprintf("%g ms is too fine for a %d-minute Observation: at most 100,000 values each", *v.DefaultPeriod, *pi)}
				}
			case "String", "CodeableConcept":
				// Vigil keeps text and coded values under LOINC codes.
				if sys, _ := pick(codes); sys != vigil.SystemLOINC {
					return &Error{Path: path + ".valueType", Msg: v.ValueType + " values are kept under a LOINC code: add a coding with system http://loinc.org to the codes"}
				}
				if v.ValueType == "CodeableConcept" && v.Text == "" && len(v.Codes) == 0 {
					return &Error{Path: path + ".codes", Msg: "a CodeableConcept value needs codes or a text"}
				}
			default:
				return &Error{Path: path + ".valueType", Msg: fmt.Sprintf("valueType %q: use Quantity, SampledData, String or CodeableConcept", v.ValueType)}
			}
			return nil
		}
		if cv.Value == nil && len(cv.Components) == 0 {
			return nil, &Error{Path: tp + ".value", Msg: "a value or components are required"}
		}
		if err := check(tp+".value", cv.Codes, cv.Value); err != nil {
			return nil, err
		}
		for j, c := range cv.Components {
			cp := fmt.Sprintf("%s.components[%d]", tp, j)
			if len(c.Codes) == 0 {
				return nil, &Error{Path: cp + ".codes", Msg: "required"}
			}
			if c.Value == nil {
				return nil, &Error{Path: cp + ".value", Msg: "required"}
			}
			if err := check(cp+".value", c.Codes, c.Value); err != nil {
				return nil, err
			}
		}
		if _, dup := ft.byType[cv.TypeName]; dup {
			return nil, &Error{Path: tp + ".typeName", Msg: fmt.Sprintf("type %q is mapped twice", cv.TypeName)}
		}
		ft.byType[cv.TypeName] = cv
	}
	return ft, nil
}

// Map returns the coded values of a measurement. A measurement whose type
// has no FHIR mapping is an error naming the type.
func (ft *FhirTemplate) Map(m Measurement) ([]Value, error) {
	cv, ok := ft.byType[m.Type]
	if !ok {
		return nil, &Error{Path: m.Type, Msg: fmt.Sprintf("no FHIR mapping for measurement type %q", m.Type)}
	}
	prop := func(name string) (string, bool) {
		for _, p := range m.Properties {
			if p.Name == name {
				return p.Value, true
			}
		}
		return "", false
	}
	var out []Value
	add := func(codes []coding, v *valueSpec) error {
		raw, ok := prop(v.ValueName)
		if !ok {
			return nil
		}
		sys, code := pick(codes)
		val := Value{System: sys, Code: code, Field: v.ValueName}
		switch v.ValueType {
		case "String":
			if raw == "" {
				return &Error{Path: m.Type + "." + v.ValueName, Msg: "the text value is empty"}
			}
			val.Text = raw
		case "CodeableConcept":
			// As MedTech: the template's concept, when the property is there.
			c := &vigil.Concept{Text: v.Text}
			for _, cd := range v.Codes {
				c.Coding = append(c.Coding, vigil.Coding{System: cd.System, Code: cd.Code, Display: cd.Display})
			}
			val.Concept = c
		default:
			n, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
			if err != nil {
				return &Error{Path: m.Type + "." + v.ValueName, Msg: fmt.Sprintf("value %q is not a number", raw)}
			}
			val.Value, val.Unit = n, v.Code // a Quantity's UCUM code
			if v.ValueType == "SampledData" {
				val.Unit = v.Unit
				val.Sampling = &vigil.Sampling{PeriodMS: *v.DefaultPeriod}
				if cv.PeriodInterval != nil {
					val.Sampling.IntervalMin = *cv.PeriodInterval
				}
			}
		}
		out = append(out, val)
		return nil
	}
	if cv.Value != nil {
		if err := add(cv.Codes, cv.Value); err != nil {
			return nil, err
		}
	}
	for _, c := range cv.Components {
		if err := add(c.Codes, c.Value); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, &Error{Path: m.Type, Msg: "the measurement has none of the mapped values"}
	}
	return out, nil
}

// pick prefers a LOINC coding, then IEEE 11073, then the first.
func pick(cs []coding) (string, string) {
	for _, want := range []string{"http://loinc.org", "urn:iso:std:iso:11073:10101"} {
		for _, c := range cs {
			if c.System == want {
				return c.System, c.Code
			}
		}
	}
	return cs[0].System, cs[0].Code
}
