package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

var ctx = context.Background()

var t0 = time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)

// principals by bearer token, standing in for the node's token check.
var principals = map[string]*vigil.Principal{
	"dr":    {UserID: "dr", Role: vigil.RoleClinician},
	"admin": {UserID: "admin", Role: vigil.RoleAdmin},
	"nurse": {UserID: "nurse", Role: vigil.RoleNurse},
	"pt1":   {UserID: "pt1", Role: vigil.RolePatient, PatientID: "p1"},
	"w2":    {UserID: "w2", Role: vigil.RoleNurse, Wards: []string{"W2"}},
	// Tokens with SMART scopes.
	"obs-only":  {UserID: "dr", Role: vigil.RoleClinician, Scopes: []string{"user/Observation.read"}},
	"launch-p1": {UserID: "dr", Role: vigil.RoleClinician, Scopes: []string{"launch/patient", "patient/*.read"}, LaunchPatient: "p1"},
	"w1-p2":     {UserID: "w1", Role: vigil.RoleNurse, Wards: []string{"W1"}, Scopes: []string{"patient/*.read"}, LaunchPatient: "p2"},
	"admin-pt":  {UserID: "admin", Role: vigil.RoleAdmin, Scopes: []string{"patient/*.*"}, LaunchPatient: "p1"},
	"feed":      {UserID: "admin", Role: vigil.RoleAdmin, Scopes: []string{"user/Patient.rus"}},
	"device":    {UserID: "mon", Role: vigil.RoleDevice},
}

func setup(t testing.TB, configure ...func(*Options)) (*httptest.Server, *pebble.Store) {
	t.Helper()
	o := pebble.DefaultOptions()
	o.CompactInterval = -1
	st, err := pebble.Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, p := range []*vigil.Patient{
		{ID: "p1", Identifier: "MRN-1", Family: "Doe", Given: "Jane", Sex: "female", BirthDate: "1950-02-03", Ward: "W1"},
		{ID: "p2", Identifier: "MRN-2", Family: "Roe", Sex: "male", Ward: "W2"},
	} {
		must(t, st.CreatePatient(ctx, p))
	}
	must(t, st.CreateDevice(ctx, &vigil.Device{ID: "mon", Kind: vigil.DeviceBedsideMonitor, Manufacturer: "Acme", Model: "M1", Serial: "SN1"}))
	must(t, st.CreateDevice(ctx, &vigil.Device{ID: "cuff", Kind: vigil.DeviceBPCuff}))
	must(t, st.AssignDevice(ctx, "mon", "p1", t0.Add(-time.Hour)))
	must(t, st.AssignDevice(ctx, "cuff", "p1", t0.Add(-time.Hour)))
	var rs []*vigil.Reading
	for i := 0; i < 250; i++ {
		ts := t0.Add(time.Duration(i) * time.Minute)
		rs = append(rs, &vigil.Reading{DeviceID: "mon", ID: fmt.Sprint("m", i), PatientID: "p1", Time: ts, Received: ts.Add(time.Second), Values: []vigil.Measurement{
			{Code: vigil.LOINCHeartRate, Value: float64(60 + i%30), Unit: "/min"},
			{Code: vigil.LOINCSpO2, Value: 97, Unit: "%"},
		}})
	}
	rs = append(rs,
		&vigil.Reading{DeviceID: "mon", ID: "x1", PatientID: "p1", Time: t0, Values: []vigil.Measurement{
			{Code: vigil.LOINCRespRate, Value: 16, Unit: "/min"}, {Code: vigil.LOINCBodyTemp, Value: 37.2, Unit: "Cel"}, {Code: vigil.LOINCBodyWeight, Value: 70.5, Unit: "kg"}}},
		&vigil.Reading{DeviceID: "cuff", ID: "b1", PatientID: "p1", Time: t0.Add(30 * time.Minute), Values: []vigil.Measurement{
			{Code: vigil.LOINCSystolic, Value: 128, Unit: "mm[Hg]"}, {Code: vigil.LOINCDiastolic, Value: 82, Unit: "mm[Hg]"}}},
		&vigil.Reading{DeviceID: "cuff", ID: "g1", PatientID: "p1", Time: t0.Add(31 * time.Minute), Values: []vigil.Measurement{
			{Code: vigil.LOINCGlucoseMass, Value: 104, Unit: "mg/dL"}}},
		&vigil.Reading{DeviceID: "other", ID: "o1", PatientID: "p2", Time: t0, Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 50, Unit: "/min"}}},
	)
	_, err = st.AppendReadings(ctx, rs)
	must(t, err)
	ho := Options{Patients: st, Devices: st, Observations: st, Now: func() time.Time { return t0.Add(5 * time.Hour) }, Authenticate: func(r *http.Request) (*vigil.Principal, error) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if p, ok := principals[tok]; ok {
			return p, nil
		}
		return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "a bearer token is required")
	}}
	for _, c := range configure {
		c(&ho)
	}
	h := NewHandler(ho)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, st
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, srv *httptest.Server, token, path string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return fetch(t, req)
}

