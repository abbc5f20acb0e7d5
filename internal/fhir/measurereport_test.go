package fhir

import (
	"testing"
	"time"

	"github.com/vigil-iomt/vigil/internal/pubhealth"
)

// Public-health aggregates as FHIR (GET /api/v1/aggregates?format=fhir)
// are valid R4 MeasureReports: exact with suppressed strata, and private.
func TestMeasureReportValidates(t *testing.T) {
	v := func(f float64) *float64 { return &f }
	from := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	exact := &pubhealth.Table{From: from, To: from.AddDate(0, 0, 7), K: 11, Cells: []pubhealth.Cell{
		{Week: "2026-W45", Region: "SW1", AgeBand: "45-64", Sex: "female", Patients: 12, FeverRate: v(0.25), MeanSpO2: v(96), HypertensiveShare: v(0.333), Adherence: v(0.81)},
		{Week: "2026-W45", Region: "SW1", AgeBand: "75+", Sex: "male", Suppressed: "small"},
		{Week: "2026-W45", Region: "SW1", AgeBand: "18-44", Sex: "male", Suppressed: "complementary"},
		{Week: "2026-W45", Region: "SW1", AgeBand: pubhealth.All, Sex: pubhealth.All, Patients: 30, FeverRate: v(0.2), Adherence: v(0.7)},
		{Week: "2026-W45", Region: pubhealth.All, AgeBand: pubhealth.All, Sex: pubhealth.All, Patients: 30, FeverRate: v(0.2), Adherence: v(0.7)},
	}}
	private := &pubhealth.Table{From: from, To: from.AddDate(0, 0, 7), K: 11, Epsilon: 1, Delta: 1e-5, Cells: exact.Cells[:1]}
	now := from.AddDate(0, 0, 8)
	er, pr := exact.MeasureReport(now), private.MeasureReport(now)
	groups := er["group"].([]any)
	if len(groups) != 5 {
		t.Fatalf("%d groups, want one per metric", len(groups))
	}
	strata := groups[1].(map[string]any)["stratifier"].([]any)[0].(map[string]any)["stratum"].([]any)
	if _, has := strata[1].(map[string]any)["population"]; has {
		t.Fatalf("a suppressed stratum has a population: %v", strata[1])
	}
	if score := strata[0].(map[string]any)["measureScore"].(map[string]any)["value"]; score != 0.25 {
		t.Fatalf("fever rate %v", score)
	}
	validate(t, []any{er, pr})
}
