package httpapi

import (
	"context"
	"encoding/csv"
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
		rows = append(rows, RPMRow{Patient: p.ID, Identifier: p.Identifier, From: from.Format(time.DateOnly), To: to.Format(time.DateOnly),
			DaysWithReadings: len(d), Qualifies: len(d) >= 16})
	}
	if q.Get("format") == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="rpm-`+from.Format(time.DateOnly)+`.csv"`)
		cw := csv.NewWriter(w)
		cw.Write([]string{"patient", "identifier", "from", "to", "days_with_readings", "qualifies"})
		for _, row := range rows {
			cw.Write([]string{row.Patient, row.Identifier, row.From, row.To, strconv.Itoa(row.DaysWithReadings), strconv.FormatBool(row.Qualifies)})
		}
		cw.Flush()
		return cw.Error()
	}
	writeJSON(w, http.StatusOK, rows)
	return nil
}