func fetch(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
		t.Fatalf("%s: content type %q", req.URL, ct)
	}
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v: %s", req.URL, err, b)
	}
	return resp.StatusCode, m
}

func entries(b map[string]any) []map[string]any {
	var out []map[string]any
	es, _ := b["entry"].([]any)
	for _, e := range es {
		out = append(out, e.(map[string]any)["resource"].(map[string]any))
	}
	return out
}

func link(b map[string]any, rel string) string {
	ls, _ := b["link"].([]any)
	for _, l := range ls {
		if m := l.(map[string]any); m["relation"] == rel {
			return m["url"].(string)
		}
	}
	return ""
}

func TestSearchObservations(t *testing.T) {
	srv, _ := setup(t)
	base := "/fhir/R4/Observation?patient=p1"
	for _, c := range []struct {
		query string
		want  int
	}{
		{"&code=8867-4&_count=1000", 250},
		{"&code=http://loinc.org|8867-4&_count=1000", 250},
		{"&code=8867-4,9279-1&_count=1000", 251},
		{"&code=2708-6&_count=1000", 250},
		{"&code=85354-9", 1},
		{"&code=8867-4&date=ge2026-11-24T09:00:00Z&date=lt2026-11-24T10:00:00Z", 60},
		{"&code=8867-4&date=gt2026-11-24T08:00:00Z&date=le2026-11-24T08:05:00Z", 5},
		{"&code=8867-4&date=2026-11-24T08:05:00Z", 1},
		{"&code=8867-4&date=2026-11-25&_count=1000", 0},
		{"&code=8867-4&date=2026-11-24&_count=1000", 250},
		{"&code=8867-4&date=2026-11&_count=1000", 250},
		{"&code=8867-4&device=Device/mon&_count=1000", 250},
		{"&code=8867-4&device=cuff", 0},
		{"&code=2339-0", 1},
	} {
		st, b := get(t, srv, "dr", base+c.query)
		if st != 200 || b["resourceType"] != "Bundle" || b["type"] != "searchset" {
			t.Fatalf("%s: %d %v", c.query, st, b)
		}
		if got := len(entries(b)); got != c.want {
			t.Errorf("%s: %d entries, want %d", c.query, got, c.want)
		}
	}
	// Newest first.
	_, b := get(t, srv, "dr", base+"&code=8867-4&_sort=-date&_count=2")
	es := entries(b)
	if es[0]["effectiveDateTime"] != "2026-11-24T12:09:00.000Z" || es[1]["effectiveDateTime"] != "2026-11-24T12:08:00.000Z" {
		t.Fatalf("-date: %v %v", es[0]["effectiveDateTime"], es[1]["effectiveDateTime"])
	}
	// Paging: follow next links; every observation once.
	seen := map[string]bool{}
	next := srv.URL + base + "&_count=37"
	pages := 0
	for next != "" {
		u, err := url.Parse(next)
		must(t, err)
		st, b := get(t, srv, "nurse", u.RequestURI())
		if st != 200 {
			t.Fatalf("page %d: %d %v", pages, st, b)
		}
		for _, e := range entries(b) {
			id := e["id"].(string)
			if seen[id] {
				t.Fatalf("%s on two pages", id)
			}
			seen[id] = true
		}
		next = link(b, "next")
		pages++
	}
	if len(seen) != 250*2+3+1+1 || pages != 14 {
		t.Fatalf("paged %d observations in %d pages", len(seen), pages)
	}
}

