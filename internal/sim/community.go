package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/pebble"
	"github.com/vigil-iomt/vigil/internal/pubhealth"
)

// CommunityOptions configure a community programme: people who check
// their vitals at kiosks and with home hubs, in regions, with an outbreak
// of a febrile illness injected into one region.
type CommunityOptions struct {
	Dir      string // data directory for the store (a temporary one)
	Regions  int    // 10
	Patients int    // per region, 150
	Days     int    // 120
	// Adherence is the chance a person checks in on a given day (0.6).
	Adherence float64
	// BaselineFever is the chance of fever at a check-in outside the
	// outbreak (0.04; a winter's background of febrile illness).
	BaselineFever float64
	// OutbreakRegion (0-based) gets an outbreak from OutbreakDay: the
	// chance of fever rises by OutbreakGrowth each day for 14 days.
	// OutbreakRegion < 0: none.
	OutbreakRegion, OutbreakDay int
	OutbreakGrowth              float64 // 0.02
	Seed                        uint64
	// Secret keys the counts' noise (nil: DIR/research-key, made anew for
	// a new directory, so each run draws other noise).
	Secret   []byte
	Progress func(done float64)
}

// CommunityReport is what the biosurveillance made of it.
type CommunityReport struct {
	Regions        int     `json:"regions"`
	Patients       int     `json:"patients"`
	Days           int     `json:"days"`
	Readings       int     `json:"readings"`
	OutbreakRegion string  `json:"outbreakRegion,omitempty"`
	OutbreakStart  string  `json:"outbreakStart,omitempty"`
	EpsilonPerDay  float64 `json:"epsilonPerDay"`
	// DaysToSignal is, per method, the days from the outbreak's start to
	// the first signal in its region (absent: none within 14 days).
	DaysToSignal map[string]int `json:"daysToSignal"`
	// FalseSignalsPerRegionMonth is, per method, the signals in regions
	// and days without an outbreak, per 30.44 region-days.
	FalseSignalsPerRegionMonth map[string]float64 `json:"falseSignalsPerRegionMonth"`
}

