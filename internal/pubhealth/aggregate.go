// Package pubhealth turns monitoring data into population aggregates that
// can leave Vigil for public health: per cohort cell — region (a coarse
// postal prefix), age band, sex and ISO week — the patients reporting, the
// fever rate, the mean SpO2, the share of hypertensive blood pressure
// readings and device adherence.
//
// Small cells identify people (87 % of Americans are unique on ZIP code,
// sex and birth date: Sweeney 2000), so a cell with fewer than K patients
// (default 11, the threshold CMS and many registries use) is suppressed,
// and so many more cells as needed that no published total gives it away:
// a region-week total is published next to its cells, and a week's total
// next to its regions, so in every such group either no member is
// suppressed or at least two are (complementary suppression).
//
// Each patient contributes one value per metric per week — the share of
// their own readings, their own mean — so that no patient weighs more than
// another in a cell (contribution bounding).
package pubhealth

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
)

// DefaultK is the smallest number of patients a published cell may hold.
const DefaultK = 11

// Thresholds of the metrics.
const (
	FeverCelsius       = 38.0 // body temperature at or above: fever
	HypertensiveSys    = 140  // systolic at or above, or …
	HypertensiveDia    = 90   // … diastolic at or above: a hypertensive reading
	DefaultPostalChars = 3    // postal code characters kept for the region
)

// All marks a total over a dimension.
const All = "all"

// Source is what aggregates are computed from (both stores provide it).
type Source interface {
	FindPatients(ctx context.Context, f vigil.PatientFilter) ([]*vigil.Patient, int, error)
	ReadSeries(ctx context.Context, patientID, code, deviceID string, from, to time.Time, max int) ([]vigil.SeriesData, error)
	ReadingDays(ctx context.Context, patientID string, from, to time.Time) ([]time.Time, error)
}

// Options say what to aggregate.
type Options struct {
	From, To    time.Time // the ISO weeks (Monday to Monday, UTC) that meet [From, To)
	K           int       // smallest published cell; 0: DefaultK
	PostalChars int       // postal code characters kept for the region; 0: DefaultPostalChars
	// Epsilon > 0 makes the export differentially private (see dp.go):
	// (Epsilon, Delta) is what the whole table costs.
	Epsilon, Delta float64
}

// Cell is one published row. Region, AgeBand and Sex are All in totals.
// Values of a suppressed cell are zero and must not be shown.
type Cell struct {
	Week     string `json:"week"` // ISO week, 2026-W48
	Region   string `json:"region"`
	AgeBand  string `json:"ageBand"`
	Sex      string `json:"sex"`
	Patients int    `json:"patients"` // patients with at least one reading that week
	// FeverRate: share of those patients with a temperature ≥ 38.0 °C.
	FeverRate *float64 `json:"feverRate,omitempty"`
	// MeanSpO2: mean over patients (with SpO2 readings) of their mean, %.
	MeanSpO2 *float64 `json:"meanSpO2,omitempty"`
	// HypertensiveShare: mean over patients (with blood pressures) of the
	// share of their readings at or above 140/90 mmHg.
	HypertensiveShare *float64 `json:"hypertensiveShare,omitempty"`
	// Adherence: mean over patients of the days of the week with a reading, ÷ 7.
	Adherence *float64 `json:"adherence,omitempty"`
	// Suppressed: "" when published; "small" (fewer than K patients) or
	// "complementary" (suppressed so a total cannot reveal a small cell).
	Suppressed string `json:"suppressed,omitempty"`
}

// withheld is the cell as published when suppressed for reason: its key
// and the reason, no values.
func (c Cell) withheld(reason string) Cell {
	return Cell{Week: c.Week, Region: c.Region, AgeBand: c.AgeBand, Sex: c.Sex, Suppressed: reason}
}

// Table is an aggregate export: cells, region-week totals and week totals.
type Table struct {
	From, To time.Time
	K        int
	// Epsilon and Delta: the privacy cost of a differentially private
	// table (0: exact values with small-cell suppression).
	Epsilon float64 `json:"epsilon,omitempty"`
	Delta   float64 `json:"delta,omitempty"`
	Cells   []Cell
}