// The rest of FHIR search: categories, every date prefix, counts,
// includes, Patient names and birth dates, Device identifiers and
// DeviceMetric.
func TestSearchParameters(t *testing.T) {
	srv, _ := setup(t)
	for _, c := range []struct {
		token, query string
		want         int // entries
		total        int // -1: not checked
	}{
		{"dr", "Observation?patient=p1&category=laboratory", 1, 1},
		{"dr", "Observation?patient=p1&category=vital-signs&_count=1000", 504, 504},
		{"dr", "Observation?patient=p1&category=laboratory&code=8867-4", 0, 0},
		{"dr", "Observation?patient=p1&category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs&code=8867-4&_count=1000", 250, 250},
		{"dr", "Observation?patient=p1&code=8867-4&date=ne2026-11-24T08:05:00Z&_count=1000", 249, 249},
		{"dr", "Observation?patient=p1&code=8867-4&date=sa2026-11-24T12:00:00Z", 9, 9},
		{"dr", "Observation?patient=p1&code=8867-4&date=eb2026-11-24T08:03:00Z", 3, 3},
		{"dr", "Observation?patient=p1&code=8867-4&date=ap2026-11-24T12:00:00Z", 13, 13}, // now is 13:00: ±6 min
		{"dr", "Observation?patient=p1&code=8867-4&date=ge2026-11-24T09:00:00Z&date=ne2026-11-24T09:30:00Z&date=lt2026-11-24T10:00:00Z", 59, 59},
		{"dr", "Observation?patient=p1&_summary=count", 0, 505},
		{"dr", "Observation?patient=p1&code=8867-4&date=ge2026-11-24T12:00:00Z&_summary=count", 0, 10},
		{"pt1", "Observation?code=8867-4&_summary=count", 0, 250},
		{"dr", "Patient?name=ja", 1, 1},
		{"dr", "Patient?name=RO", 1, 1},
		{"dr", "Patient?given=jane&family=doe", 1, 1},
		{"dr", "Patient?given=doe", 0, 0},
		{"dr", "Patient?gender=male", 1, 1},
		{"dr", "Patient?birthdate=1950", 1, 1},
		{"dr", "Patient?birthdate=ge1950-02-03", 1, 1},
		{"dr", "Patient?birthdate=lt1950-02-03", 0, 0},
		{"dr", "Patient?birthdate=ne1950-02-03", 0, 0}, // p2 has no birth date
		{"dr", "Patient?identifier=urn:vigil:patient-identifier|MRN-1", 1, 1},
		{"dr", "Patient?identifier=http://other|MRN-1", 0, 0},
		{"dr", "Patient?_summary=count", 0, 2},
		{"w2", "Patient?_count=1", 1, 1}, // scoped: counts and pages what the nurse sees
		{"dr", "Device?identifier=urn:vigil:device-serial|SN1", 1, 1},
		{"dr", "Device?identifier=SN1", 1, 1},
		{"dr", "Device?_summary=count", 0, 2},
		{"dr", "DeviceMetric?source=Device/mon", 5, 5},
		{"dr", "DeviceMetric?source=cuff&type=http://loinc.org|8480-6", 1, 1},
		{"dr", "DeviceMetric?type=8867-4", 1, 1}, // "other" is not registered
		{"dr", "DeviceMetric?category=setting", 0, 0},
		{"dr", "DeviceMetric?_count=3", 3, 8},
		{"pt1", "DeviceMetric", 8, 8},
	} {
		st, b := get(t, srv, c.token, "/fhir/R4/"+c.query)
		if st != 200 || b["type"] != "searchset" {
			t.Errorf("%s: %d %v", c.query, st, b)
			continue
		}
		if got := len(entries(b)); got != c.want {
			t.Errorf("%s as %s: %d entries, want %d", c.query, c.token, got, c.want)
		}
		if total, _ := b["total"].(float64); c.total >= 0 && int(total) != c.total {
			t.Errorf("%s as %s: total %v, want %d", c.query, c.token, b["total"], c.total)
		}
	}
	// A scoped nurse sees p2 only, on one page.
	_, b := get(t, srv, "w2", "/fhir/R4/Patient?_count=1")
	if es := entries(b); es[0]["id"] != "p2" || link(b, "next") != "" {
		t.Errorf("scoped page: %v next %q", es[0]["id"], link(b, "next"))
	}
	// _include adds the patient and the device once each, marked include.
	_, b = get(t, srv, "dr", "/fhir/R4/Observation?patient=p1&code=8867-4&_count=5&_include=Observation:patient&_include=Observation:device")
	modes := map[string]int{}
	for _, e := range b["entry"].([]any) {
		e := e.(map[string]any)
		res := e["resource"].(map[string]any)
		modes[res["resourceType"].(string)+":"+e["search"].(map[string]any)["mode"].(string)]++
	}
	if modes["Observation:match"] != 5 || modes["Patient:include"] != 1 || modes["Device:include"] != 1 || len(modes) != 3 {
		t.Errorf("_include: %v", modes)
	}
	// DeviceMetric reads: the device's channel with its unit.
	st, m := get(t, srv, "dr", "/fhir/R4/DeviceMetric/mon.8867-4")
	if st != 200 || m["source"].(map[string]any)["reference"] != "Device/mon" || m["category"] != "measurement" ||
		m["unit"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"] != "/min" {
		t.Fatalf("DeviceMetric read: %d %v", st, m)
	}
	_, ms := get(t, srv, "dr", "/fhir/R4/DeviceMetric?source=cuff")
	validate(t, []any{m, ms, b})
}

