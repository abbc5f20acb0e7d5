// Package storetest is the conformance suite every vigil.Store passes:
// the embedded Pebble store now, the PostgreSQL store of the scale-out
// issue later. A store's test calls Run with a function that opens an
// empty store.
package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Harness opens stores for the suite.
type Harness struct {
	// Open returns a new, empty store; the suite closes it.
	Open func(t *testing.T) vigil.Store
	// Settle, if set, is called after readings are appended and before
	// they are read back, to move them into the store's long-term form
	// (the Pebble store compacts head samples into chunks). The
	// observation tests run once without and once with it.
	Settle func(t *testing.T, s vigil.Store)
	// OpenRetaining, if set, opens a new, empty store with the retention
	// given, for the lifecycle tests (stores implementing vigil.Lifecycle).
	OpenRetaining func(t *testing.T, r vigil.Retention) vigil.Store
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	t.Run("Patients", func(t *testing.T) { testPatients(t, h.Open(t)) })
	t.Run("Devices", func(t *testing.T) { testDevices(t, h.Open(t)) })
	t.Run("Assignments", func(t *testing.T) { testAssignments(t, h.Open(t)) })
	t.Run("UsersTokens", func(t *testing.T) { testUsers(t, h.Open(t)) })
	t.Run("AppendDedup", func(t *testing.T) { testAppendDedup(t, h.Open(t)) })
	t.Run("ConcurrentAppend", func(t *testing.T) { testConcurrentAppend(t, h.Open(t)) })
	t.Run("Alerts", func(t *testing.T) { testAlerts(t, h.Open(t)) })
	t.Run("DeadLetters", func(t *testing.T) { testDeadLetters(t, h.Open(t)) })
	t.Run("Mappings", func(t *testing.T) { testMappings(t, h.Open(t)) })
	t.Run("Rules", func(t *testing.T) { testRules(t, h.Open(t)) })
	t.Run("Events", func(t *testing.T) { testEvents(t, h.Open(t)) })
	t.Run("Reviews", func(t *testing.T) { testReviews(t, h.Open(t)) })
	t.Run("Subscriptions", func(t *testing.T) { testSubscriptions(t, h.Open(t)) })
	if h.OpenRetaining != nil {
		t.Run("Retention", func(t *testing.T) { testRetention(t, h) })
		t.Run("Erasure", func(t *testing.T) { testErasure(t, h) })
	}
	settles := map[string]func(*testing.T, vigil.Store){"head": nil}
	if h.Settle != nil {
		settles["settled"] = h.Settle
	}
	for name, settle := range settles {
		t.Run("Observations/"+name, func(t *testing.T) { testObservations(t, h.Open(t), settle) })
		t.Run("Paging/"+name, func(t *testing.T) { testPaging(t, h.Open(t), settle) })
		t.Run("BloodPressure/"+name, func(t *testing.T) { testBloodPressure(t, h.Open(t), settle) })
		t.Run("Methods/"+name, func(t *testing.T) { testMethods(t, h.Open(t), settle) })
		t.Run("SampledData/"+name, func(t *testing.T) { testSampledData(t, h.Open(t), settle) })
		t.Run("TextValues/"+name, func(t *testing.T) { testTextValues(t, h.Open(t), settle) })
	}
}

var ctx = context.Background()

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if vigil.ErrorCode(err) != code {
		t.Fatalf("got error %v (code %q), want code %s", err, vigil.ErrorCode(err), code)
	}
}

func closeStore(t *testing.T, s vigil.Store) {
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
}

func testPatients(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	p := &vigil.Patient{ID: "p1", Identifier: "MRN-1", Family: "Doe", Given: "Jane", Ward: "ICU"}
	must(t, s.CreatePatient(ctx, p))
	if p.Version != 1 || p.Created.IsZero() {
		t.Fatalf("create did not set version/created: %+v", p)
	}
	wantCode(t, s.CreatePatient(ctx, &vigil.Patient{ID: "p1"}), vigil.ECONFLICT)
	wantCode(t, s.CreatePatient(ctx, &vigil.Patient{ID: "bad id!"}), vigil.EINVALID)
	must(t, s.CreatePatient(ctx, &vigil.Patient{ID: "p2", Family: "Smith", Given: "Dorothy", Ward: "A", Sex: "female", BirthDate: "1950-02-03"}))
	must(t, s.CreatePatient(ctx, &vigil.Patient{ID: "p3", Family: "doherty", Ward: "ICU", Sex: "male", BirthDate: "1961-12-31"}))

	got, err := s.FindPatientByID(ctx, "p1")
	must(t, err)
	if got.Family != "Doe" || got.Identifier != "MRN-1" {
		t.Fatalf("read back %+v", got)
	}
	_, err = s.FindPatientByID(ctx, "nope")
	wantCode(t, err, vigil.ENOTFOUND)

	got.Bed = "4"
	must(t, s.UpdatePatient(ctx, got, 1))
	wantCode(t, s.UpdatePatient(ctx, got, 1), vigil.ECONFLICT)
	must(t, s.UpdatePatient(ctx, got, 0)) // version 0: unconditional
	if got.Version != 3 {
		t.Fatalf("unconditional update: version %d, want 3", got.Version)
	}
	wantCode(t, s.UpdatePatient(ctx, &vigil.Patient{ID: "nope"}, 1), vigil.ENOTFOUND)
	got, _ = s.FindPatientByID(ctx, "p1")
	if got.Bed != "4" || got.Version != 3 {
		t.Fatalf("after update: %+v", got)
	}

	for _, c := range []struct {
		f    vigil.PatientFilter
		want []string
		tot  int
	}{
		{vigil.PatientFilter{}, []string{"p1", "p2", "p3"}, 3},
		{vigil.PatientFilter{Ward: "ICU"}, []string{"p1", "p3"}, 2},
		{vigil.PatientFilter{Family: "DO"}, []string{"p1", "p3"}, 2},
		{vigil.PatientFilter{Identifier: "MRN-1"}, []string{"p1"}, 1},
		{vigil.PatientFilter{ID: "p2"}, []string{"p2"}, 1},
		{vigil.PatientFilter{ID: "p2", Ward: "ICU"}, nil, 0},
		{vigil.PatientFilter{Offset: 1, Limit: 1}, []string{"p2"}, 3},
		{vigil.PatientFilter{After: "p1", Limit: 1}, []string{"p2"}, 3},
		{vigil.PatientFilter{After: "p0"}, []string{"p1", "p2", "p3"}, 3},
		{vigil.PatientFilter{After: "p3"}, nil, 3},
		{vigil.PatientFilter{Name: "do"}, []string{"p1", "p2", "p3"}, 3}, // Doe, Dorothy, doherty
		{vigil.PatientFilter{Name: "jan"}, []string{"p1"}, 1},
		{vigil.PatientFilter{Given: "do"}, []string{"p2"}, 1},
		{vigil.PatientFilter{Gender: "female"}, []string{"p2"}, 1},
		{vigil.PatientFilter{Born: []vigil.Period{{From: day("1950-01-01"), To: day("1960-01-01")}}}, []string{"p2"}, 1},
		{vigil.PatientFilter{Born: []vigil.Period{{From: day("1950-02-04")}}}, []string{"p3"}, 1},
		{vigil.PatientFilter{NotBorn: []vigil.Period{{From: day("1950-02-03"), To: day("1950-02-04")}}}, []string{"p3"}, 1}, // no birth date: no match
	} {
		ps, total, err := s.FindPatients(ctx, c.f)
		must(t, err)
		var ids []string
		for _, p := range ps {
			ids = append(ids, p.ID)
		}
		if !slices.Equal(ids, c.want) || total != c.tot {
			t.Errorf("FindPatients(%+v) = %v (total %d), want %v (total %d)", c.f, ids, total, c.want, c.tot)
		}
	}
}

