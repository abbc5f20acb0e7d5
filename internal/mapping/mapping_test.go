package mapping

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"

	"github.com/vigil-iomt/vigil"
)

func TestNormalize(t *testing.T) {
	tab := DefaultTable()
	for _, c := range []struct {
		name                string
		system, code, unit  string
		value               float64
		wantCode, wantUnit  string
		wantValue           float64
		wantOrig, wantField string
		wantReason          string
	}{
		{name: "loinc hr", code: "8867-4", unit: "/min", value: 72, wantCode: "8867-4", wantUnit: "/min", wantValue: 72},
		{name: "medtech count/min", code: "8867-4", unit: "count/min", value: 72, wantCode: "8867-4", wantUnit: "/min", wantValue: 72},
		{name: "explicit loinc system", system: vigil.SystemLOINC, code: "9279-1", unit: "/min", value: 16, wantCode: "9279-1", wantUnit: "/min", wantValue: 16},
		{name: "fahrenheit", code: "8310-5", unit: "[degF]", value: 98.6, wantCode: "8310-5", wantUnit: "Cel", wantValue: 37},
		{name: "kPa", code: "8480-6", unit: "kPa", value: 16, wantCode: "8480-6", wantUnit: "mm[Hg]", wantValue: 120.01},
		{name: "oxygensat synonym", code: "2708-6", unit: "%", value: 97, wantCode: vigil.LOINCSpO2, wantUnit: "%", wantValue: 97, wantOrig: "2708-6"},
		{name: "mdc numeric", system: vigil.SystemMDC, code: "150456", unit: "262688", value: 95, wantCode: vigil.LOINCSpO2, wantUnit: "%", wantValue: 95, wantOrig: "150456"},
		{name: "mdc refid", system: vigil.SystemMDC, code: "MDC_ECG_HEART_RATE", unit: "MDC_DIM_BEAT_PER_MIN", value: 80, wantCode: "8867-4", wantUnit: "/min", wantValue: 80, wantOrig: "MDC_ECG_HEART_RATE"},
		{name: "mdc ucum unit", system: vigil.SystemMDC, code: "150021", unit: "mm[Hg]", value: 120, wantCode: "8480-6", wantUnit: "mm[Hg]", wantValue: 120, wantOrig: "150021"},
		{name: "mdc glucose mmol", system: vigil.SystemMDC, code: "160184", unit: "mmol/L", value: 5.5, wantCode: "15074-8", wantUnit: "mmol/L", wantValue: 5.5, wantOrig: "160184"},
		{name: "mdc glucose mg", system: vigil.SystemMDC, code: "160184", unit: "264274", value: 99, wantCode: "2339-0", wantUnit: "mg/dL", wantValue: 99, wantOrig: "160184"},
		{name: "spo2 120", code: "59408-5", unit: "%", value: 120, wantField: "v.value", wantReason: "implausible"},
		{name: "hr 900", code: "8867-4", unit: "/min", value: 900, wantField: "v.value", wantReason: "implausible"},
		{name: "unit mismatch", code: "8867-4", unit: "mm[Hg]", value: 72, wantField: "v.unit", wantReason: "unit-mismatch"},
		{name: "no unit", code: "8867-4", value: 72, wantField: "v.unit", wantReason: "unit-required"},
		{name: "unknown loinc", code: "1234-5", unit: "/min", value: 1, wantField: "v.code", wantReason: "unknown-code"},
		{name: "unknown mdc", system: vigil.SystemMDC, code: "999", unit: "/min", value: 1, wantField: "v.code", wantReason: "unknown-code"},
		{name: "mdc panel code has no value", system: vigil.SystemMDC, code: "150020", unit: "mm[Hg]", value: 1, wantField: "v.code", wantReason: "unknown-code"},
		{name: "unknown system", system: "http://snomed.info/sct", code: "1", unit: "/min", value: 1, wantField: "v.system", wantReason: "unknown-system"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := tab.Normalize("v", c.system, c.code, c.value, c.unit)
			if c.wantReason != "" {
				var e *vigil.Error
				if err == nil || vigil.ErrorCode(err) != vigil.EINVALID || vigil.ErrorReason(err) != c.wantReason {
					t.Fatalf("got %+v %v, want reason %s", m, err, c.wantReason)
				}
				_ = e
				if f := err.(*vigil.Error).Field; f != c.wantField {
					t.Fatalf("field %q, want %q", f, c.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Code != c.wantCode || m.Unit != c.wantUnit || m.Value != c.wantValue || m.OrigCode != c.wantOrig {
				t.Fatalf("got %+v", m)
			}
		})
	}
}

// Every row of the shared code table that names one LOINC code Vigil
// stores maps, and keeps its unit.
func TestEveryVitalsRowMaps(t *testing.T) {
	tab := DefaultTable()
	rows, err := csv.NewReader(bytes.NewReader(vitalsCSV)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rows[1:] {
		if r[0] == "" || strings.Contains(r[4], " ") || r[4] == vigil.LOINCBPPanel {
			continue
		}
		c, ok := tab.Lookup(r[4])
		if !ok {
			t.Errorf("LOINC %s of MDC %s (%s) not in the table", r[4], r[0], r[2])
			continue
		}
		mid := (c.Min + c.Max) / 2
		for _, code := range []string{r[0], r[1]} {
			m, err := tab.Normalize("v", vigil.SystemMDC, code, mid, r[3])
			if err != nil || m.Code != r[4] || m.Unit != r[3] {
				t.Errorf("MDC %s: %+v %v", code, m, err)
			}
		}
		n++
	}
	if n < 15 {
		t.Fatalf("only %d rows checked", n)
	}
}

func TestConfigurableLimits(t *testing.T) {
	base := DefaultTable()
	neo, err := base.WithLimits(map[string]Limit{vigil.LOINCHeartRate: {Min: 80, Max: 250}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := neo.Normalize("v", "", vigil.LOINCHeartRate, 60, "/min"); vigil.ErrorReason(err) != "implausible" {
		t.Fatalf("HR 60 with a neonatal range: %v", err)
	}
	if _, err := base.Normalize("v", "", vigil.LOINCHeartRate, 60, "/min"); err != nil {
		t.Fatalf("the default table changed: %v", err)
	}
	if neo.Limits()[vigil.LOINCHeartRate] != (Limit{80, 250}) {
		t.Fatal("Limits does not report the override")
	}
	for _, bad := range []map[string]Limit{{"0000-0": {1, 2}}, {vigil.LOINCHeartRate: {5, 5}}} {
		if _, err := base.WithLimits(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// Codes several MDC codes map to carry the MDC code as their method, so
// that an ECG's heart rate and an oximeter's pulse rate stay apart; codes
// one MDC code maps to need none.
func TestMethods(t *testing.T) {
	tb := DefaultTable()
	for _, c := range []struct{ code, loinc, method string }{
		{"147842", vigil.LOINCHeartRate, "147842"},
		{"MDC_PULS_OXIM_PULS_RATE", vigil.LOINCHeartRate, "149530"},
		{"149522", vigil.LOINCHeartRate, "149522"},
		{"150364", vigil.LOINCBodyTemp, "150364"},
		{"150456", vigil.LOINCSpO2, ""},
		{"150021", vigil.LOINCSystolic, ""},
	} {
		unit := map[string]string{vigil.LOINCHeartRate: "/min", vigil.LOINCBodyTemp: "Cel", vigil.LOINCSpO2: "%", vigil.LOINCSystolic: "mm[Hg]"}[c.loinc]
		m, err := tb.Normalize("v", vigil.SystemMDC, c.code, 40, unit)
		if err != nil || m.Code != c.loinc || m.Method != c.method {
			t.Errorf("%s: %+v %v, want %s method %q", c.code, m, err, c.loinc, c.method)
		}
	}
	if m, _ := tb.Normalize("v", "", vigil.LOINCHeartRate, 60, "/min"); m.Method != "" {
		t.Errorf("LOINC heart rate has method %q", m.Method)
	}
	if r, ok := tb.MDCRefID("149530"); !ok || r != "MDC_PULS_OXIM_PULS_RATE" {
		t.Errorf("MDCRefID: %q %v", r, ok)
	}
}

func TestNormalizeText(t *testing.T) {
	tb := DefaultTable()
	m, err := tb.NormalizeText("v", vigil.SystemLOINC, "72106-8", "walking", nil)
	if err != nil || m.Code != "72106-8" || m.Text != "walking" || !m.Textual() {
		t.Fatalf("text: %+v %v", m, err)
	}
	c := &vigil.Concept{Text: "Awake", Coding: []vigil.Coding{{System: "http://snomed.info/sct", Code: "248220008"}}}
	if m, err = tb.NormalizeText("v", "", "93832-4", "", c); err != nil || m.Concept != c {
		t.Fatalf("concept: %+v %v", m, err)
	}
	for name, tc := range map[string]struct {
		system, code, text string
		c                  *vigil.Concept
		field, reason      string
	}{
		"not LOINC":     {"http://snomed.info/sct", "1234", "x", nil, "v.system", "unknown-system"},
		"not a code":    {"", "walking", "x", nil, "v.code", "unknown-code"},
		"numeric code":  {"", vigil.LOINCHeartRate, "fast", nil, "v.value", "not-a-number"},
		"both":          {"", "72106-8", "x", c, "v.value", "invalid"},
		"empty concept": {"", "72106-8", "", &vigil.Concept{}, "v.value", "required"},
		"too long":      {"", "72106-8", strings.Repeat("x", 1025), nil, "v.value", "too-long"},
		"NUL":           {"", "72106-8", "a\x00b", nil, "v.value", "invalid"},
		"invalid UTF-8": {"", "72106-8", "a\xffb", nil, "v.value", "invalid"},
	} {
		_, err := tb.NormalizeText("v", tc.system, tc.code, tc.text, tc.c)
		if e, _ := err.(*vigil.Error); e == nil || e.Field != tc.field || e.Reason != tc.reason {
			t.Errorf("%s: %v, want %s at %s", name, err, tc.reason, tc.field)
		}
	}
}
