package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/pubhealth"
)

// aggregates serves GET /api/v1/aggregates?from=YYYY-MM-DD&to=YYYY-MM-DD
// [&k=11][&postal-chars=3][&format=csv|json]: population aggregates with
// small-cell suppression (docs/api.md, internal/pubhealth). Analysts see
// these and nothing about any one patient; every request is audited.
func (s *Server) aggregates(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if s.o.Aggregate == nil {
		return vigil.Errorf(vigil.ENOTFOUND, "aggregates are not served here")
	}
	q := r.URL.Query()
	day := func(name string) (time.Time, error) {
		t, err := time.Parse("2006-01-02", q.Get(name))
		if err != nil {
			return t, vigil.FieldErrorf(name, "invalid", "%s: give a date YYYY-MM-DD", name)
		}
		return t, nil
	}
	o := pubhealth.Options{}
	var err error
	if o.From, err = day("from"); err != nil {
		return err
	}
	if o.To, err = day("to"); err != nil {
		return err
	}
	if k := q.Get("k"); k != "" {
		if o.K, err = strconv.Atoi(k); err != nil || o.K < pubhealth.DefaultK {
			return vigil.FieldErrorf("k", "invalid", "k must be a whole number of at least %d: smaller cells identify people", pubhealth.DefaultK)
		}
	}
	if pc := q.Get("postal-chars"); pc != "" {
		if o.PostalChars, err = strconv.Atoi(pc); err != nil || o.PostalChars < 1 || o.PostalChars > 4 {
			return vigil.FieldErrorf("postal-chars", "invalid", "postal-chars: 1 to 4 characters of the postal code (coarser regions are safer)")
		}
	}
	t, err := s.o.Aggregate(r.Context(), o)
	if err != nil {
		return err
	}
	if q.Get("format") == "csv" || q.Get("format") == "" && strings.Contains(r.Header.Get("Accept"), "text/csv") {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="vigil-aggregates-`+pubhealth.Week(t.From)+`.csv"`)
		return t.WriteCSV(w)
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}
