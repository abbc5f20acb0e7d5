// Package mapping turns the codes, values and units devices send into
// Vigil's canonical measurements: a LOINC code, its canonical UCUM unit,
// and a value converted to that unit and checked for plausibility.
//
// IEEE 11073 MDC codes (numeric, e.g. 150456, or reference ids, e.g.
// MDC_PULS_OXIM_SAT_O2) are mapped to LOINC with vitals.csv; MDC unit codes
// with mdc-units.csv. Both files are copied from the project's shared test
// vectors and embedded.
package mapping

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"fmt"
	"math"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/vigil-iomt/vigil"
)

//go:embed vitals.csv
var vitalsCSV []byte

//go:embed mdc-units.csv
var unitsCSV []byte

// Code describes one LOINC code Vigil stores.
type Code struct {
	LOINC   string
	Display string
	Unit    string  // canonical UCUM unit
	Min     float64 // plausible range in Unit, inclusive
	Max     float64
	// Units maps other accepted units to a conversion into Unit.
	Units map[string]func(float64) float64
}

// Table maps device codes to canonical measurements. It is immutable after
// construction and safe for concurrent use.
type Table struct {
	codes    map[string]*Code  // by LOINC
	mdc      map[string]string // MDC code or refid → LOINC
	mdcNum   map[string]string // MDC code or refid → numeric MDC code
	refID    map[string]string // numeric MDC code → reference id
	shared   map[string]bool   // LOINC codes more than one MDC code maps to
	mdcUnits map[string]string // MDC unit code or refid → UCUM
}

func same(v float64) float64 { return v }

