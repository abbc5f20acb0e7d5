package news2

import (
	"testing"
	"time"
)

// Every boundary of the RCP table (../shared/testdata/clinical/news2.md).
func TestParameterBoundaries(t *testing.T) {
	cases := []struct {
		name string
		f    func(float64) int
		in   []float64
		want []int
	}{
		{"respiration", respScore, []float64{8, 9, 11, 12, 20, 21, 24, 25}, []int{3, 1, 1, 0, 0, 2, 2, 3}},
		{"SpO2 scale 1", spo2Scale1, []float64{91, 92, 93, 94, 95, 96, 100}, []int{3, 2, 2, 1, 1, 0, 0}},
		{"systolic", sbpScore, []float64{90, 91, 100, 101, 110, 111, 219, 220}, []int{3, 2, 2, 1, 1, 0, 0, 3}},
		{"pulse", pulseScore, []float64{40, 41, 50, 51, 90, 91, 110, 111, 130, 131}, []int{3, 1, 1, 0, 0, 1, 1, 2, 2, 3}},
		{"temperature", tempScore, []float64{35.0, 35.1, 36.0, 36.1, 38.0, 38.1, 39.0, 39.1}, []int{3, 1, 1, 0, 0, 1, 1, 2}},
	}
	for _, c := range cases {
		for i, v := range c.in {
			if got := c.f(v); got != c.want[i] {
				t.Errorf("%s %g = %d, want %d", c.name, v, got, c.want[i])
			}
		}
	}
	for _, c := range []struct {
		v    float64
		o2   bool
		want int
	}{{83, false, 3}, {84, false, 2}, {85, false, 2}, {86, false, 1}, {87, false, 1}, {88, false, 0}, {92, false, 0}, {93, false, 0}, {99, false, 0},
		{93, true, 1}, {94, true, 1}, {95, true, 2}, {96, true, 2}, {97, true, 3}} {
		if got := spo2Scale2(c.v, c.o2); got != c.want {
			t.Errorf("scale 2 SpO2 %g oxygen=%v = %d, want %d", c.v, c.o2, got, c.want)
		}
	}
}

func full(rr, spo2, sbp, pulse, temp float64, acvpu string, oxygen bool, at time.Time) Input {
	v := func(x float64) *Value { return &Value{Value: x, Time: at} }
	return Input{RespRate: v(rr), SpO2: v(spo2), Systolic: v(sbp), Pulse: v(pulse), Temperature: v(temp),
		ACVPU: &Value{Text: acvpu, Time: at}, OnOxygen: &oxygen, OxygenTime: at}
}

func TestBands(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name  string
		in    Input
		total int
		band  string
	}{
		{"healthy", full(16, 98, 125, 70, 37, "A", false, now), 0, BandLow},
		{"some", full(22, 95, 125, 95, 37, "A", false, now), 4, BandLow},
		{"single 3", full(16, 98, 125, 70, 37, "V", false, now), 3, BandLowMedium},
		{"medium", full(22, 94, 105, 95, 38.5, "A", false, now), 6, BandMedium},
		{"sepsis", full(26, 90, 88, 125, 39.5, "A", true, now), 15, BandHigh},
	} {
		r := Score(c.in, now, time.Hour)
		if r.Total != c.total || r.Band != c.band || !r.Complete {
			t.Errorf("%s: total %d band %s complete %v, want %d %s", c.name, r.Total, r.Band, r.Complete, c.total, c.band)
		}
	}
}

func TestStaleAndMissingAreNamed(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	in := full(26, 98, 125, 70, 37, "A", false, now)
	in.Temperature.Time = now.Add(-3 * time.Hour) // stale
	in.Temperature.Value = 40                     // would score 2 if it counted
	in.ACVPU = nil                                // never recorded
	r := Score(in, now, time.Hour)
	if r.Complete || r.Total != 3 || r.Band != BandLowMedium || r.Note == "" {
		t.Fatalf("%+v", r)
	}
	for _, p := range r.Parameters {
		switch p.Name {
		case Temperature:
			if p.Status != Stale || p.Score != 0 || p.Age != "3h0m0s" {
				t.Errorf("temperature: %+v", p)
			}
		case ACVPU:
			if p.Status != Missing {
				t.Errorf("ACVPU: %+v", p)
			}
		}
	}
}
