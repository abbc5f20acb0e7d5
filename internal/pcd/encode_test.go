package pcd

import (
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/hl7"
)

// What Vigil sends as ORU^R01 its own PCD-01 reader takes back unchanged.
func TestEncodeORURoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 1, 9, 30, 15, 250e6, time.UTC)
	msg := EncodeORU(ORU{ControlID: "VGL|1^a", Sent: at, MRN: "MRN-1", Family: "O'Brien^Smith", Given: "Ann", BirthDate: "1950-02-03", Sex: "female", ObservedAt: at,
		Results: []Result{
			{Code: vigil.LOINCSystolic, Display: "Systolic blood pressure", Value: 128, Unit: "mm[Hg]", Time: at, Equipment: "cuff-1"},
			{Code: vigil.LOINCDiastolic, Display: "Diastolic blood pressure", Value: 82.5, Unit: "mm[Hg]", Time: at, Equipment: "cuff-1"},
		}})
	rs, err := Decode(msg, 100)
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, msg)
	}
	if len(rs) != 2 || rs[0].PatientIdentifier != "MRN-1" || !rs[0].Time.Equal(at) || rs[1].Values[0].Value != 82.5 ||
		rs[1].Values[0].Code != vigil.LOINCDiastolic || rs[1].Values[0].System != vigil.SystemLOINC || rs[0].Values[0].Unit != "mm[Hg]" {
		t.Fatalf("round trip: %+v\n%s", rs, msg)
	}
	if rs[0].Origin == nil || rs[0].Origin.Equipment != "cuff-1" {
		t.Fatalf("OBX-18: %+v", rs[0].Origin)
	}
}

// Text and coded values go as ST and CWE observations, escaped.
func TestEncodeTextAndCoded(t *testing.T) {
	at := time.Date(2026, 12, 1, 9, 30, 15, 0, time.UTC)
	msg := EncodeORU(ORU{ControlID: "C1", Sent: at, MRN: "MRN-1", ObservedAt: at, Results: []Result{
		{Code: "8361-8", Display: "Body position", Text: "lying | left", Time: at},
		{Code: "8361-8", Display: "Body position", CodedValue: &Coded{Code: "102538003", Text: "Recumbent body position", System: "SCT"}, Time: at},
	}})
	m, err := hl7.Parse(msg)
	if err != nil {
		t.Fatal(err)
	}
	var obx []*hl7.Segment
	for _, s := range m.Segments {
		if s.Name == "OBX" {
			obx = append(obx, s)
		}
	}
	if len(obx) != 2 || obx[0].Get(2, 0, 1, 1) != "ST" || obx[0].Get(5, 0, 1, 1) != "lying | left" || obx[0].Get(6, 0, 1, 1) != "" ||
		obx[1].Get(2, 0, 1, 1) != "CWE" || obx[1].Get(5, 0, 1, 1) != "102538003" || obx[1].Get(5, 0, 3, 1) != "SCT" {
		t.Fatalf("OBX segments:\n%s", msg)
	}
}
