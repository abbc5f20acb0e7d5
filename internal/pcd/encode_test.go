package pcd

import (
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
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