func TestErrorsAndAccess(t *testing.T) {
	srv, _ := setup(t)
	for _, c := range []struct {
		token, path string
		status      int
		issue       string
	}{
		{"", "/fhir/R4/Patient/p1", 401, "login"},
		{"bad", "/fhir/R4/Patient/p1", 401, "login"},
		{"device", "/fhir/R4/Patient/p1", 403, "forbidden"},
		{"pt1", "/fhir/R4/Patient/p2", 403, "forbidden"},
		{"pt1", "/fhir/R4/Observation?patient=p2", 403, "forbidden"},
		{"dr", "/fhir/R4/Patient/nobody", 404, "not-found"},
		{"dr", "/fhir/R4/Observation/zzz", 404, "not-found"},
		{"dr", "/fhir/R4/Observation?code=8867-4", 400, "invalid"},
		{"dr", "/fhir/R4/Observation?patient=p1&colour=red", 400, "invalid"},
		{"dr", "/fhir/R4/Observation?patient=p1&date=xx2026", 400, "invalid"},
		{"dr", "/fhir/R4/Observation?patient=p1&date=2026,2025", 400, "invalid"},
		{"dr", "/fhir/R4/Observation?patient=p1&date=ne2026-11-24T08", 400, "invalid"}, // an hour is no FHIR precision
		{"dr", "/fhir/R4/Observation?patient=p1&_summary=text", 400, "invalid"},
		{"dr", "/fhir/R4/Observation?patient=p1&_include=Patient:organization", 400, "invalid"},
		{"dr", "/fhir/R4/Observation?patient=p1&category=http://example.org|vital-signs", 400, "invalid"},
		{"dr", "/fhir/R4/Patient?birthdate=1950-02-03T00:00:00Z", 400, "invalid"},
		{"pt1", "/fhir/R4/DeviceMetric/other.8867-4", 404, "not-found"},
		{"dr", "/fhir/R4/DeviceMetric/mon.0000-0", 404, "not-found"},
		{"dr", "/fhir/R4/Observation?patient=p1&date=yesterday", 400, "invalid"},
		{"dr", "/fhir/R4/Observation?patient=p1&_count=0", 400, "invalid"},
		{"dr", "/fhir/R4/Observation?patient=p1&_count=5000", 400, "invalid"},
		{"dr", "/fhir/R4/Observation?patient=p1&_sort=value", 400, "invalid"},
		{"dr", "/fhir/R4/Observation?patient=p1&_cursor=garbage", 400, "invalid"},
		{"dr", "/fhir/R4/Observation?patient=p1&code=http://snomed.info/sct|1", 400, "invalid"},
		{"dr", "/fhir/R4/Encounter", 404, "not-supported"},
	} {
		st, b := get(t, srv, c.token, c.path)
		if st != c.status || b["resourceType"] != "OperationOutcome" {
			t.Errorf("%s as %q: %d %v, want %d OperationOutcome", c.path, c.token, st, b, c.status)
			continue
		}
		if issue := b["issue"].([]any)[0].(map[string]any); issue["code"] != c.issue || issue["diagnostics"] == "" {
			t.Errorf("%s: issue %v, want %s", c.path, issue, c.issue)
		}
	}
	req, _ := http.NewRequest("POST", srv.URL+"/fhir/R4/Observation", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer dr")
	if st, _ := fetch(t, req); st != 405 {
		t.Errorf("POST: %d", st)
	}
	// The patient's own account reads its own data, also without patient=.
	if st, b := get(t, srv, "pt1", "/fhir/R4/Observation?code=9279-1"); st != 200 || len(entries(b)) != 1 {
		t.Errorf("own data: %d %v", st, b)
	}
	if st, b := get(t, srv, "pt1", "/fhir/R4/Patient"); st != 200 || len(entries(b)) != 1 {
		t.Errorf("own patient search: %d", st)
	}
	if st, _ := get(t, srv, "", "/fhir/R4/metadata"); st != 200 {
		t.Errorf("metadata: %d", st)
	}
}

// Reads carry the version as a weak ETag; If-None-Match with it answers
// 304 without a body, and a new version is sent again.
func TestReadETag(t *testing.T) {
	srv, st := setup(t)
	read := func(path, inm string) (int, string, int) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer dr")
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("ETag"), len(b)
	}
	st1, etag, n := read("/fhir/R4/Patient/p1", "")
	if st1 != 200 || etag != `W/"1"` || n == 0 {
		t.Fatalf("read: %d %q %d bytes", st1, etag, n)
	}
	if st, _, n := read("/fhir/R4/Patient/p1", etag); st != http.StatusNotModified || n != 0 {
		t.Fatalf("If-None-Match current: %d, %d bytes", st, n)
	}
	p, err := st.FindPatientByID(context.Background(), "p1")
	must(t, err)
	p.Family = "Renamed"
	must(t, st.UpdatePatient(context.Background(), p, p.Version))
	if st, etag2, n := read("/fhir/R4/Patient/p1", etag); st != 200 || etag2 != `W/"2"` || n == 0 {
		t.Fatalf("after an update: %d %q %d bytes", st, etag2, n)
	}
	_, b := get(t, srv, "dr", "/fhir/R4/Observation?patient=p1&_count=1")
	id := entries(b)[0]["id"].(string)
	if st, etag, _ := read("/fhir/R4/Observation/"+id, ""); st != 200 || etag != `W/"1"` {
		t.Fatalf("observation read: %d %q", st, etag)
	}
	if st, _, _ := read("/fhir/R4/Observation/"+id, `W/"1"`); st != http.StatusNotModified {
		t.Fatalf("observation If-None-Match: %d", st)
	}
}

