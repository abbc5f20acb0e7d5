package medtech

import (
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/fhir"
	"github.com/vigil-iomt/vigil/internal/mapping"
)

// DryRun is what a template pair makes of a sample payload, or exactly why
// not: the normalized measurements (MedTech's intermediate form), Vigil's
// canonical measurements and the FHIR Observations that would be stored.
type DryRun struct {
	Measurements []Measurement       `json:"measurements"`
	Values       []vigil.Measurement `json:"values"`
	Observations []*fhir.Observation `json:"observations"`
	Errors       []string            `json:"errors,omitempty"`
}

// Test runs the templates on a message without storing anything. patient
// names the subject of the Observations shown ("" → "example").
func Test(deviceTemplate, fhirTemplate, message []byte, table *mapping.Table, patient string) (*DryRun, error) {
	dt, err := ParseDeviceTemplate(deviceTemplate)
	if err != nil {
		return nil, &Error{Path: join("deviceTemplate", pathOf(err)), Line: lineOf(err), Column: colOf(err), Msg: msgOf(err)}
	}
	ft, err := ParseFhirTemplate(fhirTemplate)
	if err != nil {
		return nil, &Error{Path: join("fhirTemplate", pathOf(err)), Line: lineOf(err), Column: colOf(err), Msg: msgOf(err)}
	}
	if patient == "" {
		patient = "example"
	}
	out := &DryRun{Measurements: []Measurement{}, Values: []vigil.Measurement{}, Observations: []*fhir.Observation{}}
	ms, err := dt.Normalize(message)
	if err != nil {
		out.Errors = append(out.Errors, "device mapping: "+err.Error())
		return out, nil
	}
	if len(ms) == 0 {
		out.Errors = append(out.Errors, "device mapping: no template's typeMatchExpression matches this message")
	}
	out.Measurements = ms
	for i, m := range ms {
		vs, err := ft.Map(m)
		if err != nil {
			out.Errors = append(out.Errors, "FHIR mapping: "+err.Error())
			continue
		}
		var comps []vigil.Measurement
		for _, v := range vs {
			var cm vigil.Measurement
			if v.Text != "" || v.Concept != nil {
				cm, err = table.NormalizeText(m.Type+"."+v.Field, v.System, v.Code, v.Text, v.Concept)
			} else {
				cm, err = table.Normalize(m.Type+"."+v.Field, v.System, v.Code, v.Value, v.Unit)
			}
			if err != nil {
				out.Errors = append(out.Errors, err.Error())
				continue
			}
			cm.Sampling = v.Sampling
			out.Values = append(out.Values, cm)
			comps = append(comps, cm)
		}
		obs := observations(i, m, comps, patient)
		out.Observations = append(out.Observations, obs...)
	}
	return out, nil
}

// observations shows what the store makes of the values: one Observation
// per code, systolic and diastolic paired into a panel.
func observations(i int, m Measurement, vs []vigil.Measurement, patient string) []*fhir.Observation {
	var sys, dia *vigil.Measurement
	var out []*fhir.Observation
	o := func(v vigil.Measurement, comps []vigil.Measurement) *fhir.Observation {
		ob := &vigil.Observation{ID: "dry-run-" + itoa(i) + "-" + v.Code, PatientID: patient, DeviceID: m.DeviceID, Code: v.Code,
			Value: v.Value, Unit: v.Unit, Method: v.Method, Text: v.Text, Concept: v.Concept, Time: m.OccurrenceTimeUTC, Received: time.Now().UTC(), Components: comps}
		if sp := v.Sampling; sp != nil {
			ob.Time, ob.Sampled = sampledPeriod(*sp, m.OccurrenceTimeUTC, v.Value)
		}
		return fhir.ObservationResource(ob)
	}
	for k := range vs {
		switch vs[k].Code {
		case vigil.LOINCSystolic:
			sys = &vs[k]
			continue
		case vigil.LOINCDiastolic:
			dia = &vs[k]
			continue
		}
		out = append(out, o(vs[k], nil))
	}
	if sys != nil && dia != nil {
		out = append(out, o(vigil.Measurement{Code: vigil.LOINCBPPanel}, []vigil.Measurement{*sys, *dia}))
	} else {
		for _, x := range []*vigil.Measurement{sys, dia} {
			if x != nil {
				out = append(out, o(*x, nil))
			}
		}
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// sampledPeriod is the SampledData period a lone value at t falls in, as
// the store groups it (its start, and the value in its slot).
func sampledPeriod(sp vigil.Sampling, t time.Time, v float64) (time.Time, *vigil.SampledData) {
	iv := time.Duration(sp.IntervalMin) * time.Minute
	start := t
	if iv > 0 {
		start = t.Truncate(iv) // UTC-aligned: hours and days from the epoch
	}
	k := int(float64(t.Sub(start).Milliseconds()) / max(sp.PeriodMS, 1))
	slots := make([]string, k+1)
	for j := range slots {
		slots[j] = "E"
	}
	slots[k] = strconv.FormatFloat(v, 'f', -1, 64)
	return start, &vigil.SampledData{PeriodMS: sp.PeriodMS, End: start.Add(iv), Data: strings.Join(slots, " "), Count: 1}
}

func pathOf(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Path
	}
	return ""
}
func lineOf(err error) int {
	if e, ok := err.(*Error); ok {
		return e.Line
	}
	return 0
}
func colOf(err error) int {
	if e, ok := err.(*Error); ok {
		return e.Column
	}
	return 0
}
func msgOf(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Msg
	}
	return err.Error()
}