func testDevices(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	d := &vigil.Device{ID: "mon-1", Kind: vigil.DeviceBedsideMonitor, Serial: "SN1", SecretHash: "$argon2id$x"}
	must(t, s.CreateDevice(ctx, d))
	wantCode(t, s.CreateDevice(ctx, &vigil.Device{ID: "mon-1"}), vigil.ECONFLICT)
	got, err := s.FindDeviceByID(ctx, "mon-1")
	must(t, err)
	if got.SecretHash != "$argon2id$x" || got.Serial != "SN1" || got.Version != 1 {
		t.Fatalf("read back %+v", got)
	}
	got.SecretHash = "$argon2id$y"
	must(t, s.UpdateDevice(ctx, got, 1))
	wantCode(t, s.UpdateDevice(ctx, got, 1), vigil.ECONFLICT)
	got, _ = s.FindDeviceByID(ctx, "mon-1")
	if got.SecretHash != "$argon2id$y" || got.Version != 2 {
		t.Fatalf("after update: %+v", got)
	}
	must(t, s.CreateDevice(ctx, &vigil.Device{ID: "cuff-1", Kind: vigil.DeviceBPCuff}))
	ds, total, err := s.FindDevices(ctx, vigil.DeviceFilter{})
	must(t, err)
	if len(ds) != 2 || total != 2 || ds[0].ID != "cuff-1" {
		t.Fatalf("FindDevices: %d (total %d)", len(ds), total)
	}
	ds, total, err = s.FindDevices(ctx, vigil.DeviceFilter{After: "cuff-1"})
	must(t, err)
	if len(ds) != 1 || total != 2 || ds[0].ID != "mon-1" {
		t.Fatalf("FindDevices after cuff-1: %d (total %d)", len(ds), total)
	}
	ds, total, err = s.FindDevices(ctx, vigil.DeviceFilter{Serial: "SN1"})
	must(t, err)
	if len(ds) != 1 || total != 1 || ds[0].ID != "mon-1" {
		t.Fatalf("FindDevices by serial: %d (total %d)", len(ds), total)
	}
}

func testAssignments(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	t0 := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	must(t, s.CreatePatient(ctx, &vigil.Patient{ID: "p1"}))
	must(t, s.CreatePatient(ctx, &vigil.Patient{ID: "p2"}))
	must(t, s.CreateDevice(ctx, &vigil.Device{ID: "w1", Kind: vigil.DeviceWearable}))
	wantCode(t, s.AssignDevice(ctx, "w1", "nope", t0), vigil.ENOTFOUND)
	wantCode(t, s.AssignDevice(ctx, "nope", "p1", t0), vigil.ENOTFOUND)
	must(t, s.AssignDevice(ctx, "w1", "p1", t0))
	must(t, s.AssignDevice(ctx, "w1", "p1", t0.Add(time.Minute))) // same patient: no-op
	must(t, s.AssignDevice(ctx, "w1", "p2", t0.Add(time.Hour)))
	wantCode(t, s.AssignDevice(ctx, "w1", "p1", t0.Add(30*time.Minute)), vigil.EINVALID) // before current start

	as, err := s.Assignments(ctx, "w1")
	must(t, err)
	if len(as) != 2 || as[0].PatientID != "p1" || !as[0].To.Equal(t0.Add(time.Hour)) || as[1].PatientID != "p2" || !as[1].To.IsZero() {
		t.Fatalf("assignments: %+v", as)
	}
	if !as[0].Covers(t0.Add(59*time.Minute)) || as[0].Covers(t0.Add(time.Hour)) || !as[1].Covers(t0.Add(time.Hour)) {
		t.Fatal("Covers boundaries wrong")
	}
	pa, err := s.PatientAssignments(ctx, "p1")
	must(t, err)
	if len(pa) != 1 || pa[0].DeviceID != "w1" || pa[0].To.IsZero() {
		t.Fatalf("patient assignments: %+v", pa)
	}
	ds, _, err := s.FindDevices(ctx, vigil.DeviceFilter{PatientID: "p2"})
	must(t, err)
	if len(ds) != 1 || ds[0].ID != "w1" {
		t.Fatalf("devices of p2: %v", ds)
	}
	ds, _, err = s.FindDevices(ctx, vigil.DeviceFilter{PatientID: "p1"})
	must(t, err)
	if len(ds) != 0 {
		t.Fatalf("p1 has no current device, got %d", len(ds))
	}

	// Unassign: an empty patient closes the open assignment; again, and on
	// a device with none open, it changes nothing.
	must(t, s.AssignDevice(ctx, "w1", "", t0.Add(2*time.Hour)))
	must(t, s.AssignDevice(ctx, "w1", "", t0.Add(3*time.Hour)))
	must(t, s.CreateDevice(ctx, &vigil.Device{ID: "w2", Kind: vigil.DeviceWearable}))
	must(t, s.AssignDevice(ctx, "w2", "", t0))
	as, err = s.Assignments(ctx, "w1")
	must(t, err)
	if len(as) != 2 || !as[1].To.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("after unassign: %+v", as)
	}
	if as, _ := s.Assignments(ctx, "w2"); len(as) != 0 {
		t.Fatalf("unassigning a device with no assignment made one: %+v", as)
	}
	must(t, s.AssignDevice(ctx, "w1", "p1", t0.Add(4*time.Hour)))
	if as, _ := s.Assignments(ctx, "w1"); len(as) != 3 || as[2].PatientID != "p1" || !as[2].To.IsZero() {
		t.Fatalf("assign after unassign: %+v", as)
	}
}

