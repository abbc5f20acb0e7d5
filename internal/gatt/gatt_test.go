package gatt

import (
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

type vector struct {
	Characteristic string         `json:"characteristic"`
	Name           string         `json:"name"`
	Hex            string         `json:"hex"`
	Expect         map[string]any `json:"expect"`
}

func vectors(t testing.TB) []vector {
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

func get(m Measurement, code string) (Value, bool) {
	for _, v := range m.Values {
		if v.Code == code {
			return v, true
		}
	}
	return Value{}, false
}

func TestSharedVectors(t *testing.T) {
	for _, v := range vectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			data, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Decode(v.Characteristic, data)
			if err != nil {
				t.Fatal(err)
			}
			want := func(code string, val float64) {
				t.Helper()
				got, ok := get(m, code)
				if !ok || got.Absent || math.Abs(got.Value-val) > 1e-9 {
					t.Errorf("%s = %+v, want %v", code, got, val)
				}
			}
			e := v.Expect
			switch NormalizeUUID(v.Characteristic) {
			case HeartRate:
				want(vigil.LOINCHeartRate, e["heart_rate_bpm"].(float64))
			case BloodPressure:
				want(vigil.LOINCSystolic, e["systolic"].(float64))
				want(vigil.LOINCDiastolic, e["diastolic"].(float64))
				want(vigil.LOINCMeanBP, e["mean_arterial"].(float64))
				want(vigil.LOINCHeartRate, e["pulse_rate_bpm"].(float64))
				if !m.Time.IsZero() {
					t.Errorf("year 0 is 'not known': time %v, want none", m.Time)
				}
			case Temperature:
				want(vigil.LOINCBodyTemp, e["value"].(float64))
				if !m.Time.Equal(time.Date(2012, 12, 5, 11, 50, 27, 0, time.UTC)) {
					t.Errorf("time %v", m.Time)
				}
			case PLXContinuous:
				want(vigil.LOINCSpO2, e["spo2_percent"].(float64))
				want(vigil.LOINCHeartRate, e["pulse_rate_bpm"].(float64))
			case GlucoseMeasure:
				want(vigil.LOINCGlucoseMass, e["concentration"].(float64)*100000) // kg/L → mg/dL
				if !m.Time.Equal(time.Date(2019, 2, 27, 11, 5, 30, 0, time.UTC)) {
					t.Errorf("base time + offset: %v", m.Time)
				}
			}
		})
	}
}

func TestSpecialValuesAreAbsentNotZero(t *testing.T) {
	for _, u := range []uint16{0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801} {
		if _, sp := DecodeSFLOAT(u); !sp {
			t.Errorf("SFLOAT %#04x not special", u)
		}
	}
	for _, u := range []uint32{0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002} {
		if _, sp := DecodeFLOAT(u); !sp {
			t.Errorf("FLOAT %#08x not special", u)
		}
	}
	if v, _ := DecodeSFLOAT(0xF0FF); math.Abs(v-25.5) > 1e-9 { // mantissa 255, exponent -1
		t.Errorf("SFLOAT: %v", v)
	}
	if v, _ := DecodeSFLOAT(0x0FFF); v != -1 { // mantissa -1
		t.Errorf("negative SFLOAT: %v", v)
	}
	// A PLX value whose SpO2 is NaN: SpO2 absent, pulse present.
	m, err := Decode("2A5F", []byte{0x00, 0xFF, 0x07, 0x48, 0x00})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := get(m, vigil.LOINCSpO2); !v.Absent || v.Value != 0 {
		t.Fatalf("NaN SpO2: %+v", v)
	}
	if v, _ := get(m, vigil.LOINCHeartRate); v.Absent || v.Value != 72 {
		t.Fatalf("pulse: %+v", v)
	}
}

func TestErrors(t *testing.T) {
	if _, err := Decode("2A99", []byte{0}); vigil.ErrorReason(err) != "unknown-characteristic" {
		t.Fatalf("unknown: %v", err)
	}
	for _, v := range vectors(t) {
		data, _ := hex.DecodeString(v.Hex)
		for cut := 0; cut < len(data); cut++ {
			if _, err := Decode(v.Characteristic, data[:cut]); vigil.ErrorReason(err) != "truncated" {
				// Some prefixes are complete values (optional fields are flagged).
				continue
			}
		}
		if _, err := Decode(v.Characteristic, data[:1]); vigil.ErrorReason(err) != "truncated" {
			t.Errorf("%s cut to its flags: %v", v.Name, err)
		}
	}
	for _, u := range []string{"0x2a37", "2A37", "00002a37-0000-1000-8000-00805f9b34fb"} {
		if NormalizeUUID(u) != "2A37" {
			t.Errorf("NormalizeUUID(%q) = %q", u, NormalizeUUID(u))
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, v := range vectors(f) {
		data, _ := hex.DecodeString(v.Hex)
		f.Add(NormalizeUUID(v.Characteristic), data)
	}
	f.Fuzz(func(t *testing.T, uuid string, data []byte) {
		m, err := Decode(uuid, data)
		if err != nil {
			return
		}
		for _, v := range m.Values {
			if !v.Absent && (math.IsNaN(v.Value) || math.IsInf(v.Value, 0)) {
				t.Fatalf("non-finite value not marked absent: %+v", v)
			}
			if v.Absent && v.Value != 0 {
				t.Fatalf("absent value carries a number: %+v", v)
			}
		}
	})
}
