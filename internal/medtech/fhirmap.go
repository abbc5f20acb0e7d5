package medtech

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
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

// Value is one coded value a measurement maps to.
type Value struct {
	System, Code, Unit string
	Value              float64
	Field              string // the property it came from
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
		check := func(path string, v *valueSpec) error {
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
			case "String", "CodeableConcept":
				return &Error{Path: path + ".valueType", Msg: v.ValueType + " values are text, and Vigil stores numeric values: map the measurement to a Quantity or SampledData value"}
			default:
				return &Error{Path: path + ".valueType", Msg: fmt.Sprintf("valueType %q: use Quantity or SampledData", v.ValueType)}
			}
			return nil
		}
		if cv.Value == nil && len(cv.Components) == 0 {
			return nil, &Error{Path: tp + ".value", Msg: "a value or components are required"}
		}
		if err := check(tp+".value", cv.Value); err != nil {
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
			if err := check(cp+".value", c.Value); err != nil {
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
	prop := func(name string) (float64, bool, error) {
		for _, p := range m.Properties {
			if p.Name == name {
				v, err := strconv.ParseFloat(strings.TrimSpace(p.Value), 64)
				if err != nil {
					return 0, true, &Error{Path: m.Type + "." + name, Msg: fmt.Sprintf("value %q is not a number", p.Value)}
				}
				return v, true, nil
			}
		}
		return 0, false, nil
	}
	var out []Value
	add := func(codes []coding, v *valueSpec) error {
		val, ok, err := prop(v.ValueName)
		if err != nil || !ok {
			return err
		}
		sys, code := pick(codes)
		unit := v.Code // a Quantity's UCUM code
		if v.ValueType == "SampledData" {
			unit = v.Unit
		}
		out = append(out, Value{System: sys, Code: code, Unit: unit, Value: val, Field: v.ValueName})
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
