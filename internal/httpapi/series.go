package httpapi

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/tsdb"
)

// chunkStore reads them in the chunk format (the embedded store passes
// its compacted chunks on as they are).
type chunkStore interface {
	ReadSeriesChunks(ctx context.Context, patientID, code, deviceID string, from, to time.Time, max int) ([]vigil.SeriesChunks, error)
}

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
	from, to, err := timeRange(q, s.o.Now(), 24*time.Hour)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if _, err := s.o.Store.FindPatientByID(r.Context(), id); err != nil {
		return err
	}
	if r.Header.Get("Accept") == SeriesChunkType {
		var chunks []vigil.SeriesChunks
		var err error
		if cs, ok := ss.(chunkStore); ok {
			if chunks, err = cs.ReadSeriesChunks(r.Context(), id, code, q.Get("device"), from, to, MaxSeriesPoints); err != nil {
				return err
			}
		} else {
			data, err := ss.ReadSeries(r.Context(), id, code, q.Get("device"), from, to, MaxSeriesPoints)
			if err != nil {
				return err
			}
			if chunks, err = encodeChunks(data); err != nil {
				return err
			}
		}
		return writeSeriesChunks(w, chunks)
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

// SeriesChunkType is the compact series API's binary form (Accept:
// application/vnd.vigil.series-chunks): "VGS1", then per series the
// device, method and unit (each a uvarint length and the bytes), the
// number of chunks (uvarint) and each chunk (a uvarint length and the
// bytes) in Vigil's time-series chunk format (docs/formats/pebble.md:
// delta-of-delta times, scaled-integer values), in time order: a day at
// 1 Hz is about 50 KB instead of about 0.9 MB of JSON.
const SeriesChunkType = "application/vnd.vigil.series-chunks"

func encodeChunks(data []vigil.SeriesData) ([]vigil.SeriesChunks, error) {
	out := make([]vigil.SeriesChunks, len(data))
	for i, d := range data {
		smp := make([]tsdb.Sample, len(d.T))
		for j := range d.T {
			smp[j] = tsdb.Sample{T: d.T[j], V: d.V[j]}
		}
		c, err := tsdb.Encode(smp)
		if err != nil {
			return nil, err
		}
		out[i] = vigil.SeriesChunks{Device: d.Device, Method: d.Method, Unit: d.Unit, Chunks: [][]byte{c}}
	}
	return out, nil
}

func writeSeriesChunks(w http.ResponseWriter, data []vigil.SeriesChunks) error {
	n := 4
	for _, d := range data {
		n += 40 + len(d.Device) + len(d.Method) + len(d.Unit)
		for _, c := range d.Chunks {
			n += 10 + len(c)
		}
	}
	b := make([]byte, 0, n)
	b = append(b, "VGS1"...)
	str := func(s []byte) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	for _, d := range data {
		str([]byte(d.Device))
		str([]byte(d.Method))
		str([]byte(d.Unit))
		b = binary.AppendUvarint(b, uint64(len(d.Chunks)))
		for _, c := range d.Chunks {
			str(c)
		}
	}
	w.Header().Set("Content-Type", SeriesChunkType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, err := w.Write(b)
	return err
}

// DecodeSeriesChunks reads the binary form back (what a Go client does).
func DecodeSeriesChunks(b []byte) ([]vigil.SeriesData, error) {
	if len(b) < 4 || string(b[:4]) != "VGS1" {
		return nil, fmt.Errorf("not a series-chunks body")
	}
	b = b[4:]
	uv := func() (uint64, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, fmt.Errorf("truncated series-chunks body")
		}
		b = b[k:]
		return n, nil
	}
	next := func() ([]byte, error) {
		n, err := uv()
		if err != nil || uint64(len(b)) < n {
			return nil, fmt.Errorf("truncated series-chunks body")
		}
		v := b[:n]
		b = b[n:]
		return v, nil
	}
	var out []vigil.SeriesData
	for len(b) > 0 {
		var parts [3][]byte
		for i := range parts {
			var err error
			if parts[i], err = next(); err != nil {
				return nil, err
			}
		}
		d := vigil.SeriesData{Device: string(parts[0]), Method: string(parts[1]), Unit: string(parts[2])}
		nc, err := uv()
		if err != nil {
			return nil, err
		}
		cs := make([][]byte, nc)
		total := 0
		for i := range cs {
			if cs[i], err = next(); err != nil {
				return nil, err
			}
			k, err := tsdb.Count(cs[i])
			if err != nil {
				return nil, err
			}
			total += k
		}
		d.T, d.V = make([]int64, 0, total), make([]float64, 0, total)
		for _, c := range cs {
			smp, err := tsdb.Decode(c)
			if err != nil {
				return nil, err
			}
			for _, x := range smp {
				d.T, d.V = append(d.T, x.T), append(d.V, x.V)
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// patientRollups serves the 1-minute or 1-hour rollups (min, max, mean,
// count) kept after raw readings expire: GET
// /api/v1/patients/{id}/rollups?code=&resolution=1h&from=&to= (default the
// last 30 days).
func (s *Server) patientRollups(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	rs, ok := s.o.Store.(vigil.Lifecycle)
	if !ok {
		return vigil.Errorf(vigil.ENOTFOUND, "this store keeps no rollups")
	}
	q := r.URL.Query()
	code := q.Get("code")
	if code == "" {
		return vigil.FieldErrorf("code", "required", "name the LOINC code, e.g. code=8867-4")
	}
	res := map[string]time.Duration{"1m": vigil.RollupMinute, "1h": vigil.RollupHour, "": vigil.RollupHour}[q.Get("resolution")]
	if res == 0 {
		return vigil.FieldErrorf("resolution", "invalid", "resolution is 1m or 1h")
	}
	from, to, err := timeRange(q, s.o.Now(), 30*24*time.Hour)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if _, err := s.o.Store.FindPatientByID(r.Context(), id); err != nil {
		return err
	}
	out, err := rs.ReadRollups(r.Context(), id, code, res, from, to)
	if err != nil {
		return err
	}
	if out == nil {
		out = []vigil.RollupSeries{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"patient": id, "code": code, "resolution": q.Get("resolution"), "series": out})
	return nil
}

// timeRange reads from and to (RFC 3339) of a query: by default the span
// up to now; from must come before to.
func timeRange(q url.Values, now time.Time, span time.Duration) (from, to time.Time, err error) {
	to = now.UTC()
	from = to.Add(-span)
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return from, to, vigil.FieldErrorf(p.name, "invalid", "%s is a time like 2026-11-30T08:00:00Z", p.name)
			}
			*p.t = t
		}
	}
	if !from.Before(to) {
		return from, to, vigil.FieldErrorf("to", "invalid", "to must come after from")
	}
	return from, to, nil
}
