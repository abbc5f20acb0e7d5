package rules

import (
	"slices"
	"sort"
	"time"
)

// MaxPoints bounds the values kept per patient and code: past it the
// oldest go first, so a window longer than MaxPoints values (6 h of a
// 1 Hz device) covers only its newest MaxPoints values.
const MaxPoints = 32768

// Windows keeps each patient's recent values of the codes that rules
// read, each code for the longest window any rule reads it over. It is
// not safe for concurrent use (the alerting engine holds its lock).
type Windows struct {
	keep   map[string]time.Duration // code → how long to keep; present: needed
	series map[string]map[string][]Point
}

// NewWindows returns Windows sized for rules.
func NewWindows(rules []*Compiled) *Windows {
	w := &Windows{series: map[string]map[string][]Point{}}
	w.Resize(rules)
	return w
}

// Resize sets what to keep for a new rule set and drops codes no rule
// reads any more.
func (w *Windows) Resize(rules []*Compiled) {
	w.keep = map[string]time.Duration{}
	for _, c := range rules {
		for code, d := range c.Windows {
			w.keep[code] = max(w.keep[code], d)
		}
	}
	for p, byCode := range w.series {
		for code := range byCode {
			if _, ok := w.keep[code]; !ok {
				delete(byCode, code)
			}
		}
		if len(byCode) == 0 {
			delete(w.series, p)
		}
	}
}

// Needs reports whether some rule reads code, and over how long.
func (w *Windows) Needs(code string) (time.Duration, bool) {
	d, ok := w.keep[code]
	return d, ok
}

// Add records a value. A value at a time already kept replaces it.
func (w *Windows) Add(patient, code string, t time.Time, v float64) {
	keep, ok := w.keep[code]
	if !ok {
		return
	}
	byCode := w.series[patient]
	if byCode == nil {
		byCode = map[string][]Point{}
		w.series[patient] = byCode
	}
	ps := byCode[code]
	i := sort.Search(len(ps), func(i int) bool { return !ps[i].T.Before(t) })
	switch {
	case i < len(ps) && ps[i].T.Equal(t):
		ps[i].V = v
	case i == len(ps):
		ps = append(ps, Point{t, v})
	default:
		ps = slices.Insert(ps, i, Point{t, v})
	}
	// Drop what no window reaches: older than the newest minus keep.
	newest := ps[len(ps)-1].T
	cut := sort.Search(len(ps), func(i int) bool { return !ps[i].T.Before(newest.Add(-keep)) })
	if keep == 0 {
		cut = len(ps) - 1
	}
	cut = max(cut, len(ps)-MaxPoints)
	ps = ps[cut:] // no copy: append moves the live part when it grows

	byCode[code] = ps
}

// Series returns a patient's kept values of code, oldest first. The
// slice is the Windows' own: read it before the next Add.
func (w *Windows) Series(patient, code string) []Point {
	return w.series[patient][code]
}

// Patients returns the patients with kept values.
func (w *Windows) Patients() []string {
	out := make([]string, 0, len(w.series))
	for p := range w.series {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Forget drops what is kept of a patient (after an erasure).
func (w *Windows) Forget(patient string) { delete(w.series, patient) }
