// Package baseline learns each patient's own normal and flags values far
// from it: personal baselines, aware of the time of day, with robust
// statistics and an explanation for every anomaly.
//
// # Method
//
// Values of each vital sign are averaged over 5-minute buckets. The
// baseline for a bucket is the median and the median absolute deviation
// (MAD) of the patient's bucket means over the previous Days days (7)
// whose time of day (in Location) lies within 90 minutes of the bucket's:
// a patient whose heart rate is 58 asleep and 80 awake has two different
// normals. The spread is the larger of 1.4826 × MAD and IQR / 1.349
// (each the standard deviation for normal data, unmoved by outliers; the
// IQR also widens a window that straddles waking up, where the values
// have two modes), never less than a per-code floor (heart rate 3 /min,
// SpO2 1 %, respiration 1.5 /min, temperature 0.2 Cel, systolic 5 mm[Hg])
// so that a very steady patient does not alert on noise. A baseline needs
// at least 24 bucket means from at least 3 different days; until then the
// patient has none and nothing is flagged.
//
// When a bucket closes (the first value of a later bucket arrives), its
// mean is scored: z = (mean − median) / spread. |z| ≥ Threshold (4)
// opens a low-priority alert explaining which value, how far from what
// baseline; it resolves when a later bucket scores |z| < 2. Low priority
// because a personal anomaly asks for a look, not a run (IEC 60601-1-8);
// the absolute thresholds, NEWS2 and CEL rules cover danger.
//
// # Memory and restart
//
// A patient's baselines take about 80 KB (2,016 bucket means per code,
// float32). At start, Warm rebuilds them from the store's history, in the
// background while live readings are already observed. Buckets that
// closed more than 15 minutes before Vigil's clock (a home device
// uploading a backlog) teach the baseline but are not scored.
package baseline

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/mapping"
)

// DeviceID is the device id baseline alerts carry: their rule is
// "device:vigil-baseline:{LOINC code}".
const DeviceID = "vigil-baseline"

const (
	bucket     = 5 * time.Minute
	bucketSecs = int64(bucket / time.Second)
	todWindow  = 90 * time.Minute // ± time of day
	minSamples = 24
	minDays    = 3
	resolveZ   = 2.0
	lateAfter  = 15 * time.Minute // buckets that closed longer ago are not scored
)

// Codes are the vital signs with baselines, and their spread floors.
var Codes = map[string]float64{
	vigil.LOINCHeartRate: 3,
	vigil.LOINCSpO2:      1,
	vigil.LOINCRespRate:  1.5,
	vigil.LOINCBodyTemp:  0.2,
	vigil.LOINCSystolic:  5,
}

// Options configure a Detector.
type Options struct {
	Alerts    *alerting.Engine // where anomalies go (nil: only scored)
	Location  *time.Location   // time of day; nil: time.Local
	Days      int              // history the baseline covers; 0: 7
	Threshold float64          // |z| that opens an alert; 0: 4
	Table     *mapping.Table   // names and units in explanations; nil: built-in
	Logger    *slog.Logger
	Now       func() time.Time // nil: time.Now
}

// Detector keeps the baselines. It is safe for concurrent use.
type Detector struct {
	o     Options
	slots int

	mu     sync.Mutex
	series map[key]*series
}

type key struct{ patient, code string }

// series is one patient's code: a ring of bucket means and the open bucket.
type series struct {
	means   []float32
	buckets []int64 // bucket number of means[i]; 0: empty
	cur     int64   // bucket number of the open bucket
	sum     float64
	n       int
	alert   bool // an anomaly alert is open
}