func testUsers(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	u := &vigil.User{ID: "nurse-1", Role: vigil.RoleNurse, PasswordHash: "$argon2id$h"}
	must(t, s.CreateUser(ctx, u))
	wantCode(t, s.CreateUser(ctx, &vigil.User{ID: "nurse-1"}), vigil.ECONFLICT)
	got, err := s.FindUserByID(ctx, "nurse-1")
	must(t, err)
	if got.PasswordHash != "$argon2id$h" || got.Role != vigil.RoleNurse {
		t.Fatalf("user: %+v", got)
	}
	got.Name = "N. One"
	must(t, s.UpdateUser(ctx, got, 1))
	us, err := s.FindUsers(ctx)
	must(t, err)
	if len(us) != 1 || us[0].Name != "N. One" {
		t.Fatalf("users: %+v", us)
	}
	tok := &vigil.Token{ID: "tok1", Hash: []byte{1, 2, 3}, UserID: "nurse-1", Kind: "api", Created: time.Now().UTC()}
	must(t, s.CreateToken(ctx, tok))
	wantCode(t, s.CreateToken(ctx, tok), vigil.ECONFLICT)
	gt, err := s.FindTokenByID(ctx, "tok1")
	must(t, err)
	if string(gt.Hash) != "\x01\x02\x03" || gt.UserID != "nurse-1" {
		t.Fatalf("token: %+v", gt)
	}
	must(t, s.DeleteToken(ctx, "tok1"))
	_, err = s.FindTokenByID(ctx, "tok1")
	wantCode(t, err, vigil.ENOTFOUND)
	wantCode(t, s.DeleteToken(ctx, "tok1"), vigil.ENOTFOUND)
}

// T0 is the device time the observation tests start at.
var T0 = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

func reading(dev, id, patient string, t time.Time, ms ...vigil.Measurement) *vigil.Reading {
	return &vigil.Reading{DeviceID: dev, ID: id, PatientID: patient, Time: t, Received: t.Add(2 * time.Second), Values: ms, Source: "test"}
}

func hr(v float64) vigil.Measurement {
	return vigil.Measurement{Code: vigil.LOINCHeartRate, Value: v, Unit: "/min"}
}
func spo2(v float64) vigil.Measurement {
	return vigil.Measurement{Code: vigil.LOINCSpO2, Value: v, Unit: "%"}
}
func sys(v float64) vigil.Measurement {
	return vigil.Measurement{Code: vigil.LOINCSystolic, Value: v, Unit: "mm[Hg]"}
}
func dia(v float64) vigil.Measurement {
	return vigil.Measurement{Code: vigil.LOINCDiastolic, Value: v, Unit: "mm[Hg]"}
}

func testAppendDedup(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	r1 := reading("d1", "r1", "p1", T0, hr(70))
	r2 := reading("d1", "r2", "p1", T0.Add(time.Second), hr(71))
	res, err := s.AppendReadings(ctx, []*vigil.Reading{r1, r2, r1})
	must(t, err)
	if len(res) != 3 || res[0].Duplicate || res[1].Duplicate || !res[2].Duplicate {
		t.Fatalf("first append: %+v", res)
	}
	// Same id from another device is a different reading.
	res, err = s.AppendReadings(ctx, []*vigil.Reading{r2, reading("d2", "r1", "p1", T0, spo2(97))})
	must(t, err)
	if !res[0].Duplicate || res[1].Duplicate {
		t.Fatalf("second append: %+v", res)
	}
	obs, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1"})
	must(t, err)
	if len(obs) != 3 {
		t.Fatalf("stored %d observations, want 3: %v", len(obs), obs)
	}
}

func testConcurrentAppend(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	dups := make([]int, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				// Every writer sends the same ids: each must be stored once.
				r := reading("d1", fmt.Sprint("r", i), "p1", T0.Add(time.Duration(i)*time.Second), hr(float64(60+i)))
				res, err := s.AppendReadings(ctx, []*vigil.Reading{r})
				if err != nil {
					t.Error(err)
					return
				}
				if res[0].Duplicate {
					dups[w]++
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, d := range dups {
		total += d
	}
	if total != (writers-1)*each {
		t.Fatalf("%d duplicates reported, want %d", total, (writers-1)*each)
	}
	obs, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Limit: 1000})
	must(t, err)
	if len(obs) != each {
		t.Fatalf("%d stored, want %d", len(obs), each)
	}
}

