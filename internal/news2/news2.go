// Package news2 computes the National Early Warning Score 2 (Royal College
// of Physicians, 2017) from a patient's freshest values, naming every
// parameter that is missing or stale instead of treating it as normal.
package news2

import (
	"fmt"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Parameter names.
const (
	RespRate    = "respiration rate"
	SpO2        = "SpO2"
	AirOxygen   = "air or oxygen"
	Systolic    = "systolic BP"
	Pulse       = "pulse"
	ACVPU       = "consciousness"
	Temperature = "temperature"
)

// Status of one parameter.
const (
	Fresh   = "fresh"
	Stale   = "stale"
	Missing = "missing"
)

// Bands of the RCP clinical response.
const (
	BandLow       = "low"
	BandLowMedium = "low-medium" // a 3 in any single parameter
	BandMedium    = "medium"     // 5–6
	BandHigh      = "high"       // ≥ 7
)

// Value is one input: a number (or, for ACVPU, a letter) and when.
type Value struct {
	Value float64
	Text  string // ACVPU: A, C, V, P or U
	Time  time.Time
}

// Input is what the score is computed from.
type Input struct {
	RespRate, SpO2, Systolic, Pulse, Temperature *Value
	OnOxygen                                     *bool     // nil: not recorded
	OxygenTime                                   time.Time // when it was recorded
	ACVPU                                        *Value
	Scale2                                       bool // SpO2 scale 2 prescribed (hypercapnic respiratory failure)
}

// Param is one parameter's contribution.
type Param struct {
	Name   string    `json:"name"`
	Value  string    `json:"value,omitempty"`
	Score  int       `json:"score"`
	Status string    `json:"status"`
	Time   time.Time `json:"time,omitzero"`
	Age    string    `json:"age,omitempty"`
}

// Result is a NEWS2 score.
type Result struct {
	Total      int     `json:"total"`
	Band       string  `json:"band"`
	Complete   bool    `json:"complete"` // every parameter fresh
	MaxSingle  int     `json:"maxSingle"`
	Parameters []Param `json:"parameters"`
	Scale      int     `json:"spo2Scale"`
	// Note says what an incomplete score means.
	Note string `json:"note,omitempty"`
}

// Score computes NEWS2 at now; values older than staleAfter count as
// stale and do not contribute. An incomplete score is a lower bound.
func Score(in Input, now time.Time, staleAfter time.Duration) Result {
	r := Result{Scale: 1}
	if in.Scale2 {
		r.Scale = 2
	}
	onO2 := in.OnOxygen != nil && *in.OnOxygen && now.Sub(in.OxygenTime) <= staleAfter
	add := func(name string, v *Value, score func(*Value) int, show func(*Value) string) {
		p := Param{Name: name, Status: Missing}
		if v != nil {
			p.Time, p.Value = v.Time, show(v)
			p.Age = now.Sub(v.Time).Round(time.Second).String()
			if now.Sub(v.Time) > staleAfter {
				p.Status = Stale
			} else {
				p.Status = Fresh
				p.Score = score(v)
			}
		}
		r.Parameters = append(r.Parameters, p)
	}
	num := func(unit string) func(*Value) string {
		return func(v *Value) string { return fmt.Sprintf("%g %s", v.Value, unit) }
	}
	add(RespRate, in.RespRate, func(v *Value) int { return respScore(v.Value) }, num("/min"))
	add(SpO2, in.SpO2, func(v *Value) int {
		if in.Scale2 {
			return spo2Scale2(v.Value, onO2)
		}
		return spo2Scale1(v.Value)
	}, num("%"))
	var o2 *Value
	if in.OnOxygen != nil {
		o2 = &Value{Time: in.OxygenTime}
		if *in.OnOxygen {
			o2.Value, o2.Text = 1, "oxygen"
		} else {
			o2.Text = "air"
		}
	}
	add(AirOxygen, o2, func(v *Value) int {
		if v.Value == 1 {
			return 2
		}
		return 0
	}, func(v *Value) string { return v.Text })
	add(Systolic, in.Systolic, func(v *Value) int { return sbpScore(v.Value) }, num("mm[Hg]"))
	add(Pulse, in.Pulse, func(v *Value) int { return pulseScore(v.Value) }, num("/min"))
	add(ACVPU, in.ACVPU, func(v *Value) int {
		if v.Text == "A" {
			return 0
		}
		return 3
	}, func(v *Value) string { return v.Text })
	add(Temperature, in.Temperature, func(v *Value) int { return tempScore(v.Value) }, num("Cel"))

	r.Complete = true
	var missing []string
	for _, p := range r.Parameters {
		r.Total += p.Score
		if p.Score > r.MaxSingle {
			r.MaxSingle = p.Score
		}
		if p.Status != Fresh {
			r.Complete = false
			missing = append(missing, p.Name+" ("+p.Status+")")
		}
	}
	switch {
	case r.Total >= 7:
		r.Band = BandHigh
	case r.Total >= 5:
		r.Band = BandMedium
	case r.MaxSingle == 3:
		r.Band = BandLowMedium
	default:
		r.Band = BandLow
	}
	if !r.Complete {
		r.Note = fmt.Sprintf("incomplete: %v; the score is a lower bound", missing)
	}
	return r
}

func respScore(v float64) int {
	switch {
	case v <= 8:
		return 3
	case v <= 11:
		return 1
	case v <= 20:
		return 0
	case v <= 24:
		return 2
	}
	return 3
}

func spo2Scale1(v float64) int {
	switch {
	case v <= 91:
		return 3
	case v <= 93:
		return 2
	case v <= 95:
		return 1
	}
	return 0
}

func spo2Scale2(v float64, onO2 bool) int {
	switch {
	case v <= 83:
		return 3
	case v <= 85:
		return 2
	case v <= 87:
		return 1
	case v <= 92:
		return 0
	case !onO2:
		return 0 // ≥ 93 on air
	case v <= 94:
		return 1
	case v <= 96:
		return 2
	}
	return 3
}

func sbpScore(v float64) int {
	switch {
	case v <= 90:
		return 3
	case v <= 100:
		return 2
	case v <= 110:
		return 1
	case v <= 219:
		return 0
	}
	return 3
}

func pulseScore(v float64) int {
	switch {
	case v <= 40:
		return 3
	case v <= 50:
		return 1
	case v <= 90:
		return 0
	case v <= 110:
		return 1
	case v <= 130:
		return 2
	}
	return 3
}

func tempScore(v float64) int {
	switch {
	case v <= 35.0:
		return 3
	case v <= 36.0:
		return 1
	case v <= 38.0:
		return 0
	case v <= 39.0:
		return 1
	}
	return 2
}

// FromObservations fills the vital-sign inputs from a patient's latest
// observations (vigil.ObservationStore.LatestObservations with max 1).
func FromObservations(latest map[string][]*vigil.Observation, in *Input) {
	pick := func(code string) *Value {
		if o := latest[code]; len(o) > 0 {
			return &Value{Value: o[0].Value, Time: o[0].Time}
		}
		return nil
	}
	in.RespRate = pick(vigil.LOINCRespRate)
	in.SpO2 = pick(vigil.LOINCSpO2)
	in.Pulse = pick(vigil.LOINCHeartRate)
	in.Temperature = pick(vigil.LOINCBodyTemp)
	in.Systolic = pick(vigil.LOINCSystolic)
	if bp := latest[vigil.LOINCBPPanel]; len(bp) > 0 && len(bp[0].Components) > 0 {
		if in.Systolic == nil || bp[0].Time.After(in.Systolic.Time) {
			in.Systolic = &Value{Value: bp[0].Components[0].Value, Time: bp[0].Time}
		}
	}
}

// Codes are the observation codes FromObservations reads.
var Codes = []string{vigil.LOINCRespRate, vigil.LOINCSpO2, vigil.LOINCHeartRate, vigil.LOINCBodyTemp, vigil.LOINCSystolic, vigil.LOINCBPPanel}