// New returns a Detector.
func New(o Options) *Detector {
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.Days <= 0 {
		o.Days = 7
	}
	if o.Threshold <= 0 {
		o.Threshold = 4
	}
	if o.Table == nil {
		o.Table = mapping.DefaultTable()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Detector{o: o, slots: o.Days * int(24*time.Hour/bucket), series: map[key]*series{}}
}

func bucketOf(t time.Time) int64 { return t.Unix() / bucketSecs }

// Observe is an ingest OnStored hook: it adds the readings' values and
// scores each bucket that closes.
func (d *Detector) Observe(ctx context.Context, rs []*vigil.Reading) {
	type closed struct {
		k   key
		b   int64
		z   Score
		end bool
	}
	var out []closed
	now := d.o.Now()
	d.mu.Lock()
	for _, r := range rs {
		if r == nil || r.PatientID == "" {
			continue
		}
		for _, m := range r.Values {
			if _, ok := Codes[m.Code]; !ok {
				continue
			}
			k := key{r.PatientID, m.Code}
			s := d.get(k)
			b := bucketOf(r.Time)
			switch {
			case b < s.cur:
				continue // older than the open bucket: too late to count
			case b > s.cur && s.n > 0:
				mean := s.sum / float64(s.n)
				sc, ok := d.score(k, s, s.cur, mean)
				s.close()
				if ok && !sc.End.Before(now.Add(-lateAfter)) { // a backlog upload teaches, it does not alert
					out = append(out, closed{k: k, b: s.cur, z: sc})
				}
			}
			if b > s.cur {
				s.cur, s.sum, s.n = b, 0, 0
			}
			s.sum += m.Value
			s.n++
		}
	}
	// Decide the alert transitions under the lock, make them outside it
	// (the engine has its own lock and stores).
	type transition struct {
		k      key
		sc     Score
		active bool
	}
	var ts []transition
	for _, c := range out {
		s := d.series[c.k]
		switch z := math.Abs(c.z.Z); {
		case !s.alert && z >= d.o.Threshold:
			s.alert = true
			ts = append(ts, transition{c.k, c.z, true})
		case s.alert && z < resolveZ:
			s.alert = false
			ts = append(ts, transition{c.k, c.z, false})
		}
	}
	d.mu.Unlock()
	if d.o.Alerts == nil {
		return
	}
	for _, t := range ts {
		title, unit := d.describe(t.k.code)
		dir := "high"
		if t.sc.Z < 0 {
			dir = "low"
		}
		if _, err := d.o.Alerts.DeviceAlarm(ctx, alerting.DeviceAlarm{
			PatientID: t.k.patient, DeviceID: DeviceID, AlarmID: t.k.code, Code: t.k.code,
			Title:    fmt.Sprintf("%s unusually %s for this patient", title, dir),
			Detail:   t.sc.Explain(title, unit, d.o.Location),
			Priority: vigil.PriorityLow, Value: t.sc.Value, Unit: unit, Time: t.sc.End, Active: t.active,
		}); err != nil {
			d.o.Logger.Error("baseline alert could not be stored", "err", err)
		}
	}
}

func (d *Detector) describe(code string) (name, unit string) {
	if c, ok := d.o.Table.Lookup(code); ok {
		return c.Display, c.Unit
	}
	return code, ""
}

func (d *Detector) get(k key) *series {
	s := d.series[k]
	if s == nil {
		s = &series{means: make([]float32, d.slots), buckets: make([]int64, d.slots)}
		d.series[k] = s
	}
	return s
}

// close files the open bucket's mean in the ring.
func (s *series) close() {
	if s.n == 0 {
		return
	}
	i := int(s.cur % int64(len(s.means)))
	s.means[i], s.buckets[i] = float32(s.sum/float64(s.n)), s.cur
}

// Score is a bucket mean against the patient's baseline.
type Score struct {
	Code    string    `json:"code"`
	Start   time.Time `json:"start"` // the bucket
	End     time.Time `json:"end"`
	Value   float64   `json:"value"`  // its mean
	Median  float64   `json:"median"` // the baseline
	Spread  float64   `json:"spread"` // 1.4826 × MAD, at least the code's floor
	Z       float64   `json:"z"`
	Samples int       `json:"samples"` // bucket means in the baseline
	Days    int       `json:"days"`    // different calendar days they come from
	Window  int       `json:"window"`  // days the baseline covers
}

// Explain says which value, how far from what baseline.
func (s Score) Explain(name, unit string, loc *time.Location) string {
	dir := "above"
	if s.Z < 0 {
		dir = "below"
	}
	from := s.Start.In(loc).Add(-todWindow).Format("15:04")
	to := s.Start.In(loc).Add(todWindow).Format("15:04")
	return fmt.Sprintf("%s averaged %.1f %s over 5 minutes to %s, %.1f spreads %s this patient's usual %.1f %s (±%.1f) between %s and %s in the last %d days (%d samples from %d days)",
		name, s.Value, unit, s.End.In(loc).Format("15:04"), math.Abs(s.Z), dir, s.Median, unit, s.Spread, from, to, s.Window, s.Samples, s.Days)
}

// score rates a bucket mean against the baseline from the other buckets.
// d.mu is held.
func (d *Detector) score(k key, s *series, b int64, mean float64) (Score, bool) {
	_, offset := time.Unix(b*bucketSecs, 0).In(d.o.Location).Zone()
	tod := func(x int64) int64 { return ((x*bucketSecs+int64(offset))%86400 + 86400) % 86400 }
	want := tod(b)
	var vals []float64
	days := map[int64]bool{}
	for i, x := range s.buckets {
		if x == 0 || x >= b || x <= b-int64(d.slots) {
			continue
		}
		diff := tod(x) - want
		diff = min(abs(diff), 86400-abs(diff))
		if diff > int64(todWindow/time.Second) {
			continue
		}
		vals = append(vals, float64(s.means[i]))
		days[(x*bucketSecs+int64(offset))/86400] = true
	}
	if len(vals) < minSamples || len(days) < minDays {
		return Score{}, false
	}
	med := median(vals) // sorts vals
	iqr := quantile(vals, 0.75) - quantile(vals, 0.25)
	dev := make([]float64, len(vals))
	for i, v := range vals {
		dev[i] = math.Abs(v - med)
	}
	spread := max(1.4826*median(dev), iqr/1.349, Codes[k.code])
	start := time.Unix(b*bucketSecs, 0).UTC()
	return Score{Code: k.code, Start: start, End: start.Add(bucket), Value: mean, Median: med, Spread: spread,
		Z: (mean - med) / spread, Samples: len(vals), Days: len(days), Window: d.o.Days}, true
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// quantile of sorted v, linearly interpolated.
func quantile(v []float64, q float64) float64 {
	pos := q * float64(len(v)-1)
	i := int(pos)
	if i+1 >= len(v) {
		return v[len(v)-1]
	}
	return v[i] + (pos-float64(i))*(v[i+1]-v[i])
}

func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// Current scores each code's open bucket of a patient against the
// baseline at its time of day (for the API and the web app); codes with
// no baseline yet are left out.
func (d *Detector) Current(patient string) []Score {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []Score{}
	for code := range Codes {
		s := d.series[key{patient, code}]
		if s == nil || s.n == 0 {
			continue
		}
		if sc, ok := d.score(key{patient, code}, s, s.cur, s.sum/float64(s.n)); ok {
			out = append(out, sc)
		}
	}
	slices.SortFunc(out, func(a, b Score) int { return strings.Compare(a.Code, b.Code) })
	return out
}

// Source is the history Warm reads; the embedded store implements it.
type Source interface {
	FindPatients(ctx context.Context, f vigil.PatientFilter) ([]*vigil.Patient, int, error)
	FindObservations(ctx context.Context, f vigil.ObservationFilter) ([]*vigil.Observation, string, error)
}

// Warm rebuilds the baselines from the last Days days of history
// received before now (what this process's Observe has not seen). It may
// run while Observe does: historical buckets are filed beside the live
// ones. Call it once, with now no later than the first Observe.
func (d *Detector) Warm(ctx context.Context, src Source, now time.Time) error {
	from := now.Add(-time.Duration(d.o.Days) * 24 * time.Hour)
	codes := []string{vigil.LOINCHeartRate, vigil.LOINCSpO2, vigil.LOINCRespRate, vigil.LOINCBodyTemp, vigil.LOINCBPPanel}
	const page = 500
	acc := history{}
	for off := 0; ; off += page {
		ps, total, err := src.FindPatients(ctx, vigil.PatientFilter{Offset: off, Limit: page})
		if err != nil {
			return fmt.Errorf("baseline: list patients: %w", err)
		}
		for _, p := range ps {
			f := vigil.ObservationFilter{PatientID: p.ID, Codes: codes, From: from, To: now, Limit: 5000}
			for {
				obs, next, err := src.FindObservations(ctx, f)
				if err != nil {
					return fmt.Errorf("baseline: history: %w", err)
				}
				for _, o := range obs {
					if !o.Received.Before(now) {
						continue // this process observed it
					}
					for _, m := range append([]vigil.Measurement{{Code: o.Code, Value: o.Value}}, o.Components...) {
						if _, ok := Codes[m.Code]; ok {
							acc.add(m.Code, bucketOf(o.Time), m.Value)
						}
					}
				}
				if next == "" {
					break
				}
				f.Cursor = next
			}
			d.file(p.ID, acc)
			clear(acc)
		}
		if len(ps) == 0 || off+len(ps) >= total {
			return nil
		}
	}
}

// history holds bucket sums read from the store, by code and bucket.
type history map[string]map[int64]*sum

type sum struct {
	v float64
	n int
}

func (h history) add(code string, b int64, v float64) {
	m := h[code]
	if m == nil {
		m = map[int64]*sum{}
		h[code] = m
	}
	x := m[b]
	if x == nil {
		x = &sum{}
		m[b] = x
	}
	x.v += v
	x.n++
}

// file merges a patient's history into the live series: a bucket that
// is the open one adds to it, older ones go to the ring unless it holds
// a newer bucket in their slot.
func (d *Detector) file(patient string, h history) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for code, bs := range h {
		s := d.get(key{patient, code})
		for b, x := range bs {
			switch {
			case b == s.cur:
				s.sum, s.n = s.sum+x.v, s.n+x.n
			case b < s.cur || s.cur == 0:
				i := int(b % int64(len(s.means)))
				if s.buckets[i] < b {
					s.means[i], s.buckets[i] = float32(x.v/float64(x.n)), b
				}
			}
		}
	}
}
