package pcd

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/ingest"
)

func decodeFile(t *testing.T, name string) []ingest.Raw {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	raws, err := Decode(b, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return raws
}

func TestBloodPressureCuff(t *testing.T) {
	raws := decodeFile(t, "pcd01-bp.hl7")
	if len(raws) != 3 {
		t.Fatalf("%d readings, want 3 (systolic, diastolic, mean)", len(raws))
	}
	want := time.Date(2009, 8, 13, 9, 57, 15, 0, time.FixedZone("", 5*3600))
	for i, code := range []string{"150021", "150022", "150023"} {
		r := raws[i]
		if r.Err != nil || r.PatientIdentifier != "789567" || !r.Time.Equal(want) || len(r.Values) != 1 {
			t.Fatalf("reading %d: %+v", i, r)
		}
		v := r.Values[0]
		if v.System != vigil.SystemMDC || v.Code != code || v.Unit != "266016" {
			t.Fatalf("value %d: %+v", i, v)
		}
	}
	if raws[0].Values[0].Value != 120 || raws[1].Values[0].Value != 80 || raws[0].ID != "MSGID1234/1/3" {
		t.Fatalf("values/ids: %+v", raws[:2])
	}
}

func TestICUGateway(t *testing.T) {
	raws := decodeFile(t, "pcd01-icu.hl7")
	if len(raws) != 9 {
		t.Fatalf("%d readings, want 9", len(raws))
	}
	for _, r := range raws {
		if r.PatientIdentifier != "AB60001" || !r.Time.Equal(time.Date(2008, 12, 11, 14, 45, 0, 0, time.UTC)) {
			t.Fatalf("%+v", r)
		}
		if r.Values[0].Unit != "/min" && r.Values[0].Unit != "mm[Hg]" {
			t.Fatalf("UCUM unit: %+v", r.Values[0])
		}
	}
}

func TestRefusals(t *testing.T) {
	base := "MSH|^~\\&|GW^G1^EUI-64||||20261124100000+0000||ORU^R01^ORU_R01|C1|P|2.6\rPID|||MRN1^^^H^PI\rOBR|1|||x|||20261124100000+0000\r"
	for name, c := range map[string]struct {
		msg, field, reason string
	}{
		"garbage":        {"hello", "MSH", "unparsable"},
		"not ORU":        {strings.Replace(base, "ORU^R01", "ADT^A01", 1), "MSH[1].9", "unsupported-message"},
		"no control id":  {strings.Replace(base, "|C1|", "||", 1) + "OBX|1|NM|150456^^MDC||97|262688^^MDC|||||F\r", "MSH[1].10", "required"},
		"no PID":         {strings.Replace(base, "PID|||MRN1^^^H^PI\r", "", 1), "PID", "required"},
		"no observation": {base, "OBX", "empty"},
	} {
		_, err := Decode([]byte(c.msg), 100)
		e, _ := err.(*vigil.Error)
		if e == nil || e.Field != c.field || e.Reason != c.reason {
			t.Errorf("%s: %#v, want field %s reason %s", name, err, c.field, c.reason)
		}
	}
	// Per-observation problems refuse that observation only.
	msg := base +
		"OBX|1|NM|150456^^MDC||97|262688^^MDC|||||F\r" +
		"OBX|2|NM|150456^^SNOMED||97|262688^^MDC|||||F\r" +
		"OBX|3|NM|150456^^MDC||abc|262688^^MDC|||||F\r" +
		"OBX|4|NM|150456^^MDC||97|262688^^MDC|||||W\r" +
		"OBX|5|NM|150456^^MDC||97|262688^^MDC|||||X\r" +
		"OBX|6|NM|150456^^MDC||97|262688^^MDC|||||F|||2026112410\r" +
		"OBX|7|ST|x^^MDC||text|||||||F\r"
	raws, err := Decode([]byte(msg), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(raws) != 5 {
		t.Fatalf("%d readings, want 5 (X and ST skipped)", len(raws))
	}
	want := []string{"", "unknown-system", "invalid", "result-status", ""}
	for i, r := range raws {
		if vigil.ErrorReason(r.Err) != want[i] {
			t.Errorf("OBX %d: %v, want %q", i+1, r.Err, want[i])
		}
	}
	if !raws[4].Time.Equal(time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)) || raws[4].Err != nil {
		t.Errorf("OBX-14 time: %v", raws[4].Time)
	}
}

func TestParseTime(t *testing.T) {
	for in, want := range map[string]time.Time{
		"2026":                     time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		"20261124103015":           time.Date(2026, 11, 24, 10, 30, 15, 0, time.UTC),
		"20261124103015.25+0130":   time.Date(2026, 11, 24, 9, 0, 15, 250e6, time.UTC),
		"20261124103015.1234-0500": time.Date(2026, 11, 24, 15, 30, 15, 123400000, time.UTC),
	} {
		got, err := ParseTime(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "20261", "2026112410301", "20261124+05", "2026x124", "20261124103015.12345"} {
		if _, err := ParseTime(bad); err == nil {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, n := range []string{"pcd01-bp.hl7", "pcd01-icu.hl7"} {
		b, _ := os.ReadFile("testdata/" + n)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		raws, err := Decode(b, 1000)
		if err != nil {
			if _, ok := err.(*vigil.Error); !ok {
				t.Fatalf("error is not a *vigil.Error: %v", err)
			}
			return
		}
		for _, r := range raws {
			if r.Err == nil && (r.ID == "" || len(r.Values) != 1) {
				t.Fatalf("accepted reading without id or value: %+v", r)
			}
		}
	})
}
