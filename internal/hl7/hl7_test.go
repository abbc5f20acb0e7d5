package hl7

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseSharedMessages(t *testing.T) {
	b, err := os.ReadFile("testdata/pcd01-bp.hl7")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.MessageType() != "ORU^R01" || m.ControlID() != "MSGID1234" {
		t.Fatalf("type %q control %q", m.MessageType(), m.ControlID())
	}
	msh := m.Segment("MSH")
	if msh.Value(1) != "|" || msh.Value(2) != `^~\&` || msh.Component(3, 2) != "ACDE48234567ABCD" || msh.Value(12) != "2.6" {
		t.Fatalf("MSH fields: %q %q %q %q", msh.Value(1), msh.Value(2), msh.Component(3, 2), msh.Value(12))
	}
	pid := m.Segment("PID")
	if pid.Component(3, 1) != "789567" || pid.Component(3, 4) != "Imaginary Hospital" || pid.Component(5, 2) != "John" {
		t.Fatalf("PID: %q %q %q", pid.Component(3, 1), pid.Component(3, 4), pid.Component(5, 2))
	}
	var obx []*Segment
	for _, s := range m.Segments {
		if s.Name == "OBX" {
			obx = append(obx, s)
		}
	}
	if len(obx) != 5 || obx[2].Component(3, 1) != "150021" || obx[2].Value(5) != "120" || obx[2].Component(6, 2) != "MDC_DIM_MMHG" || obx[2].Value(4) != "1.0.1.1" {
		t.Fatalf("OBX: %d", len(obx))
	}
	if _, err := os.ReadFile("testdata/pcd01-icu.hl7"); err != nil {
		t.Fatal(err)
	}
}