func TestResourcesAndLastN(t *testing.T) {
	srv, _ := setup(t)
	_, b := get(t, srv, "dr", "/fhir/R4/Observation/$lastn?patient=p1&max=2")
	byCode := map[string][]map[string]any{}
	for _, e := range entries(b) {
		code := e["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"].(string)
		byCode[code] = append(byCode[code], e)
	}
	if len(byCode["8867-4"]) != 2 || len(byCode["85354-9"]) != 1 || len(byCode["8310-5"]) != 1 || len(byCode["2339-0"]) != 1 {
		t.Fatalf("lastn codes: %v", keys(byCode))
	}
	if v := byCode["8867-4"][0]["valueQuantity"].(map[string]any); v["value"] != 69.0 || v["code"] != "/min" || v["system"] != "http://unitsofmeasure.org" {
		t.Fatalf("latest heart rate: %v", v)
	}
	_, b = get(t, srv, "dr", "/fhir/R4/Observation/$lastn?patient=p1&category=laboratory")
	if es := entries(b); len(es) != 1 {
		t.Fatalf("lastn laboratory: %d", len(es))
	}
	// Fixed UCUM codes of the vital-signs profiles (the validator does not
	// check these) and the BP panel shape (the validator cannot check it).
	wantUnit := map[string]string{"8867-4": "/min", "59408-5": "%", "9279-1": "/min", "8310-5": "Cel", "29463-7": "kg"}
	for code, obs := range byCode {
		o := obs[0]
		if u, ok := wantUnit[code]; ok {
			if q := o["valueQuantity"].(map[string]any); q["code"] != u || q["system"] != "http://unitsofmeasure.org" {
				t.Errorf("%s unit %v, want %s", code, q, u)
			}
		}
		if o["subject"].(map[string]any)["reference"] != "Patient/p1" || o["status"] != "final" {
			t.Errorf("%s: %v", code, o)
		}
	}
	bp := byCode["85354-9"][0]
	if bp["valueQuantity"] != nil {
		t.Fatal("BP panel has a value")
	}
	comps := bp["component"].([]any)
	if len(comps) != 2 {
		t.Fatalf("BP components: %v", comps)
	}
	for i, want := range []struct {
		code string
		v    float64
	}{{"8480-6", 128}, {"8462-4", 82}} {
		c := comps[i].(map[string]any)
		code := c["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)
		q := c["valueQuantity"].(map[string]any)
		if code["code"] != want.code || code["system"] != "http://loinc.org" || q["value"] != want.v || q["code"] != "mm[Hg]" {
			t.Errorf("component %d: %v %v", i, code, q)
		}
	}
	spo2 := byCode["59408-5"][0]["code"].(map[string]any)["coding"].([]any)
	if len(spo2) != 2 || spo2[1].(map[string]any)["code"] != "2708-6" {
		t.Errorf("SpO2 codings: %v", spo2)
	}
	// Read back by id, and the resources the validator checks.
	id := bp["id"].(string)
	st, read := get(t, srv, "dr", "/fhir/R4/Observation/"+id)
	if st != 200 || read["id"] != id {
		t.Fatalf("read %s: %d", id, st)
	}
	_, pt := get(t, srv, "dr", "/fhir/R4/Patient/p1")
	_, dev := get(t, srv, "dr", "/fhir/R4/Device/mon")
	if dev["patient"].(map[string]any)["reference"] != "Patient/p1" || dev["serialNumber"] != "SN1" {
		t.Fatalf("device: %v", dev)
	}
	_, ps := get(t, srv, "dr", "/fhir/R4/Patient?identifier=MRN-2")
	if len(entries(ps)) != 1 {
		t.Fatalf("identifier search: %v", ps)
	}
	_, ds := get(t, srv, "dr", "/fhir/R4/Device?patient=p1")
	if len(entries(ds)) != 2 {
		t.Fatalf("device search: %v", ds)
	}
	_, oo := get(t, srv, "dr", "/fhir/R4/Patient/none")
	var all []any
	for _, obs := range byCode {
		all = append(all, obs[0])
	}
	// An Observation from an HL7 gateway carries where it was taken.
	withOrigin := ObservationResource(&vigil.Observation{ID: "x.1", PatientID: "p1", DeviceID: "gw", Code: vigil.LOINCHeartRate, Value: 60, Unit: "/min",
		Time: time.Now().UTC(), Origin: &vigil.Origin{Location: "3 WEST ICU^3001^1", Equipment: "0123456789ABCDEF^EUI-64", Containment: "1.6.1.1"}})
	if len(withOrigin.Extension) != 3 {
		t.Fatalf("extensions: %+v", withOrigin.Extension)
	}
	// Values that are not numbers (MedTech String and CodeableConcept
	// mappings), and a heart rate with the monitor's MDC method.
	now := time.Now().UTC()
	text := ObservationResource(&vigil.Observation{ID: "x.2", PatientID: "p1", DeviceID: "band", Code: "8361-8", Text: "lying on the left side", Time: now})
	coded := ObservationResource(&vigil.Observation{ID: "x.3", PatientID: "p1", DeviceID: "band", Code: "8361-8", Time: now,
		Concept: &vigil.Concept{Text: "Lying", Coding: []vigil.Coding{{System: "http://snomed.info/sct", Code: "102538003", Display: "Recumbent body position"}}}})
	method := ObservationResource(&vigil.Observation{ID: "x.4", PatientID: "p1", DeviceID: "mon", Code: vigil.LOINCHeartRate, Value: 61, Unit: "/min", Method: "149530", Time: now})
	if text.ValueString != "lying on the left side" || text.ValueQuantity != nil || text.Category != nil ||
		coded.ValueConcept == nil || coded.ValueConcept.Coding[0].Code != "102538003" || coded.ValueQuantity != nil {
		t.Fatalf("text and coded values: %+v %+v", text, coded)
	}
	if c := method.Code.Coding; len(c) != 2 || c[1].System != vigil.SystemMDC || c[1].Code != "149530" || c[1].Display != "MDC_PULS_OXIM_PULS_RATE" {
		t.Fatalf("method coding: %+v", c)
	}
	hour := now.Truncate(time.Hour)
	sampled := ObservationResource(&vigil.Observation{ID: "Dx.5", PatientID: "p1", DeviceID: "band", Code: vigil.LOINCHeartRate, Value: 73, Unit: "/min", Time: hour,
		Sampled: &vigil.SampledData{PeriodMS: 1000, End: hour.Add(time.Hour), Data: "70 71 E 73", Count: 3}})
	if sampled.EffectiveDateTime != "" || sampled.EffectivePeriod == nil || sampled.ValueSampledData == nil || sampled.ValueSampledData.Data != "70 71 E 73" || sampled.ValueQuantity != nil {
		t.Fatalf("sampled data: %+v", sampled)
	}
	all = append(all, b, pt, dev, ps, ds, oo, withOrigin, text, coded, method, sampled)
	validate(t, all)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// validate runs tools/fhirvalidate (Medplum's validator) over resources.
func validate(t *testing.T, resources []any) {
	t.Helper()
	dir, _ := filepath.Abs("../../tools/fhirvalidate")
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		if os.Getenv("VIGIL_REQUIRE_ALL") != "" {
			t.Fatalf("FHIR validator not installed: run make tools (npm ci in %s)", dir)
		}
		t.Skip("FHIR validator not installed (make tools); skipping validation")
	}
	in, _ := json.Marshal(resources)
	cmd := exec.Command("node", filepath.Join(dir, "validate.mjs"))
	cmd.Stdin = bytes.NewReader(in)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	var rep struct {
		Checked int              `json:"checked"`
		Issues  []map[string]any `json:"issues"`
	}
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		t.Fatalf("validator output: %v %v %s", err, jerr, stderr.String())
	}
	for _, i := range rep.Issues {
		t.Errorf("FHIR validation: %v", i)
	}
	if rep.Checked < len(resources) {
		t.Fatalf("validator checked %d resources of %d", rep.Checked, len(resources))
	}
	t.Logf("validator checked %d resource/profile pairs", rep.Checked)
}

