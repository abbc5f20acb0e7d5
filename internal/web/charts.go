package web

import (
	"cmp"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
)

// chartRanges are the spans a patient's charts show.
var chartRanges = map[string]time.Duration{
	"1h": time.Hour, "8h": 8 * time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour,
}

// maxPoints bounds the points of one series: a chart is a few hundred
// pixels wide, so longer spans are averaged into buckets.
const maxPoints = 600

// chartSpec is one chart of the patient page, with the range NEWS2 scores
// 0 for (the band drawn behind the line).
type chartSpec struct {
	Code, Label, Unit string
	Low, High         float64 // NEWS2 zero-score band; NaN: none
}

var chartSpecs = []chartSpec{
	{vigil.LOINCHeartRate, "Heart rate", "/min", 51, 90},
	{vigil.LOINCSpO2, "SpO₂", "%", 96, 100},
	{vigil.LOINCRespRate, "Respiratory rate", "/min", 12, 20},
	{vigil.LOINCBodyTemp, "Temperature", "°C", 36.1, 38.0},
	{vigil.LOINCSystolic, "Systolic BP", "mmHg", 111, 219},
	{vigil.LOINCDiastolic, "Diastolic BP", "mmHg", math.NaN(), math.NaN()},
	{vigil.LOINCNEWS2, "NEWS2", "", 0, 0},
}

// Series is one vital over the chosen range: [time ms, value] points,
// bucket means when the range holds more than maxPoints values.
type Series struct {
	Code   string       `json:"code"`
	Label  string       `json:"label"`
	Unit   string       `json:"unit"`
	Points [][2]float64 `json:"points"`
	Count  int          `json:"count"`          // values in the range (before averaging)
	Low    *float64     `json:"low,omitempty"`  // NEWS2 zero-score band
	High   *float64     `json:"high,omitempty"` // (also the range of a normal value)
	// Limits are the alert thresholds on this code as they apply to the
	// patient (their overrides included).
	Limits []Limit `json:"limits"`
}

// Limit is one alert threshold drawn on a chart: an alert when the value
// goes below (Below) or above it.
type Limit struct {
	Value    float64 `json:"value"`
	Below    bool    `json:"below"`
	Priority string  `json:"priority"`
	Title    string  `json:"title"`
	Patient  bool    `json:"patientSpecific,omitempty"`
}

// AlertMark is an alert raised in the range, for the charts' markers.
type AlertMark struct {
	Time     int64  `json:"time"` // ms
	Code     string `json:"code,omitempty"`
	Priority string `json:"priority"`
	Title    string `json:"title"`
	State    string `json:"state"`
}

// Charts is the JSON served at /web/api/patients/{id}/series.
type Charts struct {
	Patient string      `json:"patient"`
	Range   string      `json:"range"`
	From    int64       `json:"from"` // ms
	To      int64       `json:"to"`   // ms
	Series  []Series    `json:"series"`
	Alerts  []AlertMark `json:"alerts"`
}

func (h *handler) series(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !s.canSee(id) {
		h.error(w, r, vigil.Errorf(vigil.EFORBIDDEN, "you may not see this patient"))
		return
	}
	rng := r.URL.Query().Get("range")
	if rng == "" {
		rng = "8h"
	}
	span, ok := chartRanges[rng]
	if !ok {
		h.error(w, r, vigil.FieldErrorf("range", "invalid", "range is 1h, 8h, 24h or 7d"))
		return
	}
	to := h.opts.Now()
	from := to.Add(-span)
	out := &Charts{Patient: id, Range: rng, From: from.UnixMilli(), To: to.UnixMilli(), Series: []Series{}, Alerts: []AlertMark{}}
	bucket := span.Milliseconds() / maxPoints
	var limits []vigil.Threshold
	if h.opts.Thresholds != nil {
		limits = h.opts.Thresholds(id)
	}
	for _, c := range chartSpecs {
		sr, err := h.chartSeries(r, id, c, from, to, bucket)
		if err != nil {
			h.error(w, r, err)
			return
		}
		for _, t := range limits {
			if t.Code != c.Code {
				continue
			}
			patient := strings.HasSuffix(t.Title, "(patient-specific limit)")
			if t.Below != nil {
				sr.Limits = append(sr.Limits, Limit{Value: *t.Below, Below: true, Priority: t.Priority, Title: t.Title, Patient: patient})
			}
			if t.Above != nil {
				sr.Limits = append(sr.Limits, Limit{Value: *t.Above, Priority: t.Priority, Title: t.Title, Patient: patient})
			}
		}
		out.Series = append(out.Series, sr)
	}
	alerts, err := h.opts.Alerts.Alerts(r.Context(), vigil.AlertFilter{PatientID: id, Limit: 1000})
	if err != nil {
		h.error(w, r, fmt.Errorf("alerts: %w", err))
		return
	}
	for _, a := range alerts { // newest first
		if a.Raised.Before(from) {
			break
		}
		if a.Raised.After(to) {
			continue
		}
		out.Alerts = append(out.Alerts, AlertMark{Time: a.Raised.UnixMilli(), Code: a.Code, Priority: a.Priority, Title: a.Title, State: a.State})
	}
	h.json(w, http.StatusOK, out)
}

// chartSeries reads one code's values in [from, to), averaging them into
// buckets of bucket ms when there are more than maxPoints.
func (h *handler) chartSeries(r *http.Request, patient string, c chartSpec, from, to time.Time, bucket int64) (Series, error) {
	sr := Series{Code: c.Code, Label: c.Label, Unit: c.Unit, Points: [][2]float64{}, Limits: []Limit{}}
	if !math.IsNaN(c.Low) && c.High > c.Low {
		sr.Low, sr.High = &c.Low, &c.High
	}
	var raw [][2]float64
	f := vigil.ObservationFilter{PatientID: patient, Codes: []string{c.Code}, From: from, To: to, Limit: 5000}
	for {
		obs, next, err := h.opts.Store.FindObservations(r.Context(), f)
		if err != nil {
			return sr, fmt.Errorf("%s observations: %w", c.Label, err)
		}
		for _, o := range obs {
			raw = append(raw, [2]float64{float64(o.Time.UnixMilli()), o.Value})
		}
		if next == "" {
			break
		}
		f.Cursor = next
	}
	sr.Count = len(raw)
	// Pages come series by series (one per device): merge them in time.
	slices.SortStableFunc(raw, func(a, b [2]float64) int { return cmp.Compare(a[0], b[0]) })
	if len(raw) <= maxPoints || bucket <= 0 {
		sr.Points = append(sr.Points, raw...)
		return sr, nil
	}
	// Bucket means, at the bucket's middle; a gap stays a gap.
	start := from.UnixMilli()
	cur, n, sum := int64(-1), 0, 0.0
	flush := func() {
		if n > 0 {
			sr.Points = append(sr.Points, [2]float64{float64(start + cur*bucket + bucket/2), sum / float64(n)})
		}
	}
	for _, p := range raw {
		b := (int64(p[0]) - start) / bucket
		if b != cur {
			flush()
			cur, n, sum = b, 0, 0
		}
		n++
		sum += p[1]
	}
	flush()
	return sr, nil
}