func TestSeparatorsEscapesRepetitions(t *testing.T) {
	// Unusual separators declared in MSH-1/MSH-2 are honoured.
	msg := "MSH#*!%@#APP#FAC###20260101##ORU*R01#1#P#2.6\r" +
		"PID###A1!B2##Doe*Jo %F% Ann@x\r" +
		"OBX#1#ST#code#1#a%S%b%T%c%R%d%E%e%X41%\r"
	m, err := Parse([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	if m.Delims != (Delimiters{'#', '*', '!', '%', '@'}) {
		t.Fatalf("delims %+v", m.Delims)
	}
	pid := m.Segment("PID")
	if pid.Get(3, 0, 1, 1) != "A1" || pid.Get(3, 1, 1, 1) != "B2" {
		t.Fatalf("repetitions: %v", pid.Fields[3])
	}
	if pid.Get(5, 0, 2, 1) != "Jo # Ann" || pid.Get(5, 0, 2, 2) != "x" {
		t.Fatalf("escape/subcomponent: %q %q", pid.Get(5, 0, 2, 1), pid.Get(5, 0, 2, 2))
	}
	if got := m.Segment("OBX").Value(5); got != "a*b@c!d%eA" {
		t.Fatalf("escapes: %q", got)
	}
	if m.MessageType() != "ORU^R01" {
		t.Fatalf("type %q", m.MessageType())
	}
	d := DefaultDelimiters
	for _, s := range []string{"plain", "a|b^c~d\\e&f", "\r"} {
		u, err := d.UnescapeString(d.EscapeString(s))
		if err != nil || u != s {
			t.Fatalf("escape round trip %q → %q (%v)", s, u, err)
		}
	}
	// Newlines as segment terminators are tolerated.
	if m, err := Parse([]byte(strings.ReplaceAll(msg, "\r", "\r\n"))); err != nil || len(m.Segments) != 3 {
		t.Fatalf("CRLF: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, bad := range []string{
		"", "PID|1", "MSH", "MSH|^~\\", "MSH|^^\\&|x", "MSH|^~\\&x", "MSH|^~\\&|\rP|1", "MSH|^~\\&|\rOBX|1|\\Xz\\|",
		"MSH|^~\\&|\rOBX|a\\b",
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestAck(t *testing.T) {
	b, _ := os.ReadFile("testdata/pcd01-bp.hl7")
	m, _ := Parse(b)
	ack := Ack(m, AE, "1 of 2 stored", "C1", time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC),
		[]ErrDetail{{Location: "OBX^3^3", Code: ErrTableValue, Text: "Table value not found", Message: "unknown code 99|x"}})
	a, err := Parse(ack)
	if err != nil {
		t.Fatalf("ACK does not parse: %v\n%s", err, ack)
	}
	msa := a.Segment("MSA")
	if a.MessageType() != "ACK^R01" || msa.Value(1) != "AE" || msa.Value(2) != "MSGID1234" || msa.Value(3) != "1 of 2 stored" {
		t.Fatalf("ACK: %s", ack)
	}
	msh := a.Segment("MSH")
	if msh.Component(5, 2) != "ACDE48234567ABCD" || msh.Value(10) != "C1" {
		t.Fatalf("ACK MSH does not answer the sender: %s", ack)
	}
	e := a.Segment("ERR")
	if e.Get(2, 0, 1, 1) != "OBX" || e.Get(2, 0, 3, 1) != "3" || e.Component(3, 1) != "103" || e.Value(4) != "E" || e.Value(8) != "unknown code 99|x" {
		t.Fatalf("ERR: %s", ack)
	}
	// Without a request (unparsable input) it still builds.
	if _, err := Parse(Ack(nil, AR, "unparsable", "C2", time.Now(), nil)); err != nil {
		t.Fatal(err)
	}
}

func TestFrames(t *testing.T) {
	var stream []byte
	stream = AppendFrame(stream, []byte("MSH|one"))
	stream = AppendFrame(stream, []byte("MSH|two"))
	// Split into 1-byte reads: frames span reads.
	fr := NewFrameReader(&oneByte{r: bytes.NewReader(stream)}, 100)
	for _, want := range []string{"MSH|one", "MSH|two"} {
		got, err := fr.Read()
		if err != nil || string(got) != want {
			t.Fatalf("frame %q, %v; want %q", got, err, want)
		}
	}
	if _, err := fr.Read(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	for name, c := range map[string]struct {
		in  string
		max int
	}{
		"junk before frame": {"xx\x0bMSH\x1c\x0d", 100},
		"truncated":         {"\x0bMSH", 100},
		"bad trailer":       {"\x0bMSH\x1cX", 100},
		"too large":         {"\x0b" + strings.Repeat("a", 50) + "\x1c\x0d", 10},
		"nested start":      {"\x0bMS\x0bH\x1c\x0d", 100},
	} {
		if _, err := NewFrameReader(strings.NewReader(c.in), c.max).Read(); err == nil || err == io.EOF {
			t.Errorf("%s: %v", name, err)
		}
	}
}

type oneByte struct{ r io.Reader }

func (o *oneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/pcd01-bp.hl7", "testdata/pcd01-icu.hl7"} {
		b, _ := os.ReadFile(name)
		f.Add(b)
	}
	f.Add([]byte("MSH#*!%@#A\rPID###A1!B2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		_ = m.MessageType()
		_ = m.ControlID()
		for _, s := range m.Segments {
			for f := range s.Fields {
				_ = s.Get(f, 0, 1, 1)
			}
		}
		if _, err := Parse(Ack(m, AA, "x", "c", time.Unix(0, 0), []ErrDetail{{Location: "OBX^1^3", Message: string(b)}})); err != nil {
			t.Fatalf("ACK of a parsed message does not parse: %v", err)
		}
	})
}

func FuzzFrames(f *testing.F) {
	f.Add(AppendFrame(AppendFrame(nil, []byte("MSH|a")), []byte("b")), 3)
	f.Fuzz(func(t *testing.T, stream []byte, chunk int) {
		fr := NewFrameReader(bytes.NewReader(stream), 1<<16)
		for i := 0; i < 1000; i++ {
			b, err := fr.Read()
			if err != nil {
				return
			}
			if bytes.IndexByte(b, StartBlock) >= 0 || bytes.IndexByte(b, EndBlock) >= 0 {
				t.Fatalf("frame contains framing bytes: %q", b)
			}
		}
	})
}
