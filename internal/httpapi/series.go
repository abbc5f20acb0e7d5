package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/vigil-iomt/vigil"
)

// seriesStore reads a code's values as columns.
type seriesStore interface {
	ReadSeries(ctx context.Context, patientID, code, deviceID string, from, to time.Time, max int) ([]vigil.SeriesData, error)
}

// MaxSeriesPoints bounds one series answer (a week at 1 Hz is 604,800).
const MaxSeriesPoints = 1_000_000

// patientSeries: GET /api/v1/patients/{id}/series?code=8867-4&from=&to=&device=
// — the compact series API (docs/api.md): a code's values over a range as
// columns, times as millisecond steps, for charts and analysis where a
// FHIR resource per value is the wrong shape (a day at 1 Hz is 86,400).
func (s *Server) patientSeries(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	ss, ok := s.o.Store.(seriesStore)
	if !ok {
		return vigil.Errorf(vigil.ENOTFOUND, "this store cannot read series")
	}
	q := r.URL.Query()
	code := q.Get("code")
	if code == "" {
		return vigil.FieldErrorf("code", "required", "name the LOINC code, e.g. code=8867-4")
	}
	to := s.o.Now().UTC()
	from := to.Add(-24 * time.Hour)
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return vigil.FieldErrorf(p.name, "invalid", "%s is a time like 2026-11-30T08:00:00Z", p.name)
			}
			*p.t = t
		}
	}
	if !from.Before(to) {
		return vigil.FieldErrorf("to", "invalid", "to must come after from")
	}
	id := r.PathValue("id")
	if _, err := s.o.Store.FindPatientByID(r.Context(), id); err != nil {
		return err
	}
	data, err := ss.ReadSeries(r.Context(), id, code, q.Get("device"), from, to, MaxSeriesPoints)
	if err != nil {
		return err
	}
	n := 0
	for _, d := range data {
		n += len(d.T)
	}
	b := make([]byte, 0, 256+n*10)
	b = append(b, `{"patient":`...)
	b = strconv.AppendQuote(b, id)
	b = append(b, `,"code":`...)
	b = strconv.AppendQuote(b, code)
	b = append(b, `,"from":"`...)
	b = from.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","to":"`...)
	b = to.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","series":[`...)
	for i, d := range data {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"device":`...)
		b = strconv.AppendQuote(b, d.Device)
		if d.Method != "" {
			b = append(b, `,"method":`...)
			b = strconv.AppendQuote(b, d.Method)
		}
		b = append(b, `,"unit":`...)
		b = strconv.AppendQuote(b, d.Unit)
		b = append(b, `,"start":`...)
		b = strconv.AppendInt(b, d.T[0], 10)
		b = append(b, `,"dt":[`...)
		prev := d.T[0]
		for j, t := range d.T {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, t-prev, 10)
			prev = t
		}
		b = append(b, `],"v":[`...)
		for j, v := range d.V {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, v, 'f', -1, 64)
		}
		b = append(b, "]}"...)
	}
	b = append(b, "]}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, err = w.Write(b)
	return err
}