// DefaultTable returns the built-in table.
func DefaultTable() *Table {
	perMin := map[string]func(float64) float64{"/min": same, "{beats}/min": same, "{breaths}/min": same, "1/min": same, "min-1": same, "count/min": same, "bpm": same}
	mmHg := map[string]func(float64) float64{"mm[Hg]": same, "mmHg": same, "kPa": func(v float64) float64 { return v * 7.500615758 }}
	codes := []*Code{
		{LOINC: vigil.LOINCHeartRate, Display: "Heart rate", Unit: "/min", Min: 0, Max: 350, Units: perMin},
		{LOINC: vigil.LOINCSpO2, Display: "Oxygen saturation in Arterial blood by Pulse oximetry", Unit: "%", Min: 0, Max: 100},
		{LOINC: vigil.LOINCRespRate, Display: "Respiratory rate", Unit: "/min", Min: 0, Max: 150, Units: perMin},
		{LOINC: vigil.LOINCBodyTemp, Display: "Body temperature", Unit: "Cel", Min: 20, Max: 46, Units: map[string]func(float64) float64{
			"Cel": same, "[degF]": func(v float64) float64 { return (v - 32) * 5 / 9 }, "K": func(v float64) float64 { return v - 273.15 },
		}},
		{LOINC: vigil.LOINCSystolic, Display: "Systolic blood pressure", Unit: "mm[Hg]", Min: 20, Max: 350, Units: mmHg},
		{LOINC: vigil.LOINCDiastolic, Display: "Diastolic blood pressure", Unit: "mm[Hg]", Min: 5, Max: 300, Units: mmHg},
		{LOINC: vigil.LOINCMeanBP, Display: "Mean blood pressure", Unit: "mm[Hg]", Min: 10, Max: 300, Units: mmHg},
		{LOINC: "76215-3", Display: "Invasive Systolic blood pressure", Unit: "mm[Hg]", Min: 20, Max: 350, Units: mmHg},
		{LOINC: "76213-8", Display: "Invasive Diastolic blood pressure", Unit: "mm[Hg]", Min: 5, Max: 300, Units: mmHg},
		{LOINC: "76214-6", Display: "Invasive Mean blood pressure", Unit: "mm[Hg]", Min: 10, Max: 300, Units: mmHg},
		{LOINC: vigil.LOINCBodyWeight, Display: "Body weight", Unit: "kg", Min: 0.2, Max: 700, Units: map[string]func(float64) float64{
			"kg": same, "g": func(v float64) float64 { return v / 1000 }, "[lb_av]": func(v float64) float64 { return v * 0.45359237 },
		}},
		{LOINC: "8302-2", Display: "Body height", Unit: "cm", Min: 20, Max: 300, Units: map[string]func(float64) float64{
			"cm": same, "m": func(v float64) float64 { return v * 100 }, "[in_i]": func(v float64) float64 { return v * 2.54 },
		}},
		{LOINC: "39156-5", Display: "Body mass index (BMI) [Ratio]", Unit: "kg/m2", Min: 5, Max: 200},
		{LOINC: vigil.LOINCGlucoseMass, Display: "Glucose [Mass/volume] in Blood", Unit: "mg/dL", Min: 5, Max: 2000},
		{LOINC: vigil.LOINCGlucoseMol, Display: "Glucose [Moles/volume] in Blood", Unit: "mmol/L", Min: 0.3, Max: 111},
		{LOINC: "55423-8", Display: "Number of steps in unspecified time Pedometer", Unit: "{steps}", Min: 0, Max: 200000, Units: map[string]func(float64) float64{"{steps}": same, "{count}": same}},
	}
	t := &Table{codes: make(map[string]*Code), mdc: make(map[string]string), mdcNum: make(map[string]string),
		refID: make(map[string]string), shared: make(map[string]bool), mdcUnits: make(map[string]string)}
	for _, c := range codes {
		if c.Units == nil {
			c.Units = map[string]func(float64) float64{c.Unit: same}
		}
		t.codes[c.LOINC] = c
	}
	// Accept the oxygensat profile's code as a synonym.
	t.codes[vigil.LOINCSpO2Profile] = t.codes[vigil.LOINCSpO2]

	rows, err := csv.NewReader(bytes.NewReader(vitalsCSV)).ReadAll()
	if err != nil {
		panic(fmt.Sprintf("mapping: vitals.csv: %v", err))
	}
	mapped := make(map[string]int) // LOINC → MDC codes mapping to it
	for _, r := range rows[1:] {
		code, refid, loinc := r[0], r[1], r[4]
		if code == "" || strings.Contains(loinc, " ") { // glucose: chosen by unit below
			continue
		}
		if _, ok := t.codes[loinc]; !ok {
			continue // panels and codes without a stored value
		}
		t.mdc[code], t.mdc[refid] = loinc, loinc
		t.mdcNum[code], t.mdcNum[refid] = code, code
		t.refID[code] = refid
		mapped[loinc]++
	}
	for loinc, n := range mapped {
		t.shared[loinc] = n > 1
	}
	rows, err = csv.NewReader(bytes.NewReader(unitsCSV)).ReadAll()
	if err != nil {
		panic(fmt.Sprintf("mapping: mdc-units.csv: %v", err))
	}
	for _, r := range rows[1:] {
		t.mdcUnits[r[0]], t.mdcUnits[r[1]] = r[2], r[2]
	}
	return t
}

// MDC capillary blood glucose: LOINC depends on the unit.
const (
	mdcGlucose      = "160184"
	mdcGlucoseRefID = "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD"
)

// Limit is a plausible range for a code, in its canonical unit.
type Limit struct {
	Min float64 `json:"min"`
	Max float64 `json:"max"`
}