func testObservations(t *testing.T, s vigil.Store, settle func(*testing.T, vigil.Store)) {
	closeStore(t, s)
	var rs []*vigil.Reading
	for i := 0; i < 30; i++ {
		ts := T0.Add(time.Duration(i) * time.Minute)
		rs = append(rs, reading("mon", fmt.Sprint("m", i), "p1", ts, hr(float64(60+i)), spo2(99-float64(i%3))))
		if i%10 == 0 {
			rs = append(rs, reading("wear", fmt.Sprint("w", i), "p1", ts.Add(time.Second), hr(float64(100+i))))
		}
	}
	rs = append(rs, reading("mon2", "x", "p2", T0, hr(50)))
	_, err := s.AppendReadings(ctx, rs)
	must(t, err)
	if settle != nil {
		settle(t, s)
	}
	find := func(f vigil.ObservationFilter) []*vigil.Observation {
		t.Helper()
		obs, next, err := s.FindObservations(ctx, f)
		must(t, err)
		if next != "" {
			t.Fatalf("unexpected next page for %+v", f)
		}
		return obs
	}
	all := find(vigil.ObservationFilter{PatientID: "p1", Limit: 1000})
	if len(all) != 63 {
		t.Fatalf("p1 has %d observations, want 63", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].Time.Before(all[i-1].Time) {
			t.Fatal("not in time order")
		}
	}
	first := all[0]
	if first.PatientID != "p1" || first.DeviceID != "mon" || !first.Time.Equal(T0) || !first.Received.Equal(T0.Add(2*time.Second)) {
		t.Fatalf("first observation: %+v", first)
	}
	hrs := find(vigil.ObservationFilter{PatientID: "p1", Codes: []string{vigil.LOINCHeartRate}, Limit: 1000})
	if len(hrs) != 33 {
		t.Fatalf("%d heart rates, want 33", len(hrs))
	}
	for _, o := range hrs {
		if o.Code != vigil.LOINCHeartRate || o.Unit != "/min" {
			t.Fatalf("wrong code/unit: %+v", o)
		}
	}
	dev := find(vigil.ObservationFilter{PatientID: "p1", Codes: []string{vigil.LOINCHeartRate}, DeviceID: "wear"})
	if len(dev) != 3 || dev[0].Value != 100 {
		t.Fatalf("device filter: %v", dev)
	}
	win := find(vigil.ObservationFilter{PatientID: "p1", Codes: []string{vigil.LOINCSpO2}, From: T0.Add(5 * time.Minute), To: T0.Add(10 * time.Minute)})
	if len(win) != 5 || !win[0].Time.Equal(T0.Add(5*time.Minute)) {
		t.Fatalf("window [5m,10m): %d", len(win))
	}
	ne := find(vigil.ObservationFilter{PatientID: "p1", Codes: []string{vigil.LOINCSpO2}, Exclude: []vigil.Period{{From: T0.Add(5 * time.Minute), To: T0.Add(10 * time.Minute)}, {To: T0.Add(time.Minute)}}, Limit: 1000})
	if len(ne) != 24 || !ne[0].Time.Equal(T0.Add(time.Minute)) {
		t.Fatalf("excluding [5m,10m) and before 1m: %d", len(ne))
	}
	desc := find(vigil.ObservationFilter{PatientID: "p1", Codes: []string{vigil.LOINCHeartRate}, Desc: true, Limit: 1000})
	if desc[0].Value != 89 || desc[len(desc)-1].Value != 60 {
		t.Fatalf("desc order: first %v last %v", desc[0].Value, desc[len(desc)-1].Value)
	}
	for _, o := range []*vigil.Observation{all[0], all[17], all[62]} {
		got, err := s.FindObservationByID(ctx, o.ID)
		must(t, err)
		if got.ID != o.ID || got.Value != o.Value || got.Code != o.Code || !got.Time.Equal(o.Time) {
			t.Fatalf("by id %s: %+v, want %+v", o.ID, got, o)
		}
	}
	for _, bad := range []string{"", "zz", "1.zz", "P0.0", "99999.1"} {
		_, err := s.FindObservationByID(ctx, bad)
		wantCode(t, err, vigil.ENOTFOUND)
	}
	latest, err := s.LatestObservations(ctx, "p1", []string{vigil.LOINCHeartRate, vigil.LOINCSpO2, vigil.LOINCRespRate}, 2)
	must(t, err)
	if len(latest) != 2 || len(latest[vigil.LOINCHeartRate]) != 2 || latest[vigil.LOINCHeartRate][0].Value != 89 || latest[vigil.LOINCHeartRate][1].Value != 88 {
		t.Fatalf("latest: %v", latest)
	}
	// Stores that list device channels (FHIR DeviceMetric) list each code once.
	if cs, ok := s.(interface {
		DeviceChannels(context.Context, string) ([]vigil.Channel, error)
	}); ok {
		chans, err := cs.DeviceChannels(ctx, "mon")
		must(t, err)
		want := []vigil.Channel{{Device: "mon", Code: vigil.LOINCSpO2, Unit: "%"}, {Device: "mon", Code: vigil.LOINCHeartRate, Unit: "/min"}}
		if !slices.Equal(chans, want) {
			t.Errorf("DeviceChannels(mon) = %v, want %v", chans, want)
		}
		if chans, err = cs.DeviceChannels(ctx, ""); err != nil || len(chans) != 4 {
			t.Errorf("DeviceChannels() = %v, %v; want 4 channels of mon, mon2 and wear", chans, err)
		}
	}
	// Stores that read series as columns (the compact series API) give
	// each device's values in time order, within a bound.
	if rs, ok := s.(interface {
		ReadSeries(ctx context.Context, patientID, code, deviceID string, from, to time.Time, max int) ([]vigil.SeriesData, error)
	}); ok {
		data, err := rs.ReadSeries(ctx, "p1", vigil.LOINCHeartRate, "", T0, T0.Add(time.Hour), 1000)
		must(t, err)
		byDev := map[string]vigil.SeriesData{}
		for _, d := range data {
			byDev[d.Device] = d
		}
		mon, wear := byDev["mon"], byDev["wear"]
		if len(data) != 2 || len(mon.T) != 30 || mon.V[0] != 60 || mon.V[29] != 89 || mon.T[1]-mon.T[0] != 60_000 || mon.Unit != "/min" || len(wear.T) != 3 || wear.T[0] != T0.Add(time.Second).UnixMilli() {
			t.Fatalf("ReadSeries: %+v", data)
		}
		if data, err = rs.ReadSeries(ctx, "p1", vigil.LOINCHeartRate, "wear", T0.Add(5*time.Minute), T0.Add(time.Hour), 1000); err != nil || len(data) != 1 || len(data[0].T) != 2 {
			t.Fatalf("ReadSeries of wear from 5m: %+v %v", data, err)
		}
		_, err = rs.ReadSeries(ctx, "p1", vigil.LOINCHeartRate, "", T0, T0.Add(time.Hour), 10)
		wantCode(t, err, vigil.EINVALID)
	}
	_, _, err = s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Cursor: "garbage"})
	wantCode(t, err, vigil.EINVALID)
	if got := find(vigil.ObservationFilter{PatientID: "nobody"}); len(got) != 0 {
		t.Fatal("observations for an unknown patient")
	}
}