// Community simulates the programme on a real embedded store (on a
// simulated clock) and runs Vigil's biosurveillance — noisy daily fever
// counts per region and EARS C1–C3 (internal/pubhealth) — over it.
func Community(ctx context.Context, o CommunityOptions) (*CommunityReport, error) {
	if o.Regions <= 0 {
		o.Regions = 10
	}
	if o.Patients <= 0 {
		o.Patients = 150
	}
	if o.Days <= 0 {
		o.Days = 120
	}
	if o.Adherence <= 0 {
		o.Adherence = 0.6
	}
	if o.BaselineFever <= 0 {
		o.BaselineFever = 0.04
	}
	if o.OutbreakGrowth <= 0 {
		o.OutbreakGrowth = 0.02
	}
	if o.OutbreakRegion >= o.Regions || o.OutbreakRegion >= 0 && (o.OutbreakDay < 10 || o.OutbreakDay >= o.Days) {
		return nil, fmt.Errorf("the outbreak needs a region below %d and a day from 10 to %d", o.Regions, o.Days-1)
	}
	start := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	end := start.AddDate(0, 0, o.Days)
	so := pebble.DefaultOptions()
	so.CompactInterval = -1
	so.Now = func() time.Time { return end }
	store, err := pebble.Open(o.Dir, so)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	rng := rand.New(rand.NewPCG(o.Seed, 0xC0))
	rep := &CommunityReport{Regions: o.Regions, Patients: o.Regions * o.Patients, Days: o.Days, EpsilonPerDay: pubhealth.DefaultEpsilonPerDay,
		DaysToSignal: map[string]int{}, FalseSignalsPerRegionMonth: map[string]float64{}}
	region := func(r int) string { return fmt.Sprintf("R%02d", r) }
	for r := range o.Regions {
		for i := range o.Patients {
			id := fmt.Sprintf("c%02d-%04d", r, i)
			sex := []string{"female", "male"}[rng.IntN(2)]
			birth := start.AddDate(-20-rng.IntN(65), 0, -rng.IntN(365)).Format("2006-01-02")
			if err := store.CreatePatient(ctx, &vigil.Patient{ID: id, PostalCode: region(r) + " 1AA", BirthDate: birth, Sex: sex}); err != nil {
				return nil, err
			}
			device := "kiosk-" + region(r)
			if i%3 == 0 {
				device = "hub-" + id // a third check at home
			}
			var rs []*vigil.Reading
			for d := range o.Days {
				if rng.Float64() >= o.Adherence {
					continue
				}
				pFever := o.BaselineFever
				if r == o.OutbreakRegion && d >= o.OutbreakDay && d < o.OutbreakDay+14 {
					pFever += o.OutbreakGrowth * float64(d-o.OutbreakDay+1)
				}
				temp := 36.6 + rng.NormFloat64()*0.3
				spo2 := 97 + rng.NormFloat64()
				if rng.Float64() < pFever {
					temp = 38.0 + rng.Float64()*1.8
					spo2 -= 2
				}
				at := start.AddDate(0, 0, d).Add(time.Duration(8*3600+rng.IntN(10*3600)) * time.Second)
				rs = append(rs, &vigil.Reading{DeviceID: device, ID: fmt.Sprint(id, "-", d), PatientID: id, Time: at, Received: at,
					Values: []vigil.Measurement{
						{Code: vigil.LOINCBodyTemp, Value: math.Round(temp*10) / 10, Unit: "Cel"},
						{Code: vigil.LOINCSpO2, Value: math.Round(math.Min(100, spo2)), Unit: "%"},
						{Code: vigil.LOINCSystolic, Value: math.Round(125 + rng.NormFloat64()*12), Unit: "mm[Hg]"},
						{Code: vigil.LOINCDiastolic, Value: math.Round(80 + rng.NormFloat64()*8), Unit: "mm[Hg]"},
					}})
			}
			if _, err := store.AppendReadings(ctx, rs); err != nil {
				return nil, err
			}
			rep.Readings += len(rs)
		}
		if o.Progress != nil {
			o.Progress(0.9 * float64(r+1) / float64(o.Regions))
		}
	}
	secret := o.Secret
	if secret == nil {
		if secret, err = pubhealth.LoadOrCreateSecret(filepath.Join(o.Dir, pubhealth.ResearchSecretFile)); err != nil {
			return nil, err
		}
	}
	sv, err := pubhealth.Signals(ctx, store, pubhealth.SignalOptions{From: start.AddDate(0, 0, 10), To: end, Secret: secret})
	if err != nil {
		return nil, err
	}
	outStart, outEnd := start.AddDate(0, 0, o.OutbreakDay), start.AddDate(0, 0, o.OutbreakDay+14+10)
	if o.OutbreakRegion >= 0 {
		rep.OutbreakRegion, rep.OutbreakStart = region(o.OutbreakRegion), outStart.Format("2006-01-02")
	}
	falses := map[string]int{}
	quiet := 0
	for _, rd := range sv.Regions {
		for _, d := range rd.Days {
			at, _ := time.Parse("2006-01-02", d.Date)
			if rd.Region != rep.OutbreakRegion || at.Before(outStart) || !at.Before(outEnd) {
				quiet++
			}
		}
	}
	for _, s := range sv.Signals {
		at, _ := time.Parse("2006-01-02", s.Date)
		inOutbreak := s.Region == rep.OutbreakRegion && !at.Before(outStart) && at.Before(outEnd)
		if !inOutbreak {
			falses[s.Method]++
			continue
		}
		if days := int(at.Sub(outStart) / (24 * time.Hour)); days < 14 {
			if prev, ok := rep.DaysToSignal[s.Method]; !ok || days < prev {
				rep.DaysToSignal[s.Method] = days
			}
		}
	}
	for _, m := range []string{"C1", "C2", "C3"} {
		rep.FalseSignalsPerRegionMonth[m] = math.Round(float64(falses[m])/(float64(quiet)/30.44)*100) / 100
	}
	if o.Progress != nil {
		o.Progress(1)
	}
	return rep, nil
}
