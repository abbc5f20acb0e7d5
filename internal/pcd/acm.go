package pcd

import (
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/hl7"
)

// Alarm is one device alarm of an IHE PCD ACM ORU^R40 report.
type Alarm struct {
	PatientIdentifier string
	AlarmID           string // OBR-3 (filler order number), else OBR-2, else the control id
	EventCode         string // MDC event, e.g. 196670 (MDC_EVT_LO)
	EventName         string // e.g. MDC_EVT_LO
	SourceCode        string // what is measured, e.g. 150456 (MDC)
	SourceName        string
	Value             float64
	Unit              string
	HasValue          bool
	Priority          string // vigil.Priority*
	Active            bool
	Time              time.Time
}

// Alarms reads the alarms of an ORU^R40.
func Alarms(m *hl7.Message) ([]Alarm, error) {
	if t := m.MessageType(); t != "ORU^R40" {
		return nil, vigil.FieldErrorf("MSH[1].9", "unsupported-message", "message type %q is not ORU^R40 (IHE PCD ACM)", t)
	}
	pid := m.Segment("PID")
	patient := pid.Component(3, 1)
	if patient == "" {
		return nil, vigil.FieldErrorf("PID[1].3", "required", "PID-3 (patient identifier) is required")
	}
	msgTime, _ := ParseTime(m.Segment("MSH").Value(7))
	var out []Alarm
	var cur *Alarm
	flush := func() {
		if cur != nil {
			out = append(out, *cur)
		}
	}
	for _, s := range m.Segments {
		switch s.Name {
		case "OBR":
			flush()
			cur = &Alarm{PatientIdentifier: patient, Active: true, Priority: vigil.PriorityMedium, Time: msgTime}
			for _, f := range []int{3, 2} {
				if id := s.Component(f, 1); id != "" {
					cur.AlarmID = id
					break
				}
			}
			if cur.AlarmID == "" {
				cur.AlarmID = m.ControlID()
			}
			if t, err := ParseTime(s.Value(7)); err == nil {
				cur.Time = t
			}
		case "OBX":
			if cur == nil {
				return nil, vigil.FieldErrorf("OBX", "unparsable", "OBX before any OBR in an ORU^R40")
			}
			code, name := s.Component(3, 1), s.Component(3, 2)
			for r := 0; len(s.Fields) > 8 && r < len(s.Fields[8]); r++ {
				switch s.Get(8, r, 1, 1) {
				case "PH":
					cur.Priority = vigil.PriorityHigh
				case "PM":
					cur.Priority = vigil.PriorityMedium
				case "PL", "PN":
					cur.Priority = vigil.PriorityLow
				}
			}
			switch {
			case strings.HasPrefix(name, "MDC_EVT_"):
				cur.EventCode, cur.EventName = code, name
			case name == "MDC_ATTR_EVENT_PHASE":
				cur.Active = !strings.EqualFold(s.Value(5), "end")
			case name == "MDC_ATTR_ALARM_STATE":
				if strings.EqualFold(s.Value(5), "inactive") {
					cur.Active = false
				}
			case s.Value(2) == "NM":
				if v, err := strconv.ParseFloat(strings.TrimSpace(s.Value(5)), 64); err == nil {
					cur.Value, cur.HasValue = v, true
				}
				cur.SourceCode, cur.SourceName, cur.Unit = code, name, s.Component(6, 1)
			}
		}
	}
	flush()
	if len(out) == 0 {
		return nil, vigil.FieldErrorf("OBR", "empty", "the ORU^R40 holds no alarm (OBR)")
	}
	return out, nil
}