func testPaging(t *testing.T, s vigil.Store, settle func(*testing.T, vigil.Store)) {
	closeStore(t, s)
	var rs []*vigil.Reading
	// Two devices reporting at the same instants make ties on time.
	for i := 0; i < 250; i++ {
		ts := T0.Add(time.Duration(i/2) * time.Second)
		rs = append(rs, reading("a", fmt.Sprint(i), "p1", ts, hr(float64(i))))
		rs = append(rs, reading("b", fmt.Sprint(i), "p1", ts, hr(float64(1000+i))))
	}
	_, err := s.AppendReadings(ctx, rs)
	must(t, err)
	if settle != nil {
		settle(t, s)
	}
	// 250 readings per device at 125 distinct times: same device + same
	// time overwrite, so each device has 125 samples.
	for _, desc := range []bool{false, true} {
		seen := map[string]bool{}
		var prev time.Time
		f := vigil.ObservationFilter{PatientID: "p1", Limit: 7, Desc: desc}
		pages := 0
		for {
			obs, next, err := s.FindObservations(ctx, f)
			must(t, err)
			pages++
			for _, o := range obs {
				if seen[o.ID] {
					t.Fatalf("desc=%v: %s returned twice", desc, o.ID)
				}
				seen[o.ID] = true
				if !prev.IsZero() && (o.Time.Before(prev) != desc && !o.Time.Equal(prev)) {
					t.Fatalf("desc=%v: out of order", desc)
				}
				prev = o.Time
			}
			if next == "" {
				break
			}
			if len(obs) != 7 {
				t.Fatalf("short page %d with a next cursor", len(obs))
			}
			f.Cursor = next
		}
		if len(seen) != 250 || pages != 36 {
			t.Fatalf("desc=%v: paged %d observations in %d pages, want 250 in 36", desc, len(seen), pages)
		}
	}
}

func testBloodPressure(t *testing.T, s vigil.Store, settle func(*testing.T, vigil.Store)) {
	closeStore(t, s)
	_, err := s.AppendReadings(ctx, []*vigil.Reading{
		reading("cuff", "1", "p1", T0, sys(120), dia(80), hr(66)),
		reading("cuff", "2", "p1", T0.Add(time.Hour), sys(135), dia(85)),
		reading("cuff", "3", "p1", T0.Add(2*time.Hour), sys(140)), // lone systolic
	})
	must(t, err)
	if settle != nil {
		settle(t, s)
	}
	panels, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Codes: []string{vigil.LOINCBPPanel}})
	must(t, err)
	if len(panels) != 2 {
		t.Fatalf("%d panels, want 2: %+v", len(panels), panels)
	}
	p := panels[0]
	if p.Code != vigil.LOINCBPPanel || len(p.Components) != 2 || p.Components[0].Code != vigil.LOINCSystolic || p.Components[0].Value != 120 || p.Components[1].Value != 80 || p.Components[1].Unit != "mm[Hg]" {
		t.Fatalf("panel: %+v", p)
	}
	got, err := s.FindObservationByID(ctx, p.ID)
	must(t, err)
	if got.Code != vigil.LOINCBPPanel || len(got.Components) != 2 || got.Components[1].Value != 80 {
		t.Fatalf("panel by id: %+v", got)
	}
	all, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1"})
	must(t, err)
	codes := map[string]int{}
	for _, o := range all {
		codes[o.Code]++
	}
	if codes[vigil.LOINCBPPanel] != 2 || codes[vigil.LOINCSystolic] != 1 || codes[vigil.LOINCDiastolic] != 0 || codes[vigil.LOINCHeartRate] != 1 {
		t.Fatalf("all codes: %v", codes)
	}
	only, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Codes: []string{vigil.LOINCSystolic}})
	must(t, err)
	if len(only) != 3 {
		t.Fatalf("systolic alone: %d, want 3", len(only))
	}
	latest, err := s.LatestObservations(ctx, "p1", nil, 1)
	must(t, err)
	if l := latest[vigil.LOINCBPPanel]; len(l) != 1 || l[0].Components[0].Value != 135 {
		t.Fatalf("latest panel: %+v", latest)
	}
}

