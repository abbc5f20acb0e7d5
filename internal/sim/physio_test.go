package sim

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil/internal/news2"
)

func TestPlausibleOverADay(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		p := newPhysio(rand.New(rand.NewPCG(seed, 1)), false)
		start := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
		for s := 0; s < 86400; s += 5 {
			v := p.step(start.Add(time.Duration(s)*time.Second), time.Duration(s)*time.Second)
			if v.HR < 42 || v.HR > 120 || v.SpO2 < 90 || v.SpO2 > 100 || v.RR < 8 || v.RR > 26 || v.Temp < 35.5 || v.Temp > 38 || v.SBP < 90 || v.SBP > 170 || v.DBP >= v.SBP {
				t.Fatalf("seed %d at %ds: a stable patient has implausible vitals %+v", seed, s, v)
			}
		}
	}
}

func TestHeartAndRespiratoryRateMoveTogether(t *testing.T) {
	p := newPhysio(rand.New(rand.NewPCG(7, 1)), false)
	start := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	var hr, rr []float64
	for s := 0; s < 20000; s++ {
		v := p.step(start.Add(time.Duration(s)*time.Second), 0)
		hr, rr = append(hr, v.HR), append(rr, v.RR)
	}
	if c := corr(hr, rr); c < 0.3 {
		t.Fatalf("HR–RR correlation %.2f, want clearly positive", c)
	}
}

func corr(a, b []float64) float64 {
	var ma, mb float64
	for i := range a {
		ma += a[i]
		mb += b[i]
	}
	ma /= float64(len(a))
	mb /= float64(len(b))
	var sab, saa, sbb float64
	for i := range a {
		sab += (a[i] - ma) * (b[i] - mb)
		saa += (a[i] - ma) * (a[i] - ma)
		sbb += (b[i] - mb) * (b[i] - mb)
	}
	return sab / math.Sqrt(saa*sbb)
}

// A deteriorating patient crosses NEWS2 red thresholds within the course
// plus onset (≤ 105 simulated minutes) and a stable one never does.
func TestDeterioration(t *testing.T) {
	for seed := uint64(0); seed < 10; seed++ {
		p := newPhysio(rand.New(rand.NewPCG(seed, 2)), true)
		start := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
		var v Vitals
		for s := 0; s <= 105*60; s += 10 {
			v = p.step(start.Add(time.Duration(s)*time.Second), time.Duration(s)*time.Second)
		}
		if v.HR < 110 || v.RR < 24 || v.Temp < 38.2 || v.SBP > 100 || v.SpO2 > 92 {
			t.Errorf("seed %d: after 105 min of sepsis vitals are %+v", seed, v)
		}
		if p.severity(p.onset) != 0 || p.severity(p.onset+p.course) != 1 {
			t.Errorf("severity bounds")
		}
	}
}

// Scenario: NEWS2 over the simulated physiology (air, alert, scale 1).
// A sepsis-like course reaches the medium band before the high band; a
// stable noisy patient stays in the low band for 24 hours.
func TestNEWS2Scenarios(t *testing.T) {
	score := func(v Vitals, at time.Time) news2.Result {
		val := func(x float64) *news2.Value { return &news2.Value{Value: x, Time: at} }
		air := false
		return news2.Score(news2.Input{RespRate: val(v.RR), SpO2: val(v.SpO2), Systolic: val(v.SBP), Pulse: val(v.HR), Temperature: val(v.Temp),
			ACVPU: &news2.Value{Text: "A", Time: at}, OnOxygen: &air, OxygenTime: at}, at, time.Hour)
	}
	start := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	falseAlerts := 0
	for seed := uint64(0); seed < 10; seed++ {
		p := newPhysio(rand.New(rand.NewPCG(seed, 9)), true)
		var medium, high time.Duration = -1, -1
		for s := 0; s <= 3*3600; s += 30 {
			el := time.Duration(s) * time.Second
			r := score(p.step(start.Add(el), el), start.Add(el))
			if r.Band == news2.BandMedium && medium < 0 {
				medium = el
			}
			if r.Band == news2.BandHigh && high < 0 {
				high = el
			}
		}
		if medium < 0 || high < 0 || medium >= high {
			t.Errorf("seed %d: medium at %v, high at %v; want medium first, then high", seed, medium, high)
		}
		stable := newPhysio(rand.New(rand.NewPCG(seed, 10)), false)
		for s := 0; s <= 24*3600; s += 60 {
			el := time.Duration(s) * time.Second
			if r := score(stable.step(start.Add(el), el), start.Add(el)); r.Band != news2.BandLow {
				falseAlerts++
				break
			}
		}
	}
	if falseAlerts > 0 {
		t.Errorf("%d of 10 stable patients left the low band within 24 h", falseAlerts)
	}
}
