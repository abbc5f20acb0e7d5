package pubhealth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Kiosk temperatures of two regions over 30 days; from day 25 an outbreak
// in OX1 gives a third of its 120 patients fever each day (about 6 a day
// have fever anyway). The noisy daily
// counts signal it in OX1 and not in the quiet region, and a repeated
// query sees exactly the same noisy counts (asking again reveals nothing).
func TestSignals(t *testing.T) {
	c := newCohort(t)
	rng := rand.New(rand.NewPCG(7, 8))
	start := monday.AddDate(0, 0, -21)
	for _, region := range []string{"OX1 2JD", "CB2 1TN"} {
		for i := range 120 {
			id := fmt.Sprintf("%s-%d", region[:3], i)
			if err := c.st.CreatePatient(ctx, &vigil.Patient{ID: id, PostalCode: region}); err != nil {
				t.Fatal(err)
			}
			var rs []*vigil.Reading
			for d := range 30 {
				temp := 36.8
				if rng.IntN(20) == 0 || region[:3] == "OX1" && d >= 25 && i%3 == 0 {
					temp = 38.6
				}
				at := start.AddDate(0, 0, d).Add(10 * time.Hour)
				rs = append(rs, &vigil.Reading{DeviceID: "kiosk", ID: fmt.Sprint(id, "-", d), PatientID: id, Time: at, Received: at,
					Values: []vigil.Measurement{{Code: vigil.LOINCBodyTemp, Value: temp, Unit: "Cel"}}})
			}
			if _, err := c.st.AppendReadings(ctx, rs); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Someone without a postal code, feverish throughout: in no region,
	// so in no signal (len(s.Regions) == 2 below).
	if err := c.st.CreatePatient(ctx, &vigil.Patient{ID: "nowhere"}); err != nil {
		t.Fatal(err)
	}
	var rs []*vigil.Reading
	for d := range 30 {
		at := start.AddDate(0, 0, d).Add(10 * time.Hour)
		rs = append(rs, &vigil.Reading{DeviceID: "kiosk", ID: fmt.Sprint("nowhere-", d), PatientID: "nowhere", Time: at, Received: at,
			Values: []vigil.Measurement{{Code: vigil.LOINCBodyTemp, Value: 39, Unit: "Cel"}}})
	}
	if _, err := c.st.AppendReadings(ctx, rs); err != nil {
		t.Fatal(err)
	}
	// A fixed key: the noise, and so the test, is the same on every run
	// (TestKeyedLaplace checks the noise's distribution).
	secret := []byte("fixed research secret for tests!")
	o := SignalOptions{From: start.AddDate(0, 0, 10), To: start.AddDate(0, 0, 30), Secret: secret}
	s, err := Signals(ctx, c.st, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Regions) != 2 || len(s.Regions[0].Days) != 20 {
		t.Fatalf("regions %d, days %d", len(s.Regions), len(s.Regions[0].Days))
	}
	outbreak := start.AddDate(0, 0, 25).Format("2006-01-02")
	var inOX1 int
	first := ""
	falseDays := map[string]bool{} // region-days outside the outbreak with any signal
	for _, sg := range s.Signals {
		switch {
		case sg.Region == "OX1" && sg.Date >= outbreak:
			inOX1++
			if first == "" || sg.Date < first {
				first = sg.Date
			}
		default:
			falseDays[sg.Region+sg.Date] = true
		}
	}
	elsewhere := len(falseDays)
	t.Logf("OX1: first signal %s (outbreak from %s), %d signals in it; %d of 35 quiet region-days with a signal", first, outbreak, inOX1, elsewhere)
	if inOX1 == 0 || first > start.AddDate(0, 0, 26).Format("2006-01-02") {
		t.Fatalf("the outbreak was not signalled within two days: first %q", first)
	}
	if elsewhere > 7 {
		t.Fatalf("%d of 35 quiet region-days signalled", elsewhere)
	}
	again, err := Signals(ctx, c.st, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.Regions {
		for d := range s.Regions[i].Days {
			if s.Regions[i].Days[d].Fever != again.Regions[i].Days[d].Fever {
				t.Fatal("a repeated query saw different noise: averaging would remove it")
			}
		}
	}
}

// The keyed noise is Laplace with the asked scale.
func TestKeyedLaplace(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	var sum, abs float64
	const n = 20000
	for i := range n {
		x := keyedLaplace(key, fmt.Sprint(i), 2)
		sum += x
		abs += math.Abs(x)
	}
	if mean, mad := sum/n, abs/n; math.Abs(mean) > 0.1 || math.Abs(mad-2) > 0.1 {
		t.Fatalf("mean %v, mean |x| %v; want 0 and 2 (the scale)", mean, mad)
	}
}