// testMethods: one device reports heart rate from its ECG and pulse rate
// from its oximeter (both 8867-4) at the same time, in separate readings
// (as an HL7 v2 gateway does, one OBX each): both values are kept, as
// observations with their own ids and methods.
func testMethods(t *testing.T, s vigil.Store, settle func(*testing.T, vigil.Store)) {
	closeStore(t, s)
	ecg, ox := hr(60), hr(64)
	ecg.Method, ox.Method = "147842", "149530"
	withOrigin := reading("mon", "1", "p1", T0, ecg)
	withOrigin.Origin = &vigil.Origin{Location: "3 WEST ICU^3001^1", Containment: "1.6.1.1"}
	_, err := s.AppendReadings(ctx, []*vigil.Reading{
		withOrigin,
		reading("mon", "2", "p1", T0, ox),
		reading("mon", "3", "p1", T0.Add(time.Second), hr(70)), // no method
	})
	must(t, err)
	if settle != nil {
		settle(t, s)
	}
	obs, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Codes: []string{vigil.LOINCHeartRate}})
	must(t, err)
	got := map[string]float64{}
	for _, o := range obs {
		got[o.Method] = o.Value
		back, err := s.FindObservationByID(ctx, o.ID)
		must(t, err)
		if back.Value != o.Value || back.Method != o.Method {
			t.Fatalf("by id %s: %+v, want %+v", o.ID, back, o)
		}
	}
	if len(obs) != 3 || got["147842"] != 60 || got["149530"] != 64 || got[""] != 70 {
		t.Fatalf("observations: %+v", obs)
	}
	latest, err := s.LatestObservations(ctx, "p1", []string{vigil.LOINCHeartRate}, 3)
	must(t, err)
	if l := latest[vigil.LOINCHeartRate]; len(l) != 3 || l[0].Value != 70 {
		t.Fatalf("latest: %+v", latest)
	}
	// Stores that keep where a value was taken give it back on request.
	if origins, ok := s.(interface {
		FillOrigins(context.Context, []*vigil.Observation) error
	}); ok {
		must(t, origins.FillOrigins(ctx, obs))
		for _, o := range obs {
			if want := o.Method == "147842"; (o.Origin != nil) != want || (want && o.Origin.Containment != "1.6.1.1") {
				t.Fatalf("origin of %s (method %q): %+v", o.ID, o.Method, o.Origin)
			}
		}
	}
}

// testSampledData: a wearable's heart rate under a MedTech SampledData
// mapping (a value a second, one Observation per hour) is served, when
// asked, as one observation per hour holding its values, merged in time
// order with another device's plain values, paged without repeats or
// gaps both ways, found by id and cut by a date range.
func testSampledData(t *testing.T, s vigil.Store, settle func(*testing.T, vigil.Store)) {
	closeStore(t, s)
	sampled := func(v float64) vigil.Measurement {
		m := hr(v)
		m.Sampling = &vigil.Sampling{PeriodMS: 1000, IntervalMin: 60}
		return m
	}
	_, err := s.AppendReadings(ctx, []*vigil.Reading{
		reading("band", "1", "p1", T0, sampled(70)),
		reading("band", "2", "p1", T0.Add(time.Second), sampled(71)),
		reading("band", "3", "p1", T0.Add(3*time.Second), sampled(73)),
		reading("band", "4", "p1", T0.Add(time.Hour+5*time.Second), sampled(80)),
		reading("band", "5", "p1", T0.Add(2*time.Hour), sampled(90)),
		reading("mon", "1", "p1", T0.Add(30*time.Minute), hr(66)),
	})
	must(t, err)
	if settle != nil {
		settle(t, s)
	}
	f := vigil.ObservationFilter{PatientID: "p1", Codes: []string{vigil.LOINCHeartRate}, SampledData: true}
	all, _, err := s.FindObservations(ctx, f)
	must(t, err)
	type view struct {
		at   time.Duration
		data string
	}
	var got []view
	for _, o := range all {
		v := view{at: o.Time.Sub(T0)}
		if o.Sampled != nil {
			v.data = o.Sampled.Data
			if !o.Sampled.End.Equal(o.Time.Add(time.Hour)) || o.Sampled.PeriodMS != 1000 || o.DeviceID != "band" {
				t.Fatalf("period: %+v %+v", o, o.Sampled)
			}
		}
		got = append(got, v)
	}
	want := []view{{0, "70 71 E 73"}, {30 * time.Minute, ""}, {time.Hour, "E E E E E 80"}, {2 * time.Hour, "90"}}
	if !slices.Equal(got, want) {
		t.Fatalf("periods: %+v, want %+v", got, want)
	}
	byID, err := s.FindObservationByID(ctx, all[2].ID)
	must(t, err)
	if byID.Sampled == nil || byID.Sampled.Data != "E E E E E 80" || byID.Value != 80 {
		t.Fatalf("period by id %s: %+v", all[2].ID, byID)
	}
	for _, desc := range []bool{false, true} {
		pf := f
		pf.Desc, pf.Limit = desc, 1
		var ids []string
		for {
			page, cursor, err := s.FindObservations(ctx, pf)
			must(t, err)
			for _, o := range page {
				ids = append(ids, o.ID)
			}
			if pf.Cursor = cursor; cursor == "" || len(ids) > 10 {
				break
			}
		}
		wantIDs := []string{all[0].ID, all[1].ID, all[2].ID, all[3].ID}
		if desc {
			slices.Reverse(wantIDs)
		}
		if !slices.Equal(ids, wantIDs) {
			t.Fatalf("pages (desc %v): %v, want %v", desc, ids, wantIDs)
		}
	}
	cut := f
	cut.From, cut.To = T0.Add(2*time.Second), T0.Add(time.Hour+time.Second)
	part, _, err := s.FindObservations(ctx, cut)
	must(t, err)
	if len(part) != 2 || part[0].Sampled == nil || part[0].Sampled.Data != "E E E 73" || part[0].Sampled.Count != 1 || part[1].Value != 66 {
		t.Fatalf("date range: %+v", part)
	}
	plain, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Codes: []string{vigil.LOINCHeartRate}})
	must(t, err)
	if len(plain) != 6 || plain[0].Sampled != nil {
		t.Fatalf("values one by one: %d", len(plain))
	}
}

