package pubhealth

import "time"

// Identifiers of Vigil's community-vitals measure and its codes.
const (
	MeasureURL      = "https://vigil-iomt.github.io/fhir/Measure/community-vitals"
	GroupSystem     = "https://vigil-iomt.github.io/fhir/CodeSystem/community-vitals"
	SuppressedExt   = "https://vigil-iomt.github.io/fhir/StructureDefinition/suppressed"
	PrivacyExt      = "https://vigil-iomt.github.io/fhir/StructureDefinition/differential-privacy"
	populationCodes = "http://terminology.hl7.org/CodeSystem/measure-population"
)

// MeasureReport renders the table as a FHIR R4 MeasureReport (type
// summary): one group per metric (patients reporting, fever rate, mean
// SpO2, hypertensive share, adherence), each stratified by cell (week,
// region, age band, sex), by region and week, and by week. A stratum's
// population is its patients and its measureScore the metric; a
// suppressed stratum carries only its components and the suppressed
// extension (small or complementary). A private table says its (ε, δ).
func (t *Table) MeasureReport(now time.Time) map[string]any {
	metrics := []struct {
		code, display, unit, ucum string
		score                     func(Cell) *float64
	}{
		{"patients-reporting", "Patients with a reading in the week", "", "", nil},
		{"fever-rate", "Share of patients with a temperature of 38.0 °C or more", "ratio", "1", func(c Cell) *float64 { return c.FeverRate }},
		{"mean-spo2", "Mean over patients of their mean SpO2", "%", "%", func(c Cell) *float64 { return c.MeanSpO2 }},
		{"hypertensive-share", "Mean share of blood pressures at or above 140/90 mmHg", "ratio", "1", func(c Cell) *float64 { return c.HypertensiveShare }},
		{"adherence", "Mean share of days with a reading", "ratio", "1", func(c Cell) *float64 { return c.Adherence }},
	}
	text := func(s string) map[string]any { return map[string]any{"text": s} }
	component := func(name, value string) map[string]any {
		return map[string]any{"code": text(name), "value": text(value)}
	}
	var groups []any
	for _, m := range metrics {
		strat := map[string][]any{"cell": nil, "region-week": nil, "week": nil}
		for _, c := range t.Cells {
			kind, comps := "cell", []any{component("week", c.Week), component("region", c.Region), component("age-band", c.AgeBand), component("sex", c.Sex)}
			switch {
			case c.Region == All:
				kind, comps = "week", []any{component("week", c.Week)}
			case c.AgeBand == All:
				kind, comps = "region-week", []any{component("week", c.Week), component("region", c.Region)}
			}
			s := map[string]any{"component": comps}
			if c.Suppressed != "" {
				s["extension"] = []any{map[string]any{"url": SuppressedExt, "valueCode": c.Suppressed}}
			} else {
				s["population"] = []any{map[string]any{"code": map[string]any{"coding": []any{map[string]any{"system": populationCodes, "code": "initial-population"}}}, "count": c.Patients}}
				if m.score != nil {
					if v := m.score(c); v != nil {
						s["measureScore"] = map[string]any{"value": *v, "unit": m.unit, "system": "http://unitsofmeasure.org", "code": m.ucum}
					}
				}
			}
			strat[kind] = append(strat[kind], s)
		}
		g := map[string]any{"code": map[string]any{"coding": []any{map[string]any{"system": GroupSystem, "code": m.code, "display": m.display}}}}
		var stratifiers []any
		for _, kind := range []string{"cell", "region-week", "week"} {
			if len(strat[kind]) > 0 {
				stratifiers = append(stratifiers, map[string]any{"code": []any{text(kind)}, "stratum": strat[kind]})
			}
		}
		if len(stratifiers) > 0 {
			g["stratifier"] = stratifiers
		}
		groups = append(groups, g)
	}
	r := map[string]any{
		"resourceType": "MeasureReport",
		"status":       "complete",
		"type":         "summary",
		"measure":      MeasureURL,
		"date":         now.UTC().Format(time.RFC3339),
		"period":       map[string]any{"start": t.From.UTC().Format(time.RFC3339), "end": t.To.UTC().Format(time.RFC3339)},
		"group":        groups,
	}
	if t.Epsilon > 0 {
		r["extension"] = []any{map[string]any{"url": PrivacyExt, "extension": []any{
			map[string]any{"url": "epsilon", "valueDecimal": t.Epsilon},
			map[string]any{"url": "delta", "valueDecimal": t.Delta},
		}}}
	}
	return r
}
