package fhir

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
)

// datePrefixes are FHIR's search prefixes for dates, all supported.
const datePrefixes = "eq, ne, gt, lt, ge, le, sa, eb or ap"

// dateParam turns the values of a date search parameter into the periods
// a matching time must lie in (all of them) and those it must not lie in
// (ne). Values are YYYY, YYYY-MM, YYYY-MM-DD or, when dateTimes is set, a
// dateTime with a time zone; the value's precision is its range [lo, hi).
// Vigil's searched times are points (an effective instant, a birth date),
// so sa is gt and eb is lt; ap widens the range by a tenth of its
// distance from now, as the FHIR specification suggests.
func dateParam(name string, values []string, dateTimes bool, now time.Time) (in, not []vigil.Period, err error) {
	for _, v := range values {
		if strings.Contains(v, ",") {
			return nil, nil, vigil.FieldErrorf(name, "invalid", "%s takes one value: repeat the parameter to narrow (AND); several values separated by commas (OR) are not supported", name)
		}
		prefix := "eq"
		if len(v) > 2 && v[0] >= 'a' && v[0] <= 'z' {
			prefix, v = v[:2], v[2:]
		}
		lo, hi, err := dateRange(v, dateTimes)
		if err != nil {
			shape := "YYYY, YYYY-MM or YYYY-MM-DD"
			if dateTimes {
				shape = "YYYY, YYYY-MM, YYYY-MM-DD or a dateTime with a time zone (2026-11-24T08:00:00Z)"
			}
			return nil, nil, vigil.FieldErrorf(name, "invalid", "%s %q: use %s, with an optional prefix %s", name, v, shape, datePrefixes)
		}
		var p vigil.Period
		switch prefix {
		case "eq":
			p = vigil.Period{From: lo, To: hi}
		case "ne":
			not = append(not, vigil.Period{From: lo, To: hi})
			continue
		case "ge":
			p.From = lo
		case "gt", "sa":
			p.From = hi
		case "le":
			p.To = hi
		case "lt", "eb":
			p.To = lo
		case "ap":
			p = vigil.Period{From: lo.Add(-now.Sub(lo).Abs() / 10), To: hi.Add(now.Sub(hi).Abs() / 10)}
		default:
			return nil, nil, vigil.FieldErrorf(name, "invalid", "%s prefix %q is not a FHIR prefix: use %s", name, prefix, datePrefixes)
		}
		in = append(in, p)
	}
	return in, not, nil
}

// dateRange returns [lo, hi) covered by a FHIR date or dateTime value.
func dateRange(v string, dateTimes bool) (time.Time, time.Time, error) {
	switch len(v) {
	case 4:
		t, err := time.Parse("2006", v)
		return t, t.AddDate(1, 0, 0), err
	case 7:
		t, err := time.Parse("2006-01", v)
		return t, t.AddDate(0, 1, 0), err
	case 10:
		t, err := time.Parse(time.DateOnly, v)
		return t, t.AddDate(0, 0, 1), err
	}
	if !dateTimes {
		return time.Time{}, time.Time{}, vigil.Errorf(vigil.EINVALID, "a date")
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		// minutes only: 2026-11-24T10:15Z
		if t2, err2 := time.Parse("2006-01-02T15:04Z07:00", v); err2 == nil {
			return t2, t2.Add(time.Minute), nil
		}
		return time.Time{}, time.Time{}, err
	}
	prec := time.Second
	if strings.Contains(v, ".") {
		prec = time.Millisecond
	}
	return t, t.Add(prec), nil
}

// intersect narrows periods to one (empty when they do not overlap:
// From >= To with both set).
func intersect(ps []vigil.Period) vigil.Period {
	var out vigil.Period
	for _, p := range ps {
		if !p.From.IsZero() && (out.From.IsZero() || p.From.After(out.From)) {
			out.From = p.From
		}
		if !p.To.IsZero() && (out.To.IsZero() || p.To.Before(out.To)) {
			out.To = p.To
		}
	}
	return out
}

func emptyPeriod(p vigil.Period) bool {
	return !p.From.IsZero() && !p.To.IsZero() && !p.From.Before(p.To)
}

// summaryCount reports whether the search asks only for the number of
// matches (_summary=count); other _summary modes are refused.
func summaryCount(q url.Values) (bool, error) {
	switch q.Get("_summary") {
	case "":
		return false, nil
	case "count":
		return true, nil
	case "false":
		return false, nil
	}
	return false, vigil.FieldErrorf("_summary", "invalid", "_summary may be count (only the total) or false; Vigil's resources are already small")
}

// writeCount answers _summary=count: a searchset with the total and no
// entries.
func writeCount(w http.ResponseWriter, r *http.Request, n int) {
	writeResource(w, http.StatusOK, searchset(r, &n, ""))
}

// tokenParam splits [system|]code; hasSystem reports whether a system
// (possibly empty) was given.
func tokenParam(v string) (system, code string, hasSystem bool) {
	system, code, hasSystem = strings.Cut(v, "|")
	if !hasSystem {
		code = v
	}
	return
}

// categoryCodes returns the LOINC codes Vigil stores under an
// observation category (a [system|]code value).
func categoryCodes(v string) ([]string, error) {
	sys, code, hasSys := tokenParam(v)
	if hasSys && sys != "" && sys != SystemObsCategory {
		return nil, vigil.FieldErrorf("category", "unknown-system", "category system must be %s", SystemObsCategory)
	}
	var out []string
	for c, ci := range codes {
		if ci.category == code {
			out = append(out, c) // with systolic and diastolic: unpaired values of a panel
		}
	}
	slices.Sort(out)
	return out, nil
}