// WithLimits returns a copy of the table with the plausible ranges of the
// given LOINC codes replaced. Unknown codes and empty ranges are errors.
func (t *Table) WithLimits(limits map[string]Limit) (*Table, error) {
	n := &Table{codes: make(map[string]*Code, len(t.codes)), mdc: t.mdc, mdcNum: t.mdcNum, refID: t.refID, shared: t.shared, mdcUnits: t.mdcUnits}
	for k, c := range t.codes {
		cp := *c
		n.codes[k] = &cp
	}
	for code, l := range limits {
		c, ok := n.codes[code]
		if !ok {
			return nil, fmt.Errorf("plausibility limit for %s: not a code Vigil stores", code)
		}
		if !(l.Min < l.Max) {
			return nil, fmt.Errorf("plausibility limit for %s: min %g must be below max %g", code, l.Min, l.Max)
		}
		c.Min, c.Max = l.Min, l.Max
	}
	// the oxygensat synonym shares SpO2's entry
	n.codes[vigil.LOINCSpO2Profile] = n.codes[vigil.LOINCSpO2]
	return n, nil
}

// Limits returns the plausible range of every code.
func (t *Table) Limits() map[string]Limit {
	out := make(map[string]Limit, len(t.codes))
	for k, c := range t.codes {
		if k != vigil.LOINCSpO2Profile {
			out[k] = Limit{c.Min, c.Max}
		}
	}
	return out
}

// FromMDC returns the LOINC code an MDC code (numeric or reference id)
// maps to.
func (t *Table) FromMDC(code string) (string, bool) {
	l, ok := t.mdc[code]
	return l, ok
}

// MDCRefID returns the reference id of a numeric MDC code Vigil maps
// (147842 → MDC_ECG_HEART_RATE).
func (t *Table) MDCRefID(code string) (string, bool) {
	r, ok := t.refID[code]
	return r, ok
}

// Lookup returns the description of a LOINC code.
func (t *Table) Lookup(loinc string) (*Code, bool) {
	c, ok := t.codes[loinc]
	return c, ok
}

// Normalize maps one value as a device sent it. field names the value in
// errors (e.g. "values[2]"). Errors are *vigil.Error EINVALID with Field
// and Reason: unknown-system, unknown-code, unit-mismatch, implausible,
// not-a-number.
func (t *Table) Normalize(field, system, code string, value float64, unit string) (vigil.Measurement, error) {
	var m vigil.Measurement
	err := t.NormalizeTo(&m, field, system, code, value, unit)
	return m, err
}

// NormalizeTo is Normalize into *m, which must be zero: the ingest
// pipeline fills its readings' values in place.
func (t *Table) NormalizeTo(m *vigil.Measurement, field, system, code string, value float64, unit string) error {
	if math.IsNaN(value) || math.IsInf(value, 0) {
		return vigil.FieldErrorf(field+".value", "not-a-number", "value must be a finite number")
	}
	loinc := code
	switch system {
	case "", vigil.SystemLOINC:
		if code == vigil.LOINCSpO2Profile {
			loinc = vigil.LOINCSpO2
			m.OrigCode, m.OrigSystem = code, vigil.SystemLOINC
		}
	case vigil.SystemMDC:
		u := unit
		if ucum, ok := t.mdcUnits[unit]; ok {
			u = ucum
		}
		if code == mdcGlucose || code == mdcGlucoseRefID {
			loinc = vigil.LOINCGlucoseMass
			if u == "mmol/L" {
				loinc = vigil.LOINCGlucoseMol
			}
		} else if l, ok := t.mdc[code]; ok {
			loinc = l
			if t.shared[l] {
				// ECG heart rate and oximeter pulse rate are both
				// 8867-4: the MDC code keeps them apart.
				m.Method = t.mdcNum[code]
			}
		} else {
			return vigil.FieldErrorf(field+".code", "unknown-code", "IEEE 11073 code %q is not one Vigil maps (see docs/mapping.md)", code)
		}
		m.OrigCode, m.OrigSystem = code, vigil.SystemMDC
		if u != unit {
			m.OrigUnit = unit
			unit = u
		}
	default:
		return vigil.FieldErrorf(field+".system", "unknown-system", "code system %q is not supported: use %s (default) or %s", system, vigil.SystemLOINC, vigil.SystemMDC)
	}
	c, ok := t.codes[loinc]
	if !ok {
		return vigil.FieldErrorf(field+".code", "unknown-code", "LOINC code %q is not one Vigil stores (see docs/mapping.md)", code)
	}
	if unit == "" {
		return vigil.FieldErrorf(field+".unit", "unit-required", "a unit is required; %s (%s) is measured in %s", c.LOINC, c.Display, c.Unit)
	}
	conv, ok := c.Units[unit]
	if !ok {
		return vigil.FieldErrorf(field+".unit", "unit-mismatch", "unit %q does not fit %s (%s): use %s", unit, c.LOINC, c.Display, acceptedUnits(c))
	}
	v := conv(value)
	if unit != c.Unit {
		if m.OrigUnit == "" {
			m.OrigUnit = unit
		}
		v = roundTo(v, 2)
	}
	if v < c.Min || v > c.Max {
		return vigil.FieldErrorf(field+".value", "implausible", "%g %s is outside the plausible range %g–%g %s for %s", value, unit, c.Min, c.Max, c.Unit, c.Display)
	}
	m.Code, m.Value, m.Unit = c.LOINC, v, c.Unit
	return nil
}

