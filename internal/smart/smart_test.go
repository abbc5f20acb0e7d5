package smart

import "testing"

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    Scope
		grants  bool
		invalid bool
	}{
		{"patient/*.read", Scope{Patient, "*", "rs"}, true, false},
		{"user/Observation.read", Scope{User, "Observation", "rs"}, true, false},
		{"user/Patient.write", Scope{User, "Patient", "cud"}, true, false},
		{"system/*.*", Scope{System, "*", "cruds"}, true, false},
		{"patient/Observation.rs", Scope{Patient, "Observation", "rs"}, true, false},
		{"user/Device.u", Scope{User, "Device", "u"}, true, false},
		{"openid", Scope{}, false, false},
		{"launch/patient", Scope{}, false, false},
		{"user/Observation.sr", Scope{}, false, true}, // letters out of order
		{"user/Observation.", Scope{}, false, true},
		{"admin/*.read", Scope{}, false, true},
		{"user/observation.read", Scope{}, false, true},
		{"*", Scope{}, false, true},
	} {
		got, ok, err := Parse(c.in)
		if (err != nil) != c.invalid || ok != c.grants || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v, %v", c.in, got, ok, err)
		}
	}
}

func TestGrant(t *testing.T) {
	for _, c := range []struct {
		scopes      []string
		typ         string
		interaction byte
		want        string
	}{
		{[]string{"patient/*.read"}, "Observation", Search, Patient},
		{[]string{"patient/*.read", "user/Observation.read"}, "Observation", Read, User},
		{[]string{"user/Observation.read"}, "Patient", Read, ""},
		{[]string{"user/Observation.read"}, "Observation", Update, ""},
		{[]string{"user/Patient.rs", "user/Patient.u"}, "Patient", Update, User},
		{[]string{"system/*.read"}, "Device", Search, System},
		{[]string{"openid", "fhirUser"}, "Patient", Read, ""},
		{nil, "Patient", Read, ""},
	} {
		if got := Grant(c.scopes, c.typ, c.interaction); got != c.want {
			t.Errorf("Grant(%v, %s, %c) = %q, want %q", c.scopes, c.typ, c.interaction, got, c.want)
		}
	}
}
