// Package gatt decodes Bluetooth GATT health characteristics as gateways
// relay them (characteristic UUID and the value bytes): Heart Rate
// Measurement 0x2A37, Blood Pressure Measurement 0x2A35, Temperature
// Measurement 0x2A1C, PLX Continuous Measurement 0x2A5F and Glucose
// Measurement 0x2A18, with IEEE 11073-20601 SFLOAT and FLOAT values.
// Special values (NaN, NRes, ±INF, reserved) decode as absent, never as
// zero.
package gatt

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Value is one decoded measurement: a LOINC code and its value in the
// canonical UCUM unit.
type Value struct {
	Code   string
	Value  float64
	Unit   string
	Absent bool // the device reported NaN, NRes or another special value
	Field  string
}

// Measurement is what one characteristic value holds.
type Measurement struct {
	Values []Value
	Time   time.Time // from the characteristic's time stamp; zero when absent or unknown
}

// DecodeSFLOAT decodes a 16-bit IEEE 11073 SFLOAT (4-bit exponent,
// 12-bit mantissa); special reports NaN, NRes, ±INF and the reserved value.
func DecodeSFLOAT(u uint16) (v float64, special bool) {
	switch u {
	case 0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801:
		return math.NaN(), true
	}
	m := int32(u & 0x0FFF)
	if m >= 0x0800 {
		m -= 0x1000
	}
	e := int32(u >> 12)
	if e >= 0x8 {
		e -= 0x10
	}
	return float64(m) * math.Pow10(int(e)), false
}

// DecodeFLOAT decodes a 32-bit IEEE 11073 FLOAT (8-bit exponent, 24-bit
// mantissa).
func DecodeFLOAT(u uint32) (v float64, special bool) {
	switch u & 0x00FFFFFF {
	case 0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002, 0x00800001:
		return math.NaN(), true
	}
	m := int32(u & 0x00FFFFFF)
	if m >= 0x00800000 {
		m -= 0x01000000
	}
	e := int32(int8(u >> 24))
	return float64(m) * math.Pow10(int(e)), false
}

// Short UUIDs of the supported characteristics.
const (
	HeartRate      = "2A37"
	BloodPressure  = "2A35"
	Temperature    = "2A1C"
	PLXContinuous  = "2A5F"
	GlucoseMeasure = "2A18"
)

// NormalizeUUID turns "0x2a37", "2A37" or the 128-bit base UUID form into
// "2A37".
func NormalizeUUID(uuid string) string {
	u := strings.ToUpper(strings.TrimPrefix(strings.TrimPrefix(uuid, "0x"), "0X"))
	if len(u) == 36 && strings.HasSuffix(u, "-0000-1000-8000-00805F9B34FB") && strings.HasPrefix(u, "0000") {
		u = u[4:8]
	}
	return u
}

type reader struct {
	b   []byte
	pos int
	err error
}

func (r *reader) need(n int, what string) bool {
	if r.err != nil {
		return false
	}
	if r.pos+n > len(r.b) {
		r.err = vigil.FieldErrorf(fmt.Sprintf("data[%d:%d]", r.pos, r.pos+n), "truncated", "the value ends before its %s", what)
		return false
	}
	return true
}

func (r *reader) u8(what string) uint8 {
	if !r.need(1, what) {
		return 0
	}
	r.pos++
	return r.b[r.pos-1]
}

func (r *reader) u16(what string) uint16 {
	if !r.need(2, what) {
		return 0
	}
	r.pos += 2
	return binary.LittleEndian.Uint16(r.b[r.pos-2:])
}

func (r *reader) u32(what string) uint32 {
	if !r.need(4, what) {
		return 0
	}
	r.pos += 4
	return binary.LittleEndian.Uint32(r.b[r.pos-4:])
}

func (r *reader) sfloat(what string) (float64, bool) {
	return DecodeSFLOAT(r.u16(what))
}

// dateTime reads the 7-byte GATT Date Time; zero when any part is "not
// known" (0) or out of range.
func (r *reader) dateTime(what string) time.Time {
	y := r.u16(what)
	mo, d, h, mi, s := r.u8(what), r.u8(what), r.u8(what), r.u8(what), r.u8(what)
	if r.err != nil || y == 0 || mo == 0 || d == 0 || mo > 12 || d > 31 || h > 23 || mi > 59 || s > 59 {
		return time.Time{}
	}
	return time.Date(int(y), time.Month(mo), int(d), int(h), int(mi), int(s), 0, time.UTC)
}

func value(code, unit string, v float64, special bool, field string) Value {
	if special || math.IsNaN(v) || math.IsInf(v, 0) {
		return Value{Code: code, Unit: unit, Absent: true, Field: field}
	}
	return Value{Code: code, Value: v, Unit: unit, Field: field}
}

