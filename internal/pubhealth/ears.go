package pubhealth

import "math"

// EARS is one of the CDC's Early Aberration Reporting System methods for
// daily syndromic counts (Hutwagner et al., J Urban Health 2003; as in R's
// surveillance::earsC):
//
//	C1 (mild):   baseline the 7 days before day t; C1_t = (x_t − μ) / σ
//	C2 (medium): baseline days t−9 … t−3 (a 2-day guard band, so an
//	             outbreak's first days do not raise its own baseline)
//	C3 (ultra):  C3_t = Σ_{i=t−2…t} max(0, C2_i − 1)
//
// A day signals when C1 or C2 exceed 3, or C3 exceeds 2. σ is floored at
// MinSigma so that a flat run of zeros (or of rounded noisy counts) does
// not make one case an aberration.
type EARS int

// The methods.
const (
	C1 EARS = iota + 1
	C2
	C3
)

func (m EARS) String() string {
	return map[EARS]string{C1: "C1", C2: "C2", C3: "C3"}[m]
}

// Threshold is the statistic above which a day signals.
func (m EARS) Threshold() float64 {
	if m == C3 {
		return 2
	}
	return 3
}

// MinSigma is the smallest baseline standard deviation used.
const MinSigma = 1.0

// Statistics returns the method's statistic for each day of counts (NaN
// where the baseline is not complete yet).
func (m EARS) Statistics(counts []float64) []float64 {
	out := make([]float64, len(counts))
	if m == C3 {
		c2 := C2.Statistics(counts)
		for t := range counts {
			out[t] = math.NaN()
			if t < 2 || math.IsNaN(c2[t-2]) {
				continue
			}
			s := 0.0
			for i := t - 2; i <= t; i++ {
				s += math.Max(0, c2[i]-1)
			}
			out[t] = s
		}
		return out
	}
	lag := 1 // C1: days t−7 … t−1
	if m == C2 {
		lag = 3 // days t−9 … t−3
	}
	for t := range counts {
		out[t] = math.NaN()
		if t-lag-6 < 0 {
			continue
		}
		base := counts[t-lag-6 : t-lag+1]
		mu, sd := meanSD(base)
		out[t] = (counts[t] - mu) / math.Max(sd, MinSigma)
	}
	return out
}

// Signals reports, for each day, whether it signals.
func (m EARS) Signals(counts []float64) []bool {
	st := m.Statistics(counts)
	out := make([]bool, len(st))
	for i, s := range st {
		out[i] = s > m.Threshold()
	}
	return out
}

func meanSD(xs []float64) (mean, sd float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		sd += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(sd / float64(len(xs)-1))
}
