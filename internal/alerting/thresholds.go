package alerting

import (
	"fmt"
	"time"

	"github.com/vigil-iomt/vigil"
)

// LOINC code of systolic blood pressure; its threshold applies to the
// systolic measurement of a reading.
const codeSystolic = vigil.LOINCSystolic

// DefaultThresholds returns the first-cut rule set. Each boundary is where
// NEWS2 (Royal College of Physicians, 2017) starts to give a parameter a
// score of 3 (a "red" single-parameter score that calls for an urgent
// response), except high temperature, where NEWS2's top band (≥ 39.1 Cel)
// scores 2:
//
//	rule       code      condition            NEWS2 band     for   priority
//	spo2-low   59408-5   SpO2 < 92 %          ≤ 91 → 3       60 s  high
//	hr-high    8867-4    HR > 130 /min        ≥ 131 → 3      60 s  medium
//	hr-low     8867-4    HR < 41 /min         ≤ 40 → 3       30 s  high
//	rr-high    9279-1    RR > 24 /min         ≥ 25 → 3       60 s  medium
//	rr-low     9279-1    RR < 9 /min          ≤ 8 → 3        30 s  high
//	temp-high  8310-5    temp > 39.0 Cel      ≥ 39.1 → 2      0 s  medium
//	temp-low   8310-5    temp < 35.1 Cel      ≤ 35.0 → 3      0 s  medium
//	sbp-low    8480-6    systolic < 91 mm[Hg] ≤ 90 → 3        0 s  high
//
// NEWS2 bands are inclusive integer (temperature: one decimal) ranges;
// the strict comparisons above reproduce them for values at the
// resolution NEWS2 scores. SpO2 uses NEWS2 scale 1 (scale 2 needs a
// per-patient prescription, a later issue). Continuous signals (SpO2, HR,
// RR) must hold for a while before they alert, so that a motion artefact
// or a probe coming off for a few seconds does not cause alarm noise;
// spot measurements (temperature, cuff blood pressure) alert on the
// first violating value. Priorities follow IEC 60601-1-8: high where the
// patient may need an immediate response (hypoxaemia, bradycardia,
// bradypnoea, hypotension), medium otherwise. The returned slice is new
// on every call; callers may modify it.
func DefaultThresholds() []vigil.Threshold {
	below := func(v float64) *float64 { return &v }
	above := below
	return []vigil.Threshold{
		{ID: "spo2-low", Code: vigil.LOINCSpO2, Below: below(92), For: 60 * time.Second, Priority: vigil.PriorityHigh, Title: "SpO2 91 % or lower"},
		{ID: "hr-high", Code: vigil.LOINCHeartRate, Above: above(130), For: 60 * time.Second, Priority: vigil.PriorityMedium, Title: "Heart rate above 130 /min"},
		{ID: "hr-low", Code: vigil.LOINCHeartRate, Below: below(41), For: 30 * time.Second, Priority: vigil.PriorityHigh, Title: "Heart rate 40 /min or lower"},
		{ID: "rr-high", Code: vigil.LOINCRespRate, Above: above(24), For: 60 * time.Second, Priority: vigil.PriorityMedium, Title: "Respiration rate above 24 /min"},
		{ID: "rr-low", Code: vigil.LOINCRespRate, Below: below(9), For: 30 * time.Second, Priority: vigil.PriorityHigh, Title: "Respiration rate 8 /min or lower"},
		{ID: "temp-high", Code: vigil.LOINCBodyTemp, Above: above(39.0), For: 0, Priority: vigil.PriorityMedium, Title: "Temperature above 39.0 °C"},
		{ID: "temp-low", Code: vigil.LOINCBodyTemp, Below: below(35.1), For: 0, Priority: vigil.PriorityMedium, Title: "Temperature 35.0 °C or lower"},
		{ID: "sbp-low", Code: codeSystolic, Below: below(91), For: 0, Priority: vigil.PriorityHigh, Title: "Systolic BP 90 mm[Hg] or lower"},
	}
}

// validateThresholds returns an EINVALID error naming the first bad rule.
func validateThresholds(ts []vigil.Threshold) error {
	seen := make(map[string]bool, len(ts))
	for i, t := range ts {
		field := fmt.Sprintf("thresholds[%d]", i)
		switch {
		case t.ID == "":
			return vigil.FieldErrorf(field+".id", "missing_id", "threshold has no id")
		case seen[t.ID]:
			return vigil.FieldErrorf(field+".id", "duplicate_id", "threshold id %q is used twice", t.ID)
		case t.Code == "":
			return vigil.FieldErrorf(field+".code", "missing_code", "threshold %q has no code", t.ID)
		case t.Below == nil && t.Above == nil:
			return vigil.FieldErrorf(field, "no_bound", "threshold %q has neither below nor above", t.ID)
		case t.For < 0:
			return vigil.FieldErrorf(field+".for", "negative_duration", "threshold %q has a negative duration", t.ID)
		}
		switch t.Priority {
		case vigil.PriorityLow, vigil.PriorityMedium, vigil.PriorityHigh:
		default:
			return vigil.FieldErrorf(field+".priority", "bad_priority", "threshold %q has priority %q; want low, medium or high", t.ID, t.Priority)
		}
		seen[t.ID] = true
	}
	return nil
}

// violates reports whether v is outside the threshold's normal range.
func violates(t *vigil.Threshold, v float64) bool {
	return (t.Below != nil && v < *t.Below) || (t.Above != nil && v > *t.Above)
}
