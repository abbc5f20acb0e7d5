package pubhealth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"math"
	"sort"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Biosurveillance: daily counts of patients with fever (a temperature of
// 38.0 °C or more that day) per region, made differentially private, and
// the EARS methods run on them (ears.go). What leaves Vigil is only the
// noisy counts and the signals computed from them (post-processing).
//
// The noise of a region-day is Laplace with scale 1/EpsilonPerDay, drawn
// from a keyed pseudorandom function of the region and day (HMAC-SHA256
// under a key derived from the research secret) and rounded to a whole
// count: every query sees the same noisy count, so asking again reveals
// nothing new, and a patient-day costs EpsilonPerDay once — the
// accounting of Google's COVID-19 search-trends releases (ε ≈ 1.7–2.2 per
// user-day). Rounding the noisy value also takes away the low bits that
// floating-point attacks on Laplace sampling use (Mironov 2012).

// DefaultEpsilonPerDay is the privacy cost of one patient-day's counts.
const DefaultEpsilonPerDay = 1.0

// SignalOptions say what to watch.
type SignalOptions struct {
	From, To      time.Time // the days reported (UTC); 9 days before From feed the baselines
	PostalChars   int       // region = postal prefix; 0: DefaultPostalChars
	EpsilonPerDay float64   // 0: DefaultEpsilonPerDay
	Secret        []byte    // the research secret (LoadOrCreateSecret)
}

// RegionDays is one region's noisy daily fever counts and EARS statistics.
type RegionDays struct {
	Region string     `json:"region"`
	Days   []DayCount `json:"days"`
}

// DayCount is one day of a region.
type DayCount struct {
	Date  string   `json:"date"`  // YYYY-MM-DD
	Fever int      `json:"fever"` // noisy count of patients with fever
	C1    *float64 `json:"c1,omitempty"`
	C2    *float64 `json:"c2,omitempty"`
	C3    *float64 `json:"c3,omitempty"`
}

// Signal is an aberration: a region-day where a method's statistic
// passed its threshold.
type Signal struct {
	Region    string  `json:"region"`
	Date      string  `json:"date"`
	Method    string  `json:"method"`
	Statistic float64 `json:"statistic"`
	Fever     int     `json:"fever"`
}

// EventID identifies the signal (region, date, method) wherever and
// whenever it is computed: public-health webhooks carry it so receivers
// can drop repeats.
func (s *Signal) EventID() string { return "ears:" + s.Method + ":" + s.Region + ":" + s.Date }

// Surveillance is the answer to a signals query.
type Surveillance struct {
	EpsilonPerDay float64      `json:"epsilonPerDay"`
	Regions       []RegionDays `json:"regions"`
	Signals       []Signal     `json:"signals"`
}

// Signals computes the noisy daily counts of [From, To) per region and
// the EARS signals in them.
func Signals(ctx context.Context, src Source, o SignalOptions) (*Surveillance, error) {
	if o.PostalChars <= 0 {
		o.PostalChars = DefaultPostalChars
	}
	if o.EpsilonPerDay <= 0 {
		o.EpsilonPerDay = DefaultEpsilonPerDay
	}
	if len(o.Secret) < 32 {
		return nil, vigil.Errorf(vigil.EINTERNAL, "no research secret")
	}
	day := 24 * time.Hour
	from, to := o.From.UTC().Truncate(day), o.To.UTC().Truncate(day)
	if !from.Before(to) || to.Sub(from) > 400*day {
		return nil, vigil.FieldErrorf("from", "invalid", "give from before to, at most 400 days apart")
	}
	start := from.Add(-9 * day) // C2's baseline reaches 9 days back
	n := int(to.Sub(start) / day)
	counts := map[string][]float64{}
	err := eachPatient(ctx, src, func(p *vigil.Patient) error {
		region := Region(p, o.PostalChars)
		if region == UnknownRegion {
			// No postal code: nowhere to send a public-health team, and a
			// "region" of scattered patients whose noisy counts would
			// raise signals about no place.
			return nil
		}
		series, err := src.ReadSeries(ctx, p.ID, vigil.LOINCBodyTemp, "", start, to, maxValues)
		if err != nil {
			return err
		}
		fever := map[int]bool{}
		for _, s := range series {
			for i, ms := range s.T {
				if s.V[i] >= FeverCelsius {
					fever[int(time.UnixMilli(ms).UTC().Sub(start)/day)] = true
				}
			}
		}
		if counts[region] == nil {
			counts[region] = make([]float64, n)
		}
		for d := range fever {
			if d >= 0 && d < n {
				counts[region][d]++ // each patient once per day
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	key := hmac.New(sha256.New, o.Secret)
	key.Write([]byte("signals\x00noise"))
	noiseKey := key.Sum(nil)
	out := &Surveillance{EpsilonPerDay: o.EpsilonPerDay}
	regions := make([]string, 0, len(counts))
	for r := range counts {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	for _, r := range regions {
		noisy := make([]float64, n)
		for d, x := range counts[r] {
			date := start.Add(time.Duration(d) * day).Format("2006-01-02")
			noisy[d] = math.Max(0, math.Round(x+keyedLaplace(noiseKey, r+"\x00"+date, 1/o.EpsilonPerDay)))
		}
		stats := map[EARS][]float64{C1: C1.Statistics(noisy), C2: C2.Statistics(noisy), C3: C3.Statistics(noisy)}
		rd := RegionDays{Region: r}
		for d := 9; d < n; d++ {
			dc := DayCount{Date: start.Add(time.Duration(d) * day).Format("2006-01-02"), Fever: int(noisy[d])}
			for _, m := range []EARS{C1, C2, C3} {
				v := stats[m][d]
				if math.IsNaN(v) {
					continue
				}
				v = math.Round(v*100) / 100
				switch m {
				case C1:
					dc.C1 = &v
				case C2:
					dc.C2 = &v
				case C3:
					dc.C3 = &v
				}
				if stats[m][d] > m.Threshold() {
					out.Signals = append(out.Signals, Signal{Region: r, Date: dc.Date, Method: m.String(), Statistic: v, Fever: dc.Fever})
				}
			}
			rd.Days = append(rd.Days, dc)
		}
		out.Regions = append(out.Regions, rd)
	}
	return out, nil
}

// keyedLaplace is a Laplace(0, scale) draw determined by key and label.
func keyedLaplace(key []byte, label string, scale float64) float64 {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	// u uniform in (0, 1), never 0 or 1.
	u := (float64(binary.BigEndian.Uint64(m.Sum(nil)[:8])>>11) + 0.5) / (1 << 53)
	if u < 0.5 {
		return scale * math.Log(2*u)
	}
	return -scale * math.Log(2*(1-u))
}