// Decode decodes one characteristic value. Times in the value carry no
// zone; they are returned as UTC wall time for the caller to place.
func Decode(uuid string, data []byte) (Measurement, error) {
	r := &reader{b: data}
	var m Measurement
	switch NormalizeUUID(uuid) {
	case HeartRate:
		flags := r.u8("flags")
		var hr float64
		if flags&0x01 != 0 {
			hr = float64(r.u16("heart rate (uint16)"))
		} else {
			hr = float64(r.u8("heart rate"))
		}
		m.Values = append(m.Values, value(vigil.LOINCHeartRate, "/min", hr, false, "heart_rate"))
		// Energy expended and RR intervals follow; not stored, but checked
		// for length so truncated values are refused.
		if flags&0x08 != 0 {
			r.u16("energy expended")
		}
		if flags&0x10 != 0 && (len(data)-r.pos)%2 != 0 {
			r.err = vigil.FieldErrorf(fmt.Sprintf("data[%d:]", r.pos), "truncated", "RR intervals are 2 bytes each")
		}
	case BloodPressure:
		flags := r.u8("flags")
		sys, s1 := r.sfloat("systolic")
		dia, s2 := r.sfloat("diastolic")
		mean, s3 := r.sfloat("mean arterial pressure")
		conv := func(v float64) float64 { return v }
		if flags&0x01 != 0 { // kPa
			conv = func(v float64) float64 { return math.Round(v*7.500615758*100) / 100 }
		}
		m.Values = append(m.Values,
			value(vigil.LOINCSystolic, "mm[Hg]", conv(sys), s1, "systolic"),
			value(vigil.LOINCDiastolic, "mm[Hg]", conv(dia), s2, "diastolic"),
			value(vigil.LOINCMeanBP, "mm[Hg]", conv(mean), s3, "mean_arterial"))
		if flags&0x02 != 0 {
			m.Time = r.dateTime("time stamp")
		}
		if flags&0x04 != 0 {
			pr, sp := r.sfloat("pulse rate")
			m.Values = append(m.Values, value(vigil.LOINCHeartRate, "/min", pr, sp, "pulse_rate"))
		}
		if flags&0x08 != 0 {
			r.u8("user id")
		}
		if flags&0x10 != 0 {
			r.u16("measurement status")
		}
	case Temperature:
		flags := r.u8("flags")
		t, sp := DecodeFLOAT(r.u32("temperature"))
		if flags&0x01 != 0 && !sp { // Fahrenheit
			t = math.Round((t-32)*5/9*100) / 100
		}
		m.Values = append(m.Values, value(vigil.LOINCBodyTemp, "Cel", t, sp, "temperature"))
		if flags&0x02 != 0 {
			m.Time = r.dateTime("time stamp")
		}
		if flags&0x04 != 0 {
			r.u8("temperature type")
		}
	case PLXContinuous:
		flags := r.u8("flags")
		spo2, s1 := r.sfloat("SpO2")
		pr, s2 := r.sfloat("pulse rate")
		m.Values = append(m.Values, value(vigil.LOINCSpO2, "%", spo2, s1, "spo2"), value(vigil.LOINCHeartRate, "/min", pr, s2, "pulse_rate"))
		// Optional fields: SpO2PR-Fast (4), SpO2PR-Slow (4), measurement
		// status (2), device and sensor status (3), pulse amplitude (2).
		for _, f := range []struct {
			bit  uint8
			n    int
			what string
		}{{0x01, 4, "SpO2PR-Fast"}, {0x02, 4, "SpO2PR-Slow"}, {0x04, 2, "measurement status"}, {0x08, 3, "device and sensor status"}, {0x10, 2, "pulse amplitude index"}} {
			if flags&f.bit != 0 && r.need(f.n, f.what) {
				r.pos += f.n
			}
		}
	case GlucoseMeasure:
		flags := r.u8("flags")
		r.u16("sequence number")
		base := r.dateTime("base time")
		if flags&0x01 != 0 {
			off := int16(r.u16("time offset"))
			if !base.IsZero() {
				base = base.Add(time.Duration(off) * time.Minute)
			}
		}
		m.Time = base
		if flags&0x02 != 0 {
			c, sp := r.sfloat("glucose concentration")
			r.u8("type and sample location")
			if flags&0x04 != 0 { // mol/L → mmol/L
				m.Values = append(m.Values, value(vigil.LOINCGlucoseMol, "mmol/L", round(c*1000), sp, "concentration"))
			} else { // kg/L → mg/dL
				m.Values = append(m.Values, value(vigil.LOINCGlucoseMass, "mg/dL", round(c*100000), sp, "concentration"))
			}
		}
		if flags&0x08 != 0 {
			r.u16("sensor status annunciation")
		}
	default:
		return m, vigil.FieldErrorf("characteristic", "unknown-characteristic", "characteristic %q is not one Vigil decodes (2A37, 2A35, 2A1C, 2A5F, 2A18)", uuid)
	}
	if r.err != nil {
		return Measurement{}, r.err
	}
	return m, nil
}

func round(v float64) float64 { return math.Round(v*1e6) / 1e6 }
