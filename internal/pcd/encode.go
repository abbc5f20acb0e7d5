package pcd

import (
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil/internal/hl7"
)

// ORU is an ORU^R01 observation report to send (IHE PCD-01 shape): one
// patient, one OBR, one numeric OBX per result.
type ORU struct {
	Sender    string // MSH-3, the sending application (default VIGIL)
	ControlID string // MSH-10: stable for a resend, so a receiver stores it once
	Sent      time.Time
	// PID: the patient's identifier (PID-3, type MR) and demographics.
	MRN, Family, Given, BirthDate, Sex string
	ObservedAt                         time.Time // OBR-7
	Results                            []Result
}

// Result is one OBX: numeric (NM), or with Text a string (ST), or with
// a CodedValue a coded element (CWE).
type Result struct {
	Code, Display string // LOINC
	Value         float64
	Unit          string // UCUM
	Text          string
	CodedValue    *Coded
	Time          time.Time
	Equipment     string // OBX-18: the device
}

// Coded is a CWE value: identifier, text, coding system (HL7 table 0396,
// e.g. SCT or LN).
type Coded struct{ Code, Text, System string }

// EncodeORU writes the message with the default delimiters, segments
// separated by carriage returns, text escaped.
func EncodeORU(o ORU) []byte {
	d := hl7.DefaultDelimiters
	esc := d.EscapeString
	ts := func(t time.Time) string { return t.UTC().Format("20060102150405.000") + "+0000" }
	var b strings.Builder
	seg := func(fields ...string) {
		b.WriteString(strings.Join(fields, "|"))
		b.WriteByte('\r')
	}
	sender := o.Sender
	if sender == "" {
		sender = "VIGIL"
	}
	seg("MSH", `^~\&`, esc(sender), "VIGIL", "", "", ts(o.Sent), "", "ORU^R01^ORU_R01", esc(o.ControlID), "P", "2.6", "", "", "NE", "AL", "", "UNICODE UTF-8", "", "", "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO")
	sex := map[string]string{"male": "M", "female": "F", "other": "O", "unknown": "U"}[o.Sex]
	seg("PID", "1", "", esc(o.MRN)+"^^^^MR", "", esc(o.Family)+"^"+esc(o.Given), "", strings.ReplaceAll(o.BirthDate, "-", ""), sex)
	seg("OBR", "1", esc(o.ControlID), "", "182777000^monitoring of patient^SCT", "", "", ts(o.ObservedAt))
	for i, r := range o.Results {
		typ, value, unit := "NM", strconv.FormatFloat(r.Value, 'f', -1, 64), esc(r.Unit)+"^"+esc(r.Unit)+"^UCUM"
		switch {
		case r.CodedValue != nil:
			typ, value, unit = "CWE", esc(r.CodedValue.Code)+"^"+esc(r.CodedValue.Text)+"^"+esc(r.CodedValue.System), ""
		case r.Text != "":
			typ, value, unit = "ST", esc(r.Text), ""
		}
		seg("OBX", strconv.Itoa(i+1), typ, esc(r.Code)+"^"+esc(r.Display)+"^LN", "", value,
			unit, "", "", "", "", "F", "", "", ts(r.Time), "", "", "", esc(r.Equipment))
	}
	return []byte(b.String())
}
