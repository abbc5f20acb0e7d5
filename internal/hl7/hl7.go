// Package hl7 parses and builds HL7 v2 messages: segments, fields,
// repetitions, components and subcomponents with the separators a message
// declares in MSH-1 and MSH-2, and the standard escape sequences. It also
// frames messages for MLLP (0x0B … 0x1C 0x0D). It is small on purpose:
// Vigil reads ORU messages and writes ACKs; it is fuzzed (see *_test.go).
package hl7

import (
	"fmt"
	"strings"
)

// Delimiters are a message's separators.
type Delimiters struct {
	Field, Component, Repetition, Escape, Subcomponent byte
}

// DefaultDelimiters are |^~\&.
var DefaultDelimiters = Delimiters{'|', '^', '~', '\\', '&'}

// Message is a parsed HL7 v2 message.
type Message struct {
	Delims   Delimiters
	Segments []*Segment
}

// Segment is one segment. Fields[i] is field i (1-based as HL7 counts;
// Fields[0] is unused). For MSH, field 1 is the field separator and field
// 2 the encoding characters, as HL7 numbers them.
type Segment struct {
	Name   string
	Fields []Field
}

// Field is a field's repetitions.
type Field []Repetition

// Repetition is one repetition's components.
type Repetition []Component

// Component is one component's subcomponents, unescaped.
type Component []string

// ParseError says where a message could not be parsed.
type ParseError struct {
	Segment int    // 1-based segment number, 0 for the message as a whole
	Name    string // segment name if known
	Msg     string
}

func (e *ParseError) Error() string {
	if e.Segment == 0 {
		return "hl7: " + e.Msg
	}
	return fmt.Sprintf("hl7: segment %d (%s): %s", e.Segment, e.Name, e.Msg)
}

