// Package pcd maps IHE PCD-01 ORU^R01 messages (HL7 v2 device
// observations) to Vigil readings: one reading per numeric OBX, identified
// by the message control id (MSH-10), the OBR and the OBX set ids, so a
// re-sent message is stored once. The patient comes from PID-3 (the
// registry's identifier), the code from OBX-3 (MDC or LOINC), the unit
// from OBX-6 (MDC or UCUM), the time from OBX-14, else OBR-7, else MSH-7.
// Systolic and diastolic values of one cuff measurement share a time and
// device, so the store pairs them into a blood-pressure panel.
package pcd

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/hl7"
	"github.com/vigil-iomt/vigil/internal/ingest"
)

// Format is the vigil.Message format of HL7 v2 payloads.
const Format = "hl7v2"

// Decode implements ingest.Decoder for ORU^R01.
func Decode(payload []byte, maxReadings int) ([]ingest.Raw, error) {
	m, err := hl7.Parse(payload)
	if err != nil {
		return nil, vigil.FieldErrorf("MSH", "unparsable", "%v", err)
	}
	return FromMessage(m, maxReadings)
}

// FromMessage maps a parsed ORU^R01.
func FromMessage(m *hl7.Message, maxReadings int) ([]ingest.Raw, error) {
	if t := m.MessageType(); t != "ORU^R01" {
		return nil, vigil.FieldErrorf("MSH[1].9", "unsupported-message", "message type %q is not ORU^R01 (IHE PCD-01)", t)
	}
	msh := m.Segment("MSH")
	control := m.ControlID()
	if control == "" {
		return nil, vigil.FieldErrorf("MSH[1].10", "required", "MSH-10 (message control id) is required: Vigil uses it to store a re-sent message once")
	}
	if len(control) > 40 { // keep reading ids within 64 characters
		h := sha256.Sum256([]byte(control))
		control = hex.EncodeToString(h[:16])
	}
	pid := m.Segment("PID")
	if pid == nil {
		return nil, vigil.FieldErrorf("PID", "required", "a PID segment naming the patient is required")
	}
	patient := pid.Component(3, 1)
	if patient == "" {
		return nil, vigil.FieldErrorf("PID[1].3", "required", "PID-3 (patient identifier) is required")
	}
	msgTime, _ := ParseTime(msh.Value(7))
	location := ""
	if pv1 := m.Segment("PV1"); pv1 != nil {
		location = components(pv1, 3)
	}
	var out []ingest.Raw
	obrTime, obrID := msgTime, "0"
	segNo := map[string]int{}
	for _, s := range m.Segments {
		segNo[s.Name]++
		switch s.Name {
		case "OBR":
			obrID = s.Value(1)
			if obrID == "" {
				obrID = strconv.Itoa(segNo["OBR"])
			}
			obrTime = msgTime
			if t, err := ParseTime(s.Value(7)); err == nil {
				obrTime = t
			}
		case "OBX":
			loc := fmt.Sprintf("OBX[%d]", segNo["OBX"])
			typ := s.Value(2)
			if typ != "NM" {
				continue // device description, panel headers, text: not readings
			}
			setID := s.Value(1)
			if setID == "" {
				setID = strconv.Itoa(segNo["OBX"])
			}
			r := ingest.Raw{ID: control + "/" + obrID + "/" + setID, Field: loc + ".", PatientIdentifier: patient, Time: obrTime}
			if t := s.Value(14); t != "" {
				ts, err := ParseTime(t)
				if err != nil {
					r.Err = vigil.FieldErrorf(loc+".14", "invalid", "OBX-14 %q is not an HL7 date/time", t)
					out = append(out, r)
					continue
				}
				r.Time = ts
			}
			switch st := s.Value(11); st {
			case "F", "R", "C", "P", "":
			case "X", "N":
				continue // "cannot be obtained": no value to store
			default:
				r.Err = vigil.FieldErrorf(loc+".11", "result-status", "OBX-11 status %q (wrong or deleted result) is not stored", st)
				out = append(out, r)
				continue
			}
			code, csys := s.Component(3, 1), s.Component(3, 3)
			system := vigil.SystemMDC
			switch strings.ToUpper(csys) {
			case "MDC", "":
			case "LN", "LOINC":
				system = vigil.SystemLOINC
			default:
				r.Err = vigil.FieldErrorf(loc+".3", "unknown-system", "OBX-3 coding system %q: use MDC or LN", csys)
				out = append(out, r)
				continue
			}
			unit := s.Component(6, 1)
			v, err := strconv.ParseFloat(strings.TrimSpace(s.Value(5)), 64)
			if err != nil {
				r.Err = vigil.FieldErrorf(loc+".5", "invalid", "OBX-5 %q is not a number", s.Value(5))
				out = append(out, r)
				continue
			}
			r.Values = []ingest.RawValue{{System: system, Code: code, Unit: unit, Value: v, Field: loc}}
			if o := (vigil.Origin{Location: location, Equipment: components(s, 18), Containment: s.Value(4)}); o != (vigil.Origin{}) {
				r.Origin = &o
			}
			out = append(out, r)
			if len(out) > maxReadings {
				return nil, vigil.FieldErrorf("", "too-many", "more than %d observations in one message", maxReadings)
			}
		}
	}
	if len(out) == 0 {
		return nil, vigil.FieldErrorf("OBX", "empty", "the message holds no numeric OBX observations")
	}
	return out, nil
}

// components returns the first repetition of field f with its first six
// components joined by "^", trailing empty ones dropped ("3 WEST
// ICU^3001^1").
func components(s *hl7.Segment, f int) string {
	parts := make([]string, 6)
	for c := range parts {
		parts[c] = s.Component(f, c+1)
	}
	return strings.TrimRight(strings.Join(parts, "^"), "^")
}

// ParseTime parses an HL7 DTM: YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ].
// Without an offset the time is taken as UTC.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, fmt.Errorf("empty time")
	}
	loc := time.UTC
	if i := strings.IndexAny(s, "+-"); i > 0 {
		z := s[i:]
		s = s[:i]
		if len(z) != 5 {
			return time.Time{}, fmt.Errorf("bad offset %q", z)
		}
		hh, err1 := strconv.Atoi(z[1:3])
		mm, err2 := strconv.Atoi(z[3:5])
		if err1 != nil || err2 != nil || hh > 14 || mm > 59 {
			return time.Time{}, fmt.Errorf("bad offset %q", z)
		}
		off := hh*3600 + mm*60
		if z[0] == '-' {
			off = -off
		}
		loc = time.FixedZone(z, off)
	}
	frac := ""
	if i := strings.IndexByte(s, '.'); i >= 0 {
		frac, s = s[i+1:], s[:i]
	}
	layouts := map[int]string{4: "2006", 6: "200601", 8: "20060102", 10: "2006010215", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(s)]
	if !ok {
		return time.Time{}, fmt.Errorf("bad HL7 time %q", s)
	}
	t, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		return time.Time{}, err
	}
	if frac != "" {
		if len(frac) > 4 {
			return time.Time{}, fmt.Errorf("bad fraction %q", frac)
		}
		n, err := strconv.Atoi(frac)
		if err != nil {
			return time.Time{}, err
		}
		for k := len(frac); k < 9; k++ {
			n *= 10
		}
		t = t.Add(time.Duration(n))
	}
	return t, nil
}
