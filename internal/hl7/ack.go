package hl7

import (
	"strings"
	"time"
)

// Acknowledgment codes (MSA-1).
const (
	AA = "AA" // accepted
	AE = "AE" // error: some or all of the content was refused
	AR = "AR" // rejected: the message could not be processed at all
)

// ErrDetail is one ERR segment.
type ErrDetail struct {
	Location string // ERR-2, e.g. "OBX^3^3" (segment^sequence^field)
	Code     string // ERR-3 identifier from HL7 table 0357, e.g. "103"
	Text     string // ERR-3 text, e.g. "Table value not found"
	Severity string // ERR-4: E (error), W (warning), I (information)
	Message  string // ERR-8 user message: what was wrong, for people
}

// HL7 table 0357 codes Vigil uses.
const (
	ErrSegmentSequence   = "100" // segment sequence error
	ErrRequiredMissing   = "101" // required field missing
	ErrDataType          = "102" // data type error
	ErrTableValue        = "103" // table value not found (unknown code)
	ErrUnsupportedType   = "200" // unsupported message type
	ErrUnknownKey        = "204" // unknown key identifier (unknown patient)
	ErrDuplicateKey      = "205" // duplicate key identifier
	ErrApplicationRecord = "206" // application record locked
	ErrInternal          = "207" // application internal error
)

// Ack builds an ACK for req (which may be nil when it could not be
// parsed: then MSH fields are left empty and default delimiters used).
func Ack(req *Message, code, text, controlID string, now time.Time, errs []ErrDetail) []byte {
	d := DefaultDelimiters
	var sendApp, sendFac, recvApp, recvFac, reqID, version, trigger string
	version = "2.6"
	if req != nil {
		d = req.Delims
		msh := req.Segment("MSH")
		sendApp, sendFac = raw(msh, 5, d), raw(msh, 6, d) // we answer as the receiver
		recvApp, recvFac = raw(msh, 3, d), raw(msh, 4, d)
		reqID = msh.Value(10)
		if v := msh.Value(12); v != "" {
			version = v
		}
		trigger = msh.Component(9, 2)
	}
	f := string(d.Field)
	enc := string([]byte{d.Component, d.Repetition, d.Escape, d.Subcomponent})
	typ := "ACK"
	if trigger != "" {
		typ += string(d.Component) + d.EscapeString(trigger) + string(d.Component) + "ACK"
	}
	segs := []string{
		strings.Join([]string{"MSH", enc, sendApp, sendFac, recvApp, recvFac, d.EscapeString(now.Format("20060102150405.0000-0700")), "", typ, d.EscapeString(controlID), "P", d.EscapeString(version)}, f),
		strings.Join([]string{"MSA", code, d.EscapeString(reqID), d.EscapeString(text)}, f),
	}
	for _, e := range errs {
		loc := ""
		if e.Location != "" {
			loc = strings.ReplaceAll(e.Location, "^", string(d.Component))
		}
		cwe := d.EscapeString(e.Code) + string(d.Component) + d.EscapeString(e.Text) + string(d.Component) + "HL70357"
		sev := e.Severity
		if sev == "" {
			sev = "E"
		}
		segs = append(segs, strings.Join([]string{"ERR", "", loc, cwe, sev, "", "", "", d.EscapeString(e.Message)}, f))
	}
	return []byte(strings.Join(segs, "\r") + "\r")
}

// raw re-encodes field f of s (first repetition) with its components.
func raw(s *Segment, f int, d Delimiters) string {
	if s == nil || f >= len(s.Fields) || len(s.Fields[f]) == 0 {
		return ""
	}
	var comps []string
	for _, c := range s.Fields[f][0] {
		var subs []string
		for _, sc := range c {
			subs = append(subs, d.EscapeString(sc))
		}
		comps = append(comps, strings.Join(subs, string(d.Subcomponent)))
	}
	return strings.Join(comps, string(d.Component))
}