// Parse parses a message. Segments end with \r (\n and \r\n are
// tolerated); the first must be MSH.
func Parse(b []byte) (*Message, error) {
	s := strings.ReplaceAll(string(b), "\r\n", "\r")
	s = strings.ReplaceAll(s, "\n", "\r")
	s = strings.Trim(s, "\r")
	if !strings.HasPrefix(s, "MSH") || len(s) < 8 {
		return nil, &ParseError{Msg: "a message must start with an MSH segment declaring its separators"}
	}
	d := Delimiters{Field: s[3], Component: s[4], Repetition: s[5], Escape: s[6], Subcomponent: s[7]}
	seen := map[byte]bool{}
	for _, c := range []byte{d.Field, d.Component, d.Repetition, d.Escape, d.Subcomponent} {
		if seen[c] || c <= ' ' || c > '~' || isAlnum(c) {
			return nil, &ParseError{Segment: 1, Name: "MSH", Msg: "MSH-1/MSH-2 must declare five distinct printable ASCII separators (not letters or digits)"}
		}
		seen[c] = true
	}
	if len(s) > 8 && s[8] != d.Field {
		return nil, &ParseError{Segment: 1, Name: "MSH", Msg: "MSH-2 must be four encoding characters followed by the field separator"}
	}
	m := &Message{Delims: d}
	for i, line := range strings.Split(s, "\r") {
		if line == "" {
			continue
		}
		seg, err := m.parseSegment(line, i == 0)
		if err != nil {
			err.Segment = i + 1
			return nil, err
		}
		m.Segments = append(m.Segments, seg)
	}
	return m, nil
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

func (m *Message) parseSegment(line string, first bool) (*Segment, *ParseError) {
	d := m.Delims
	parts := strings.Split(line, string(d.Field))
	name := parts[0]
	if len(name) != 3 || !isAlnum(name[0]) || !isAlnum(name[1]) || !isAlnum(name[2]) {
		n := name
		if len(n) > 10 {
			n = n[:10]
		}
		return nil, &ParseError{Name: n, Msg: "a segment name is three letters or digits"}
	}
	if first != (name == "MSH") {
		if first {
			return nil, &ParseError{Name: name, Msg: "the first segment must be MSH"}
		}
	}
	seg := &Segment{Name: name}
	if name == "MSH" && first {
		// MSH-1 is the field separator, MSH-2 the encoding characters
		// (kept verbatim, not split).
		seg.Fields = []Field{nil, {{{string(d.Field)}}}}
		if len(parts) > 1 {
			seg.Fields = append(seg.Fields, Field{{{parts[1]}}})
		}
		for _, f := range parts[2:] {
			fld, err := m.parseField(f)
			if err != nil {
				return nil, &ParseError{Name: name, Msg: err.Error()}
			}
			seg.Fields = append(seg.Fields, fld)
		}
		return seg, nil
	}
	seg.Fields = []Field{nil}
	for _, f := range parts[1:] {
		fld, err := m.parseField(f)
		if err != nil {
			return nil, &ParseError{Name: name, Msg: err.Error()}
		}
		seg.Fields = append(seg.Fields, fld)
	}
	return seg, nil
}

func (m *Message) parseField(f string) (Field, error) {
	d := m.Delims
	if f == "" {
		return nil, nil
	}
	var fld Field
	for _, r := range strings.Split(f, string(d.Repetition)) {
		var rep Repetition
		for _, c := range strings.Split(r, string(d.Component)) {
			var comp Component
			for _, sc := range strings.Split(c, string(d.Subcomponent)) {
				u, err := d.UnescapeString(sc)
				if err != nil {
					return nil, err
				}
				comp = append(comp, u)
			}
			rep = append(rep, comp)
		}
		fld = append(fld, rep)
	}
	return fld, nil
}

// UnescapeString resolves \F\ \S\ \T\ \R\ \E\ and \Xhh..\ (hex bytes); other
// escapes (formatting such as \.br\, \H\, \N\) are dropped.
func (d Delimiters) UnescapeString(s string) (string, error) {
	e := d.Escape
	if strings.IndexByte(s, e) < 0 {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != e {
			b.WriteByte(s[i])
			continue
		}
		j := strings.IndexByte(s[i+1:], e)
		if j < 0 {
			return "", fmt.Errorf("unterminated escape sequence in %q", s)
		}
		seq := s[i+1 : i+1+j]
		i += j + 1
		switch {
		case seq == "F":
			b.WriteByte(d.Field)
		case seq == "S":
			b.WriteByte(d.Component)
		case seq == "T":
			b.WriteByte(d.Subcomponent)
		case seq == "R":
			b.WriteByte(d.Repetition)
		case seq == "E":
			b.WriteByte(d.Escape)
		case strings.HasPrefix(seq, "X"):
			h := seq[1:]
			if len(h)%2 != 0 {
				return "", fmt.Errorf("odd hex escape \\X%s\\", h)
			}
			for k := 0; k < len(h); k += 2 {
				var v byte
				if _, err := fmt.Sscanf(h[k:k+2], "%02x", &v); err != nil {
					return "", fmt.Errorf("bad hex escape \\X%s\\", h)
				}
				b.WriteByte(v)
			}
		}
	}
	return b.String(), nil
}

// EscapeString escapes the separators in s.
func (d Delimiters) EscapeString(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case d.Field:
			b.WriteString(string(d.Escape) + "F" + string(d.Escape))
		case d.Component:
			b.WriteString(string(d.Escape) + "S" + string(d.Escape))
		case d.Subcomponent:
			b.WriteString(string(d.Escape) + "T" + string(d.Escape))
		case d.Repetition:
			b.WriteString(string(d.Escape) + "R" + string(d.Escape))
		case d.Escape:
			b.WriteString(string(d.Escape) + "E" + string(d.Escape))
		case '\r':
			b.WriteString(string(d.Escape) + "X0D" + string(d.Escape))
		case '\n':
			b.WriteString(string(d.Escape) + "X0A" + string(d.Escape))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Segment returns the first segment with the name, or nil.
func (m *Message) Segment(name string) *Segment {
	for _, s := range m.Segments {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Get returns field f, repetition r (0-based), component c and
// subcomponent sc (1-based), or "" when absent.
func (s *Segment) Get(f, r, c, sc int) string {
	if s == nil || f <= 0 || f >= len(s.Fields) || r < 0 || r >= len(s.Fields[f]) {
		return ""
	}
	rep := s.Fields[f][r]
	if c <= 0 || c > len(rep) || sc <= 0 || sc > len(rep[c-1]) {
		return ""
	}
	return rep[c-1][sc-1]
}

// Value returns the first component of the first repetition of field f.
func (s *Segment) Value(f int) string { return s.Get(f, 0, 1, 1) }

// Component returns component c of the first repetition of field f.
func (s *Segment) Component(f, c int) string { return s.Get(f, 0, c, 1) }

// MessageType returns MSH-9 as "ORU^R01".
func (m *Message) MessageType() string {
	msh := m.Segment("MSH")
	t := msh.Component(9, 1)
	if e := msh.Component(9, 2); e != "" {
		t += "^" + e
	}
	return t
}

// ControlID returns MSH-10.
func (m *Message) ControlID() string { return m.Segment("MSH").Value(10) }
