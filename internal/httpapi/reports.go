package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/csv"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/vigil-iomt/vigil"
)

// dayStore reports on which days a patient transmitted readings.
type dayStore interface {
	ReadingDays(ctx context.Context, patientID string, from, to time.Time) ([]time.Time, error)
}

// RPMRow is one patient's remote-monitoring period.
type RPMRow struct {
	Patient          string `json:"patient"`
	Identifier       string `json:"identifier,omitempty"`
	From             string `json:"from"`
	To               string `json:"to"` // exclusive
	DaysWithReadings int    `json:"daysWithReadings"`
	Qualifies        bool   `json:"qualifies"` // ≥ 16 days, the threshold payers use
	// ReviewMinutes is the clinician review time logged in the period
	// (POST /api/v1/patients/{id}/reviews); ReviewQualifies: ≥ 20 minutes,
	// the threshold of the first monthly treatment-management code.
	ReviewMinutes   int  `json:"reviewMinutes"`
	ReviewQualifies bool `json:"reviewQualifies"`
}

// rpmReport: GET /api/v1/reports/rpm?from=YYYY-MM-DD&days=30&format=csv
func (s *Server) rpmReport(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	ds, ok := s.o.Store.(dayStore)
	if !ok {
		return vigil.Errorf(vigil.ENOTFOUND, "this store cannot report reading days")
	}
	q := r.URL.Query()
	from := s.o.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -30)
	if v := q.Get("from"); v != "" {
		t, err := time.Parse(time.DateOnly, v)
		if err != nil {
			return vigil.FieldErrorf("from", "invalid", "from is a date YYYY-MM-DD")
		}
		from = t
	}
	days, err := intParam(q.Get("days"), 30)
	if err != nil || days < 1 || days > 366 {
		return vigil.FieldErrorf("days", "invalid", "days is 1 to 366")
	}
	to := from.AddDate(0, 0, days)
	ps, _, err := s.o.Store.FindPatients(r.Context(), vigil.PatientFilter{Limit: 1_000_000})
	if err != nil {
		return err
	}
	rows := make([]RPMRow, 0, len(ps))
	for _, p := range ps {
		d, err := ds.ReadingDays(r.Context(), p.ID, from, to)
		if err != nil {
			return err
		}
		revs, err := s.o.Store.FindReviews(r.Context(), p.ID, from, to)
		if err != nil {
			return err
		}
		mins := 0
		for _, rv := range revs {
			mins += rv.Minutes
		}
		rows = append(rows, RPMRow{Patient: p.ID, Identifier: p.Identifier, From: from.Format(time.DateOnly), To: to.Format(time.DateOnly),
			DaysWithReadings: len(d), Qualifies: len(d) >= 16, ReviewMinutes: mins, ReviewQualifies: mins >= 20})
	}
	if q.Get("format") == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="rpm-`+from.Format(time.DateOnly)+`.csv"`)
		cw := csv.NewWriter(w)
		cw.Write([]string{"patient", "identifier", "from", "to", "days_with_readings", "qualifies", "review_minutes", "review_qualifies"})
		for _, row := range rows {
			cw.Write([]string{row.Patient, row.Identifier, row.From, row.To, strconv.Itoa(row.DaysWithReadings), strconv.FormatBool(row.Qualifies),
				strconv.Itoa(row.ReviewMinutes), strconv.FormatBool(row.ReviewQualifies)})
		}
		cw.Flush()
		return cw.Error()
	}
	writeJSON(w, http.StatusOK, rows)
	return nil
}

// ReviewRequest logs clinician review time.
type ReviewRequest struct {
	Minutes int       `json:"minutes"`
	At      time.Time `json:"at"` // default now
	Note    string    `json:"note"`
}

func (s *Server) addReview(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	var req ReviewRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	pt, err := s.o.Store.FindPatientByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	now := s.o.Now().UTC()
	if req.At.IsZero() {
		req.At = now
	}
	switch {
	case req.Minutes < 1 || req.Minutes > 240:
		return vigil.FieldErrorf("minutes", "invalid", "log 1 to 240 minutes per review")
	case req.At.After(now.Add(5 * time.Minute)):
		return vigil.FieldErrorf("at", "future", "a review cannot be logged in the future")
	case len(req.Note) > 2000:
		return vigil.FieldErrorf("note", "too-long", "keep the note under 2,000 characters")
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	rv := &vigil.Review{ID: fmt.Sprintf("%x", rnd), PatientID: pt.ID, By: p.UserID, At: req.At.UTC(), Minutes: req.Minutes, Note: req.Note, Logged: now}
	if err := s.o.Store.AddReview(r.Context(), rv); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, rv)
	return nil
}

func (s *Server) listReviews(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	to := s.o.Now().UTC().Add(time.Minute)
	rs, err := s.o.Store.FindReviews(r.Context(), r.PathValue("id"), to.AddDate(-1, 0, 0), to)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(rs))
	return nil
}
