package sim

import (
	"math"
	"math/rand/v2"
	"time"
)

// Vitals is one simulated moment of a patient.
type Vitals struct {
	HR, SpO2, RR, Temp, SBP, DBP, Glucose float64
}

// physio is a patient's physiology: a baseline, circadian drift, noise
// (AR(1) processes, heart and respiratory rate sharing one driver so they
// move together) and, for some patients, a sepsis-like deterioration.
type physio struct {
	base         Vitals
	rng          *rand.Rand
	deteriorates bool
	onset        time.Duration // simulated time after start when it begins
	course       time.Duration // how long until fully developed
	// AR(1) noise states
	drive, rrOwn, spo2, temp, bp, glu float64
}

func newPhysio(rng *rand.Rand, deteriorates bool) *physio {
	u := func(lo, hi float64) float64 { return lo + rng.Float64()*(hi-lo) }
	p := &physio{
		base: Vitals{
			HR: u(62, 90), SpO2: u(95, 99), RR: u(13, 18), Temp: u(36.4, 37.2),
			SBP: u(110, 140), Glucose: u(85, 140),
		},
		rng:          rng,
		deteriorates: deteriorates,
		onset:        time.Duration(u(2, 15) * float64(time.Minute)),
		course:       time.Duration(u(30, 90) * float64(time.Minute)),
	}
	p.base.DBP = p.base.SBP*0.6 + u(-5, 5)
	return p
}

// severity is the deterioration's progress in [0, 1] after simulated
// time elapsed (smooth start and end).
func (p *physio) severity(elapsed time.Duration) float64 {
	if !p.deteriorates || elapsed <= p.onset {
		return 0
	}
	x := math.Min(1, float64(elapsed-p.onset)/float64(p.course))
	return x * x * (3 - 2*x)
}

// step advances the noise by one sample and returns the vitals at wall
// time now, simulated time elapsed since the start.
func (p *physio) step(now time.Time, elapsed time.Duration) Vitals {
	n := p.rng.NormFloat64
	p.drive = 0.95*p.drive + n()*0.6
	p.rrOwn = 0.9*p.rrOwn + n()*0.2
	p.spo2 = 0.9*p.spo2 + n()*0.3
	p.temp = 0.98*p.temp + n()*0.02
	p.bp = 0.9*p.bp + n()*1.5
	p.glu = 0.95*p.glu + n()*2

	h := float64(now.Hour()) + float64(now.Minute())/60
	circ := math.Sin(2 * math.Pi * (h - 10) / 24) // highest in the afternoon
	d := p.severity(elapsed)
	v := Vitals{
		HR:      p.base.HR + 4*circ + 2*p.drive + 50*d,
		RR:      p.base.RR + 0.5*circ + 0.6*p.drive + p.rrOwn + 14*d,
		SpO2:    p.base.SpO2 + p.spo2 - 9*d,
		Temp:    p.base.Temp + 0.3*circ + p.temp + 1.9*d,
		SBP:     p.base.SBP + 6*circ + p.bp - 45*d,
		Glucose: p.base.Glucose + p.glu + 40*d,
	}
	v.DBP = p.base.DBP + 4*circ + 0.6*p.bp - 22*d
	return v.clamp()
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

// clamp keeps values physiologically possible and rounds them as devices
// report them.
func (v Vitals) clamp() Vitals {
	return Vitals{
		HR:      math.Round(clamp(v.HR, 30, 220)),
		SpO2:    math.Round(clamp(v.SpO2, 70, 100)),
		RR:      math.Round(clamp(v.RR, 6, 50)),
		Temp:    math.Round(clamp(v.Temp, 34, 42)*10) / 10,
		SBP:     math.Round(clamp(v.SBP, 60, 220)),
		DBP:     math.Round(clamp(v.DBP, 30, 130)),
		Glucose: math.Round(clamp(v.Glucose, 40, 400)),
	}
}