// testTextValues: text and coded values are kept and served in time order
// with their codes, by id and newest first.
func testTextValues(t *testing.T, s vigil.Store, settle func(*testing.T, vigil.Store)) {
	closeStore(t, s)
	const posture = "8361-8"
	lying := &vigil.Concept{Text: "Lying", Coding: []vigil.Coding{{System: "http://snomed.info/sct", Code: "102538003"}}}
	_, err := s.AppendReadings(ctx, []*vigil.Reading{
		reading("band", "1", "p1", T0, vigil.Measurement{Code: posture, Text: "sitting"}),
		reading("band", "2", "p1", T0.Add(time.Minute), vigil.Measurement{Code: posture, Concept: lying}, hr(60)),
	})
	must(t, err)
	if settle != nil {
		settle(t, s)
	}
	obs, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Codes: []string{posture}})
	must(t, err)
	if len(obs) != 2 || obs[0].Text != "sitting" || obs[1].Concept == nil || obs[1].Concept.Coding[0].Code != "102538003" || !obs[1].Time.Equal(T0.Add(time.Minute)) {
		t.Fatalf("text values: %+v", obs)
	}
	back, err := s.FindObservationByID(ctx, obs[1].ID)
	must(t, err)
	if back.Concept == nil || back.Concept.Text != "Lying" {
		t.Fatalf("by id: %+v", back)
	}
	latest, err := s.LatestObservations(ctx, "p1", nil, 1)
	must(t, err)
	if l := latest[posture]; len(l) != 1 || l[0].Concept == nil || latest[vigil.LOINCHeartRate][0].Value != 60 {
		t.Fatalf("latest: %+v", latest)
	}
}

func testAlerts(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	for i, st := range []string{vigil.AlertFiring, vigil.AlertResolved, vigil.AlertAcknowledged} {
		a := &vigil.Alert{ID: fmt.Sprint("a", i), PatientID: fmt.Sprint("p", i%2), RuleID: "spo2-low", State: st, Raised: T0.Add(time.Duration(i) * time.Minute)}
		must(t, s.SaveAlert(ctx, a))
	}
	a, err := s.FindAlertByID(ctx, "a1")
	must(t, err)
	a.State = vigil.AlertFiring
	a.Raised = T0.Add(time.Hour) // re-raised: the index must follow
	must(t, s.SaveAlert(ctx, a))
	as, err := s.FindAlerts(ctx, vigil.AlertFilter{})
	must(t, err)
	if len(as) != 3 || as[0].ID != "a1" || as[1].ID != "a2" {
		t.Fatalf("alerts newest first: %v", ids(as))
	}
	as, err = s.FindAlerts(ctx, vigil.AlertFilter{States: []string{vigil.AlertFiring}, PatientID: "p0"})
	must(t, err)
	if len(as) != 1 || as[0].ID != "a0" {
		t.Fatalf("filtered: %v", ids(as))
	}
	as, err = s.FindAlerts(ctx, vigil.AlertFilter{Limit: 1})
	must(t, err)
	if len(as) != 1 {
		t.Fatal("limit ignored")
	}
	_, err = s.FindAlertByID(ctx, "zz")
	wantCode(t, err, vigil.ENOTFOUND)
}

func ids(as []*vigil.Alert) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

func testDeadLetters(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	for i := 0; i < 3; i++ {
		must(t, s.AddDeadLetter(ctx, &vigil.DeadLetter{Time: T0.Add(time.Duration(i) * time.Second), Source: "mqtt", DeviceID: fmt.Sprint("d", i%2), Reason: "malformed", Payload: []byte("{")}))
	}
	ds, err := s.FindDeadLetters(ctx, vigil.DeadLetterFilter{})
	must(t, err)
	if len(ds) != 3 || !ds[0].Time.Equal(T0.Add(2*time.Second)) || ds[0].ID == "" || string(ds[0].Payload) != "{" {
		t.Fatalf("dead letters: %+v", ds)
	}
	ds, err = s.FindDeadLetters(ctx, vigil.DeadLetterFilter{DeviceID: "d1"})
	must(t, err)
	if len(ds) != 1 {
		t.Fatalf("by device: %d", len(ds))
	}
	one, err := s.FindDeadLetterByID(ctx, ds[0].ID)
	must(t, err)
	if one.ID != ds[0].ID || string(one.Payload) != "{" {
		t.Fatalf("by id: %+v", one)
	}
	must(t, s.DeleteDeadLetter(ctx, ds[0].ID))
	wantCode(t, s.DeleteDeadLetter(ctx, ds[0].ID), vigil.ENOTFOUND)
	_, err = s.FindDeadLetterByID(ctx, ds[0].ID)
	wantCode(t, err, vigil.ENOTFOUND)
}

func testMappings(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	m := &vigil.Mapping{ID: "acme-hr", DeviceTemplate: []byte(`{"v":1}`), FhirTemplate: []byte(`{}`), Kinds: []string{vigil.DeviceWearable}}
	must(t, s.SaveMapping(ctx, m))
	m2 := &vigil.Mapping{ID: "acme-hr", DeviceTemplate: []byte(`{"v":2}`), FhirTemplate: []byte(`{}`), Devices: []string{"w1"}}
	must(t, s.SaveMapping(ctx, m2))
	must(t, s.SaveMapping(ctx, &vigil.Mapping{ID: "other", DeviceTemplate: []byte(`{}`), FhirTemplate: []byte(`{}`)}))
	if m.Version != 1 || m2.Version != 2 || m2.Saved.IsZero() {
		t.Fatalf("versions %d %d", m.Version, m2.Version)
	}
	latest, err := s.FindMapping(ctx, "acme-hr", 0)
	must(t, err)
	if latest.Version != 2 || string(latest.DeviceTemplate) != `{"v":2}` || latest.Devices[0] != "w1" {
		t.Fatalf("latest: %+v", latest)
	}
	v1, err := s.FindMapping(ctx, "acme-hr", 1)
	must(t, err)
	if string(v1.DeviceTemplate) != `{"v":1}` {
		t.Fatalf("v1: %+v", v1)
	}
	_, err = s.FindMapping(ctx, "nope", 0)
	wantCode(t, err, vigil.ENOTFOUND)
	all, err := s.FindMappings(ctx)
	must(t, err)
	if len(all) != 2 || all[0].ID != "acme-hr" || all[0].Version != 2 {
		t.Fatalf("all: %+v", all)
	}
	wantCode(t, s.SaveMapping(ctx, &vigil.Mapping{ID: "bad id"}), vigil.EINVALID)
}

