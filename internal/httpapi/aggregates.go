package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/pubhealth"
)

// aggregates serves GET /api/v1/aggregates?from=YYYY-MM-DD&to=YYYY-MM-DD
// [&k=11][&postal-chars=3][&format=csv|json|fhir]: population aggregates with
// small-cell suppression (docs/api.md, internal/pubhealth). Analysts see
// these and nothing about any one patient; every request is audited.
//
// Analysts always get a differentially private table (epsilon, default
// 1, and delta, default 1e-5, are spent from their budget before it is
// computed; X-Privacy-Spent says their total); administrators get exact
// values with small-cell suppression unless they give an epsilon.
func (s *Server) aggregates(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	if s.o.Aggregate == nil {
		return vigil.Errorf(vigil.ENOTFOUND, "aggregates are not served here")
	}
	q := r.URL.Query()
	o := pubhealth.Options{}
	var err error
	if o.From, o.To, err = period(q); err != nil {
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
	num := func(name string, def float64) (float64, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 10 {
			return 0, vigil.FieldErrorf(name, "invalid", "%s: a number from 0 to 10", name)
		}
		return f, nil
	}
	defEps, defDelta := 0.0, 0.0
	if p.Role == vigil.RoleAnalyst {
		defEps, defDelta = pubhealth.DefaultEpsilon, pubhealth.DefaultDelta
	}
	if o.Epsilon, err = num("epsilon", defEps); err != nil {
		return err
	}
	if o.Delta, err = num("delta", defDelta); err != nil {
		return err
	}
	if o.Epsilon > 0 && o.Delta == 0 {
		o.Delta = pubhealth.DefaultDelta
	}
	if p.Role == vigil.RoleAnalyst && o.Epsilon == 0 {
		return &vigil.Error{Code: vigil.EFORBIDDEN, Reason: "private-only", Message: "analysts get differentially private aggregates only: give an epsilon above 0 (default 1)"}
	}
	if o.Epsilon > 0 {
		if s.o.ChargePrivacy == nil {
			return vigil.Errorf(vigil.EUNAVAILABLE, "no privacy ledger on this server")
		}
		spent, err := s.o.ChargePrivacy(r.Context(), p.UserID, o.Epsilon, o.Delta)
		if err != nil {
			return err
		}
		w.Header().Set("X-Privacy-Spent", fmt.Sprintf("epsilon=%g; delta=%g; queries=%d", spent.Epsilon, spent.Delta, spent.Queries))
	}
	if o.Epsilon > 0 {
		auditDetail(r, fmt.Sprintf("epsilon %g, delta %g", o.Epsilon, o.Delta))
	}
	t, err := s.o.Aggregate(r.Context(), o)
	if err != nil {
		return err
	}
	if q.Get("format") == "fhir" || q.Get("format") == "" && strings.Contains(r.Header.Get("Accept"), "application/fhir+json") {
		w.Header().Set("Content-Type", "application/fhir+json")
		return json.NewEncoder(w).Encode(t.MeasureReport(s.o.Now()))
	}
	if q.Get("format") == "csv" || q.Get("format") == "" && strings.Contains(r.Header.Get("Accept"), "text/csv") {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="vigil-aggregates-`+pubhealth.Week(t.From)+`.csv"`)
		return t.WriteCSV(w)
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

// extract serves GET /api/v1/studies/{id}/extract?approval=REF&from=…&to=…
// [&code=…]: a pseudonymised research extract for an approved study, as
// CSV (internal/pubhealth: keyed pseudonyms, shifted dates, Safe Harbor
// identifiers left out). Administrators only; audited with the study in
// the path. It is personal data still: hand it over under a data-use
// agreement.
func (s *Server) extract(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if s.o.Extract == nil {
		return vigil.Errorf(vigil.ENOTFOUND, "research extracts are not served here")
	}
	q := r.URL.Query()
	o := pubhealth.ExtractOptions{Study: r.PathValue("id"), Approval: q.Get("approval"), Codes: q["code"]}
	var err error
	if o.From, o.To, err = period(q); err != nil {
		return err
	}
	if strings.TrimSpace(o.Approval) == "" {
		return vigil.FieldErrorf("approval", "required", "an extract is for an approved study: give approval=REFERENCE (ethics committee or data-access decision)")
	}
	auditDetail(r, "study "+o.Study+", approval "+strings.Join(strings.Fields(o.Approval), " "))
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="vigil-study-`+o.Study+`.csv"`)
	w.Header().Set("X-Vigil-Data-Class", "pseudonymised personal data (GDPR Recital 26): not anonymous; keyed pseudonyms and shifted dates, study "+o.Study+", approval "+strings.Join(strings.Fields(o.Approval), " "))
	_, err = s.o.Extract(r.Context(), o, w)
	return err
}

// signals serves GET /api/v1/signals?from=YYYY-MM-DD&to=YYYY-MM-DD
// [&postal-chars=3]: per region, daily counts of patients with fever made
// differentially private (the same noisy value on every query), and the
// CDC EARS C1, C2 and C3 statistics and signals on them. For analysts.
func (s *Server) signals(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if s.o.Signals == nil {
		return vigil.Errorf(vigil.ENOTFOUND, "signals are not served here")
	}
	q := r.URL.Query()
	var o pubhealth.SignalOptions
	var err error
	if o.From, o.To, err = period(q); err != nil {
		return err
	}
	if pc := q.Get("postal-chars"); pc != "" {
		if o.PostalChars, err = strconv.Atoi(pc); err != nil || o.PostalChars < 1 || o.PostalChars > 4 {
			return vigil.FieldErrorf("postal-chars", "invalid", "postal-chars: 1 to 4 characters of the postal code")
		}
	}
	out, err := s.o.Signals(r.Context(), o)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// period reads the from and to dates (YYYY-MM-DD) of a public-health query.
func period(q url.Values) (from, to time.Time, err error) {
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &from}, {"to", &to}} {
		if *p.t, err = time.Parse("2006-01-02", q.Get(p.name)); err != nil {
			return from, to, vigil.FieldErrorf(p.name, "invalid", "%s: give a date YYYY-MM-DD", p.name)
		}
	}
	return from, to, nil
}