// loincCode is the shape of a LOINC code: digits, a dash, a check digit.
var loincCode = regexp.MustCompile(`^[0-9]{1,8}-[0-9]$`)

// maxText bounds a text value and each part of a concept.
const maxText = 1024

// NormalizeText maps a value that is not a number: a text (FHIR
// valueString) or a concept (valueCodeableConcept), as MedTech String and
// CodeableConcept mappings produce. Its code must be a LOINC code (any,
// since there is no unit or range to check) that is not one of the
// numeric measurements Vigil knows: heart rate as text is refused.
func (t *Table) NormalizeText(field, system, code, text string, c *vigil.Concept) (vigil.Measurement, error) {
	m := vigil.Measurement{}
	if system != "" && system != vigil.SystemLOINC {
		return m, vigil.FieldErrorf(field+".system", "unknown-system", "a text or coded value needs a LOINC code; system %q is not supported", system)
	}
	if !loincCode.MatchString(code) {
		return m, vigil.FieldErrorf(field+".code", "unknown-code", "%q is not a LOINC code (digits, a dash and a check digit, e.g. 72106-8)", code)
	}
	if n, ok := t.codes[code]; ok {
		return m, vigil.FieldErrorf(field+".value", "not-a-number", "%s (%s) is a number in %s, not text: map it to a Quantity value", code, n.Display, n.Unit)
	}
	if text != "" && c != nil {
		return m, vigil.FieldErrorf(field+".value", "invalid", "a value is either text or a concept, not both")
	}
	long := len(text) > maxText
	if c != nil {
		long = long || len(c.Text) > maxText || len(c.Coding) > 16
		for _, cd := range c.Coding {
			long = long || len(cd.System)+len(cd.Code)+len(cd.Display) > maxText
		}
		if c.Text == "" && len(c.Coding) == 0 {
			return m, vigil.FieldErrorf(field+".value", "required", "a coded value needs codes or a text")
		}
	}
	if long {
		return m, vigil.FieldErrorf(field+".value", "too-long", "a text value holds at most %d characters (and a concept 16 codes)", maxText)
	}
	if !utf8.ValidString(text) || strings.ContainsRune(text, 0) {
		return m, vigil.FieldErrorf(field+".value", "invalid", "text must be UTF-8 without NUL characters")
	}
	m.Code, m.Text, m.Concept = code, text, c
	return m, nil
}

func acceptedUnits(c *Code) string {
	us := []string{c.Unit}
	for u := range c.Units {
		if u != c.Unit {
			us = append(us, u)
		}
	}
	if len(us) > 1 {
		// deterministic order after the canonical unit
		rest := us[1:]
		for i := range rest {
			for j := i + 1; j < len(rest); j++ {
				if rest[j] < rest[i] {
					rest[i], rest[j] = rest[j], rest[i]
				}
			}
		}
	}
	return strings.Join(us, ", ")
}

func roundTo(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