func testRules(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	r := &vigil.Rule{ID: "hr-rising", Title: "HR rising", Expr: `change("8867-4", duration("10m")) > 20`, Priority: vigil.PriorityMedium, Enabled: true, SavedBy: "u1"}
	must(t, s.SaveRule(ctx, r))
	r2 := &vigil.Rule{ID: "hr-rising", Title: "HR rising", Expr: `change("8867-4", duration("10m")) > 25`, Priority: vigil.PriorityMedium, Enabled: false, Note: "too noisy", SavedBy: "u2"}
	must(t, s.SaveRule(ctx, r2))
	must(t, s.SaveRule(ctx, &vigil.Rule{ID: "a-other", Expr: "true", Priority: vigil.PriorityLow}))
	if r.Version != 1 || r2.Version != 2 || r2.Saved.IsZero() {
		t.Fatalf("versions %d %d", r.Version, r2.Version)
	}
	latest, err := s.FindRule(ctx, "hr-rising", 0)
	must(t, err)
	if latest.Version != 2 || latest.Enabled || latest.Note != "too noisy" || latest.SavedBy != "u2" {
		t.Fatalf("latest: %+v", latest)
	}
	v1, err := s.FindRule(ctx, "hr-rising", 1)
	must(t, err)
	if !v1.Enabled || v1.Expr != r.Expr {
		t.Fatalf("v1: %+v", v1)
	}
	_, err = s.FindRule(ctx, "nope", 0)
	wantCode(t, err, vigil.ENOTFOUND)
	_, err = s.FindRule(ctx, "hr-rising", 3)
	wantCode(t, err, vigil.ENOTFOUND)
	all, err := s.FindRules(ctx)
	must(t, err)
	if len(all) != 2 || all[0].ID != "a-other" || all[1].Version != 2 {
		t.Fatalf("all: %+v", all)
	}
	h, err := s.RuleHistory(ctx, "hr-rising")
	must(t, err)
	if len(h) != 2 || h[0].Version != 1 || h[1].Version != 2 {
		t.Fatalf("history: %+v", h)
	}
	_, err = s.RuleHistory(ctx, "nope")
	wantCode(t, err, vigil.ENOTFOUND)
	wantCode(t, s.SaveRule(ctx, &vigil.Rule{ID: "bad id"}), vigil.EINVALID)
}

func testEvents(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	t0 := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	ev := func(dev, id string, at time.Duration) *vigil.DeviceEvent {
		return &vigil.DeviceEvent{DeviceID: dev, ID: id, PatientID: "p1", Type: vigil.EventBottleOpened, Time: t0.Add(at), Received: t0.Add(at)}
	}
	res, err := s.AppendEvents(ctx, []*vigil.DeviceEvent{ev("b1", "e2", time.Hour), ev("b1", "e1", 0), ev("b1", "e1", 0)})
	must(t, err)
	if res[0].Duplicate || res[1].Duplicate || !res[2].Duplicate {
		t.Fatalf("results: %+v", res)
	}
	res, err = s.AppendEvents(ctx, []*vigil.DeviceEvent{ev("b1", "e1", 0), ev("b2", "e1", 2*time.Hour)})
	must(t, err)
	if !res[0].Duplicate || res[1].Duplicate {
		t.Fatalf("again: %+v", res)
	}
	got, err := s.FindEvents(ctx, "p1", t0, t0.Add(2*time.Hour))
	must(t, err)
	if len(got) != 2 || got[0].ID != "e1" || got[1].ID != "e2" || got[0].Type != vigil.EventBottleOpened {
		t.Fatalf("events: %+v", got)
	}
	if got, _ := s.FindEvents(ctx, "p2", t0, t0.Add(24*time.Hour)); len(got) != 0 {
		t.Fatalf("another patient: %+v", got)
	}
	_, err = s.AppendEvents(ctx, []*vigil.DeviceEvent{{DeviceID: "b1", ID: "x"}})
	wantCode(t, err, vigil.EINVALID)
}

func testReviews(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	t0 := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	for i, m := range []int{10, 15, 5} {
		must(t, s.AddReview(ctx, &vigil.Review{ID: fmt.Sprintf("r%d", i), PatientID: "p1", By: "dr", At: t0.Add(time.Duration(2-i) * 24 * time.Hour), Minutes: m}))
	}
	got, err := s.FindReviews(ctx, "p1", t0, t0.Add(48*time.Hour))
	must(t, err)
	if len(got) != 2 || got[0].ID != "r2" || got[1].ID != "r1" || got[1].Minutes != 15 {
		t.Fatalf("reviews: %+v", got)
	}
	wantCode(t, s.AddReview(ctx, &vigil.Review{ID: "x"}), vigil.EINVALID)
}

// day is a date at midnight UTC.
func day(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

func testSubscriptions(t *testing.T, s vigil.Store) {
	closeStore(t, s)
	a := &vigil.Subscription{ID: "s1", Owner: "dr", Topic: "https://example.org/topic", Channel: "rest-hook", Endpoint: "https://ehr.example/hook",
		Headers: []string{"Authorization: Bearer x"}, Payload: "full-resource", Status: vigil.SubscriptionActive, Events: 7, Created: T0}
	must(t, s.SaveSubscription(ctx, a))
	must(t, s.SaveSubscription(ctx, &vigil.Subscription{ID: "s0", Owner: "nurse", Channel: "websocket", Status: vigil.SubscriptionRequested}))
	a.Events, a.Status, a.Error = 9, vigil.SubscriptionError, "endpoint answered 500"
	must(t, s.SaveSubscription(ctx, a))
	wantCode(t, s.SaveSubscription(ctx, &vigil.Subscription{ID: "bad id"}), vigil.EINVALID)
	subs, err := s.FindSubscriptions(ctx)
	must(t, err)
	if len(subs) != 2 || subs[0].ID != "s0" || subs[1].Events != 9 || subs[1].Error == "" || subs[1].Headers[0] != "Authorization: Bearer x" || !subs[1].Created.Equal(T0) {
		t.Fatalf("subscriptions: %+v", subs)
	}
	must(t, s.DeleteSubscription(ctx, "s1"))
	must(t, s.DeleteSubscription(ctx, "nope"))
	if subs, _ = s.FindSubscriptions(ctx); len(subs) != 1 {
		t.Fatalf("after delete: %d", len(subs))
	}
}
