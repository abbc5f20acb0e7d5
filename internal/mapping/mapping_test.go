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