// put sends a resource with PUT and an optional If-Match.
func put(t *testing.T, srv *httptest.Server, token, path, ifMatch, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("PUT", srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/fhir+json")
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	var m map[string]any
	must(t, json.NewDecoder(resp.Body).Decode(&m))
	return resp.StatusCode, resp.Header, m
}

// Patient and Device updates are version-aware: a stale or missing
// If-Match is refused with 412 and changes nothing.
func TestVersionedUpdate(t *testing.T) {
	srv, st := setup(t)
	jane := `{"resourceType":"Patient","id":"p1","identifier":[{"system":"urn:vigil:patient-identifier","value":"MRN-1"}],"name":[{"use":"official","family":"Doe-Smith","given":["Jane"]}],"gender":"female","birthDate":"1950-02-03","address":[{"city":"Leeds"}]}`
	for _, c := range []struct {
		token, path, ifMatch, body string
		status                     int
		issue                      string
	}{
		{"dr", "/fhir/R4/Patient/p1", `W/"1"`, jane, 403, "forbidden"},
		{"admin", "/fhir/R4/Patient/p1", "", jane, 412, "conflict"},
		{"admin", "/fhir/R4/Patient/p1", `W/"7"`, jane, 412, "conflict"},
		{"admin", "/fhir/R4/Patient/p1", `yesterday`, jane, 400, "invalid"},
		{"admin", "/fhir/R4/Patient/p2", `W/"1"`, jane, 400, "invalid"}, // id differs from the URL
		{"admin", "/fhir/R4/Patient/p1", `W/"1"`, strings.Replace(jane, `"Patient"`, `"Device"`, 1), 400, "invalid"},
		{"admin", "/fhir/R4/Patient/p1", `W/"1"`, strings.Replace(jane, `"female"`, `"robot"`, 1), 400, "invalid"},
		{"admin", "/fhir/R4/Patient/p1", `W/"1"`, strings.Replace(jane, `1950-02-03`, `2150-02-03`, 1), 400, "invalid"},
		{"admin", "/fhir/R4/Patient/p1", `W/"1"`, strings.Replace(jane, `"gender"`, `"active":false,"gender"`, 1), 400, "invalid"},
		{"admin", "/fhir/R4/Patient/p1", `W/"1"`, `{"resourceType":"Patient","id":"p1","name":"Jane"}`, 400, "invalid"},
		{"admin", "/fhir/R4/Patient/p9", `W/"1"`, strings.Replace(jane, `"p1"`, `"p9"`, 1), 404, "not-found"},
		{"admin", "/fhir/R4/Device/nope", `W/"1"`, `{"resourceType":"Device","id":"nope"}`, 404, "not-found"},
		{"admin", "/fhir/R4/Device/mon", `W/"1"`, `{"resourceType":"Device","id":"mon","patient":{"reference":"Patient/p2"}}`, 400, "invalid"},
		{"admin", "/fhir/R4/Device/mon", `W/"1"`, `{"resourceType":"Device","id":"mon","patient":{"reference":"Patient/p1"},"type":{"text":"scale"}}`, 400, "invalid"},
		{"admin", "/fhir/R4/Device/mon", `W/"1"`, `{"resourceType":"Device","id":"mon","patient":{"reference":"Patient/p1"},"status":"inactive"}`, 400, "invalid"},
		{"admin", "/fhir/R4/Device/mon", "", `{"resourceType":"Device","id":"mon","patient":{"reference":"Patient/p1"}}`, 412, "conflict"},
	} {
		status, _, b := put(t, srv, c.token, c.path, c.ifMatch, c.body)
		if status != c.status || b["resourceType"] != "OperationOutcome" {
			t.Errorf("PUT %s (If-Match %s): %d %v, want %d", c.path, c.ifMatch, status, b, c.status)
			continue
		}
		if issue := b["issue"].([]any)[0].(map[string]any); issue["code"] != c.issue || issue["diagnostics"] == "" {
			t.Errorf("PUT %s: issue %v, want %s", c.path, issue, c.issue)
		}
	}
	if p, _ := st.FindPatientByID(ctx, "p1"); p.Version != 1 || p.Family != "Doe" {
		t.Fatalf("a refused update changed the patient: %+v", p)
	}
	// The current version updates; what Vigil keeps of the patient (not the
	// ward, not NEWS2 inputs) stays, and the answer is the stored resource.
	status, hdr, b := put(t, srv, "admin", "/fhir/R4/Patient/p1", `W/"1"`, jane)
	if status != 200 || hdr.Get("ETag") != `W/"2"` || b["meta"].(map[string]any)["versionId"] != "2" || b["address"] != nil {
		t.Fatalf("update: %d %q %v", status, hdr.Get("ETag"), b)
	}
	if p, _ := st.FindPatientByID(ctx, "p1"); p.Family != "Doe-Smith" || p.Ward != "W1" || p.Version != 2 {
		t.Fatalf("stored: %+v", p)
	}
	if status, _, _ := put(t, srv, "admin", "/fhir/R4/Patient/p1", `W/"1"`, jane); status != 412 {
		t.Fatalf("stale If-Match after the update: %d", status)
	}
	// An unknown patient is created by PUT (an EHR's patient feed).
	status, hdr, created := put(t, srv, "admin", "/fhir/R4/Patient/p9", "", strings.Replace(jane, `"p1"`, `"p9"`, 1))
	if status != 201 || !strings.HasSuffix(hdr.Get("Location"), "/fhir/R4/Patient/p9/_history/1") || hdr.Get("ETag") != `W/"1"` {
		t.Fatalf("create by PUT: %d %v", status, hdr)
	}
	// Devices: descriptive fields and firmware; kind and assignment stay.
	status, hdr, dev := put(t, srv, "admin", "/fhir/R4/Device/mon", `W/"1"`,
		`{"resourceType":"Device","id":"mon","manufacturer":"Acme Medical","serialNumber":"SN1","modelNumber":"M2","version":[{"value":"4.2.0"}],"type":{"text":"bedside-monitor"},"patient":{"reference":"Patient/p1"}}`)
	if status != 200 || hdr.Get("ETag") != `W/"2"` || dev["modelNumber"] != "M2" {
		t.Fatalf("device update: %d %v", status, dev)
	}
	if d, _ := st.FindDeviceByID(ctx, "mon"); d.Firmware != "4.2.0" || d.Manufacturer != "Acme Medical" || d.Kind != vigil.DeviceBedsideMonitor {
		t.Fatalf("stored device: %+v", d)
	}
	req, _ := http.NewRequest("PUT", srv.URL+"/fhir/R4/Patient/p1", strings.NewReader(jane))
	req.Header.Set("Authorization", "Bearer admin")
	req.Header.Set("Content-Type", "application/xml")
	if st, b := fetch(t, req); st != 415 {
		t.Errorf("PUT as XML: %d %v", st, b)
	}
	req, _ = http.NewRequest("PUT", srv.URL+"/fhir/R4/Patient/p1", strings.NewReader(strings.Repeat(" ", 300<<10)+jane))
	req.Header.Set("Authorization", "Bearer admin")
	if st, b := fetch(t, req); st != 413 {
		t.Errorf("PUT too large: %d %v", st, b)
	}
	req, _ = http.NewRequest("PUT", srv.URL+"/fhir/R4/Observation/x", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer admin")
	if st, _ := fetch(t, req); st != 405 {
		t.Errorf("PUT Observation: %d", st)
	}
	validate(t, []any{b, created, dev})
}

// SMART scopes narrow what a token may do on every interaction.
func TestScopes(t *testing.T) {
	srv, _ := setup(t)
	for _, c := range []struct {
		token, path string
		status      int
		entries     int // -1: not checked
	}{
		{"obs-only", "/fhir/R4/Observation?patient=p1&code=9279-1", 200, 1},
		{"obs-only", "/fhir/R4/Observation/$lastn?patient=p1", 200, -1},
		{"obs-only", "/fhir/R4/Observation?patient=p1&code=9279-1&_include=Observation:patient", 200, 1}, // no Patient included
		{"obs-only", "/fhir/R4/Patient/p1", 403, -1},
		{"obs-only", "/fhir/R4/Patient", 403, -1},
		{"obs-only", "/fhir/R4/Device", 403, -1},
		{"obs-only", "/fhir/R4/DeviceMetric", 403, -1},
		{"launch-p1", "/fhir/R4/Observation?code=9279-1", 200, 1}, // the launch patient without patient=
		{"launch-p1", "/fhir/R4/Observation?patient=p2", 403, -1},
		{"launch-p1", "/fhir/R4/Patient", 200, 1},
		{"launch-p1", "/fhir/R4/Patient/p2", 403, -1},
		{"launch-p1", "/fhir/R4/Device/mon", 200, -1},
		{"w1-p2", "/fhir/R4/Patient/p2", 403, -1}, // the nurse's wards still apply
		{"w1-p2", "/fhir/R4/Observation", 403, -1},
		{"feed", "/fhir/R4/Patient?name=doe", 200, 1},
		{"feed", "/fhir/R4/Observation?patient=p1", 403, -1},
	} {
		st, b := get(t, srv, c.token, c.path)
		if st != c.status {
			t.Errorf("%s as %s: %d %v, want %d", c.path, c.token, st, b, c.status)
			continue
		}
		if c.entries >= 0 && len(entries(b)) != c.entries {
			t.Errorf("%s as %s: %d entries, want %d", c.path, c.token, len(entries(b)), c.entries)
		}
	}
	_, b := get(t, srv, "obs-only", "/fhir/R4/Patient/p1")
	if d := b["issue"].([]any)[0].(map[string]any)["diagnostics"].(string); !strings.Contains(d, "user/Patient.read") {
		t.Errorf("scope refusal does not say what is needed: %s", d)
	}
	jane := `{"resourceType":"Patient","id":"p1","name":[{"family":"Doe","given":["Jane"]}],"gender":"female"}`
	if st, _, b := put(t, srv, "admin-pt", "/fhir/R4/Patient/p1", `W/"1"`, jane); st != 403 {
		t.Errorf("patient/*.* update: %d %v", st, b)
	}
	if st, _, b := put(t, srv, "feed", "/fhir/R4/Patient/p1", `W/"1"`, jane); st != 200 {
		t.Errorf("user/Patient.u update: %d %v", st, b)
	}
	if st, _, b := put(t, srv, "feed", "/fhir/R4/Patient/p7", "", strings.Replace(jane, `"p1"`, `"p7"`, 1)); st != 403 {
		t.Errorf("create without a create scope: %d %v", st, b)
	}
}

// Patient pages are keyed by id: a patient added while a client pages
// (before its position) makes no other patient repeat or go missing.
func TestPatientPaging(t *testing.T) {
	srv, st := setup(t)
	for i := 3; i <= 9; i++ {
		must(t, st.CreatePatient(ctx, &vigil.Patient{ID: fmt.Sprint("p", i)}))
	}
	seen := map[string]int{}
	next := srv.URL + "/fhir/R4/Patient?_count=3"
	for pages := 0; next != ""; pages++ {
		u, err := url.Parse(next)
		must(t, err)
		st1, b := get(t, srv, "dr", u.RequestURI())
		if st1 != 200 || b["total"].(float64) < 9 {
			t.Fatalf("page %d: %d %v", pages, st1, b)
		}
		for _, e := range entries(b) {
			seen[e["id"].(string)]++
		}
		if pages == 0 {
			must(t, st.CreatePatient(ctx, &vigil.Patient{ID: "p0"})) // sorts before every page
		}
		next = link(b, "next")
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	for i := 1; i <= 9; i++ {
		if seen[fmt.Sprint("p", i)] != 1 {
			t.Fatalf("seen %v: every patient once", seen)
		}
	}
}