// patientWeek is one patient's contribution to one week.
type patientWeek struct {
	fever        bool
	hasTemp      bool
	spo2         float64 // the patient's mean
	hasSpO2      bool
	hyper        float64 // share of hypertensive BP readings
	hasBP        bool
	adherentDays int
}

type cellStats struct {
	patients, fever, tempN int
	spo2Sum                float64
	spo2N                  int
	hyperSum               float64
	hyperN                 int
	adherenceSum           float64
}

func (s *cellStats) add(pw patientWeek) {
	s.patients++
	if pw.hasTemp {
		s.tempN++
		if pw.fever {
			s.fever++
		}
	}
	if pw.hasSpO2 {
		s.spo2Sum += pw.spo2
		s.spo2N++
	}
	if pw.hasBP {
		s.hyperSum += pw.hyper
		s.hyperN++
	}
	s.adherenceSum += float64(pw.adherentDays) / 7
}

// Aggregate computes the table.
func Aggregate(ctx context.Context, src Source, o Options) (*Table, error) {
	if o.K <= 0 {
		o.K = DefaultK
	}
	if o.PostalChars <= 0 {
		o.PostalChars = DefaultPostalChars
	}
	if o.From.IsZero() || o.To.IsZero() || !o.From.Before(o.To) {
		return nil, vigil.FieldErrorf("from", "invalid", "give a period: from before to")
	}
	weeks := isoWeeks(o.From, o.To)
	if len(weeks) > 106 {
		return nil, vigil.FieldErrorf("to", "invalid", "at most two years (106 weeks) per export")
	}
	from, to := weeks[0], weeks[len(weeks)-1].AddDate(0, 0, 7)
	contribs := map[[4]string][]patientWeek{} // per base cell, one per patient
	err := eachPatient(ctx, src, func(p *vigil.Patient) error {
		pws, err := contributions(ctx, src, p.ID, from, to)
		if err != nil {
			return err
		}
		region := Region(p, o.PostalChars)
		for i, wk := range weeks {
			pw, ok := pws[i]
			if !ok {
				continue
			}
			key := [4]string{Week(wk), region, AgeBand(p.BirthDate, wk), cmp.Or(p.Sex, "unknown")}
			contribs[key] = append(contribs[key], pw)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	t := &Table{From: from, To: to, K: o.K}
	if o.Epsilon > 0 {
		if err := t.private(contribs, len(weeks), o); err != nil {
			return nil, err
		}
		return t, nil
	}
	stats := map[[4]string]*cellStats{} // cells and their totals
	for key, pws := range contribs {
		for _, k := range [][4]string{key, {key[0], key[1], All, All}, {key[0], All, All, All}} {
			if stats[k] == nil {
				stats[k] = &cellStats{}
			}
			for _, pw := range pws {
				stats[k].add(pw)
			}
		}
	}
	for key, s := range stats {
		t.Cells = append(t.Cells, s.cell(key))
	}
	t.sort()
	suppress(t.Cells, o.K)
	for i, c := range t.Cells {
		if c.Suppressed != "" {
			t.Cells[i] = c.withheld(c.Suppressed)
		}
	}
	return t, nil
}

func (t *Table) sort() {
	slices.SortFunc(t.Cells, func(a, b Cell) int {
		return cmp.Or(strings.Compare(a.Week, b.Week), cmpAll(a.Region, b.Region), cmpAll(a.AgeBand, b.AgeBand), cmpAll(a.Sex, b.Sex))
	})
}

// cmpAll orders totals after the values they total.
func cmpAll(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == All:
		return 1
	case b == All:
		return -1
	}
	return strings.Compare(a, b)
}

// cell is the published cell of key (week, region, age band, sex).
func (s *cellStats) cell(key [4]string) Cell {
	ratio := func(num float64, n int) *float64 {
		if n == 0 {
			return nil
		}
		return round3(num / float64(n))
	}
	return Cell{Week: key[0], Region: key[1], AgeBand: key[2], Sex: key[3], Patients: s.patients,
		FeverRate: ratio(float64(s.fever), s.tempN), MeanSpO2: ratio(s.spo2Sum, s.spo2N),
		HypertensiveShare: ratio(s.hyperSum, s.hyperN), Adherence: ratio(s.adherenceSum, s.patients)}
}

// suppress marks cells with fewer than k patients, then, until nothing
// changes, a further cell in every group whose total is published and
// that has exactly one suppressed member: the smallest published one.
func suppress(cells []Cell, k int) {
	for i := range cells {
		if cells[i].Patients < k {
			cells[i].Suppressed = "small"
		}
	}
	type group struct {
		total   int   // index of the published total
		members []int // indexes of the cells it totals
	}
	var groups []group
	idx := map[[4]string]int{}
	for i, c := range cells {
		idx[[4]string{c.Week, c.Region, c.AgeBand, c.Sex}] = i
	}
	byRegion := map[[2]string]*group{}
	byWeek := map[string]*group{}
	for i, c := range cells {
		switch {
		case c.Region != All && c.AgeBand != All:
			key := [2]string{c.Week, c.Region}
			if byRegion[key] == nil {
				byRegion[key] = &group{total: idx[[4]string{c.Week, c.Region, All, All}]}
			}
			byRegion[key].members = append(byRegion[key].members, i)
		case c.Region != All:
			if byWeek[c.Week] == nil {
				byWeek[c.Week] = &group{total: idx[[4]string{c.Week, All, All, All}]}
			}
			byWeek[c.Week].members = append(byWeek[c.Week].members, i)
		}
	}
	for _, g := range byRegion {
		groups = append(groups, *g)
	}
	for _, g := range byWeek {
		groups = append(groups, *g)
	}
	for changed := true; changed; {
		changed = false
		for _, g := range groups {
			if cells[g.total].Suppressed != "" {
				continue // the total itself is not published
			}
			n, smallest := 0, -1
			for _, m := range g.members {
				if cells[m].Suppressed != "" {
					n++
				} else if smallest < 0 || cells[m].Patients < cells[smallest].Patients {
					smallest = m
				}
			}
			if n != 1 {
				continue
			}
			if smallest < 0 {
				// A single member equals its total: hide the total too.
				cells[g.total].Suppressed = "complementary"
			} else {
				cells[smallest].Suppressed = "complementary"
			}
			changed = true
		}
	}
}

// maxValues bounds one patient's values of one code that a public-health
// computation reads (a year at 1 Hz is 31.5 million; kiosks and hubs send
// a few a day).
const maxValues = 10_000_000

// eachPatient calls fn with every patient of src, a page at a time.
func eachPatient(ctx context.Context, src Source, fn func(*vigil.Patient) error) error {
	const page = 1000
	for after := ""; ; {
		ps, _, err := src.FindPatients(ctx, vigil.PatientFilter{After: after, Limit: page})
		if err != nil {
			return err
		}
		for _, p := range ps {
			if err := fn(p); err != nil {
				return err
			}
		}
		if len(ps) < page {
			return nil
		}
		after = ps[len(ps)-1].ID
	}
}

// contributions reads one patient's readings over [from, to) and returns
// their contribution to each week (by index) in which they reported.
func contributions(ctx context.Context, src Source, patientID string, from, to time.Time) (map[int]patientWeek, error) {
	weekOf := func(ms int64) int { return int(time.UnixMilli(ms).UTC().Sub(from) / (7 * 24 * time.Hour)) }
	out := map[int]patientWeek{}
	days, err := src.ReadingDays(ctx, patientID, from, to)
	if err != nil {
		return nil, err
	}
	for _, d := range days {
		i := int(d.UTC().Sub(from) / (7 * 24 * time.Hour))
		if d.Before(from) || !d.Before(to) {
			continue
		}
		pw := out[i]
		pw.adherentDays++
		out[i] = pw
	}
	if len(out) == 0 {
		return out, nil
	}
	series := func(code string) ([]vigil.SeriesData, error) {
		return src.ReadSeries(ctx, patientID, code, "", from, to, maxValues)
	}
	temps, err := series(vigil.LOINCBodyTemp)
	if err != nil {
		return nil, err
	}
	for _, s := range temps {
		for j, ms := range s.T {
			i := weekOf(ms)
			pw, ok := out[i]
			if !ok {
				continue
			}
			pw.hasTemp = true
			pw.fever = pw.fever || s.V[j] >= FeverCelsius
			out[i] = pw
		}
	}
	spo2, err := series(vigil.LOINCSpO2)
	if err != nil {
		return nil, err
	}
	sum, n := map[int]float64{}, map[int]int{}
	for _, s := range spo2 {
		for j, ms := range s.T {
			i := weekOf(ms)
			sum[i] += s.V[j]
			n[i]++
		}
	}
	for i, c := range n {
		if pw, ok := out[i]; ok {
			pw.spo2, pw.hasSpO2 = sum[i]/float64(c), true
			out[i] = pw
		}
	}
	sys, err := series(vigil.LOINCSystolic)
	if err != nil {
		return nil, err
	}
	dia, err := series(vigil.LOINCDiastolic)
	if err != nil {
		return nil, err
	}
	diaAt := map[string]float64{}
	for _, s := range dia {
		for j, ms := range s.T {
			diaAt[fmt.Sprint(s.Device, "/", ms)] = s.V[j]
		}
	}
	hyper, bp := map[int]int{}, map[int]int{}
	for _, s := range sys {
		for j, ms := range s.T {
			i := weekOf(ms)
			bp[i]++
			d, ok := diaAt[fmt.Sprint(s.Device, "/", ms)]
			if s.V[j] >= HypertensiveSys || ok && d >= HypertensiveDia {
				hyper[i]++
			}
		}
	}
	for i, c := range bp {
		if pw, ok := out[i]; ok {
			pw.hyper, pw.hasBP = float64(hyper[i])/float64(c), true
			out[i] = pw
		}
	}
	return out, nil
}

// isoWeeks returns the Mondays (00:00 UTC) of the ISO weeks that meet
// [from, to).
func isoWeeks(from, to time.Time) []time.Time {
	d := from.UTC().Truncate(24 * time.Hour)
	d = d.AddDate(0, 0, -((int(d.Weekday()) + 6) % 7))
	var out []time.Time
	for ; d.Before(to); d = d.AddDate(0, 0, 7) {
		out = append(out, d)
	}
	return out
}

// Week is the ISO week of t, e.g. 2026-W49.
func Week(t time.Time) string {
	y, w := t.UTC().ISOWeek()
	return fmt.Sprintf("%d-W%02d", y, w)
}

// AgeBand is the patient's age band at t: 0-17, 18-44, 45-64, 65-74, 75+,
// or unknown.
func AgeBand(birthDate string, t time.Time) string {
	b, err := time.Parse("2006-01-02", birthDate)
	if err != nil {
		return "unknown"
	}
	age := t.Year() - b.Year()
	if t.Month() < b.Month() || t.Month() == b.Month() && t.Day() < b.Day() {
		age--
	}
	switch {
	case age < 0:
		return "unknown"
	case age < 18:
		return "0-17"
	case age < 45:
		return "18-44"
	case age < 65:
		return "45-64"
	case age < 75:
		return "65-74"
	}
	return "75+"
}

// UnknownRegion is the region of a patient without a usable postal code.
const UnknownRegion = "unknown"

// Region is the first chars characters of the patient's postal code,
// upper case without spaces, or UnknownRegion.
func Region(p *vigil.Patient, chars int) string {
	pc := strings.ToUpper(strings.ReplaceAll(p.PostalCode, " ", ""))
	if len(pc) < chars {
		return UnknownRegion
	}
	return pc[:chars]
}
