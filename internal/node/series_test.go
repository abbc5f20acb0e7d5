package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/node"
)

// The compact series API gives a day of 1 Hz values as columns: a start
// time, millisecond steps and values, in order; a range is required to be
// a range; the patient must exist.
func TestSeriesAPI(t *testing.T) {
	checkSeriesAPI(t, start(t))
}

func TestSeriesAPIOnPostgres(t *testing.T) {
	u, schema := pgSchema(t)
	checkSeriesAPI(t, startWith(t, node.Options{Postgres: u, PostgresSchema: schema}))
}

func checkSeriesAPI(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Hour)
	var batch []*vigil.Reading
	for i := range 3600 {
		if i == 10 {
			continue // a gap
		}
		at := t0.Add(time.Duration(i) * time.Second)
		batch = append(batch, &vigil.Reading{DeviceID: e.device, ID: fmt.Sprint("s", i), PatientID: "p1", Time: at, Received: at,
			Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: float64(60 + i%30), Unit: "/min"}}})
	}
	if _, err := e.n.Store.AppendReadings(ctx, batch); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Patient, Code string
		Series        []struct {
			Device, Unit string
			Start        int64
			DT           []int64 `json:"dt"`
			V            []float64
		}
	}
	q := url.Values{"code": {vigil.LOINCHeartRate}, "from": {t0.Format(time.RFC3339)}, "to": {t0.Add(time.Hour).Format(time.RFC3339)}}
	if st := e.call(t, "GET", "/api/v1/patients/p1/series?"+q.Encode(), e.token, nil, &res); st != 200 || len(res.Series) != 1 {
		t.Fatalf("series: %d %+v", st, res)
	}
	s := res.Series[0]
	if s.Device != e.device || s.Unit != "/min" || s.Start != t0.UnixMilli() || len(s.DT) != 3599 || len(s.V) != 3599 ||
		s.DT[0] != 0 || s.DT[1] != 1000 || s.DT[10] != 2000 || s.V[0] != 60 || s.V[11] != 72 {
		t.Fatalf("columns: start %d, %d steps, first %v, around the gap %v %v", s.Start, len(s.DT), s.V[:2], s.DT[9:12], s.V[9:12])
	}
	// The binary form holds the same values.
	req, _ := http.NewRequest("GET", e.n.URL()+"/api/v1/patients/p1/series?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	req.Header.Set("Accept", httpapi.SeriesChunkType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	bin, err := httpapi.DecodeSeriesChunks(body)
	if err != nil || resp.Header.Get("Content-Type") != httpapi.SeriesChunkType || len(bin) != 1 || len(bin[0].T) != 3599 || bin[0].Device != e.device {
		t.Fatalf("binary series: %v %d", err, len(bin))
	}
	at := s.Start
	for i := range bin[0].T {
		at += s.DT[i]
		if bin[0].T[i] != at || bin[0].V[i] != s.V[i] {
			t.Fatalf("binary value %d: %d %v, JSON %d %v", i, bin[0].T[i], bin[0].V[i], at, s.V[i])
		}
	}
	t.Logf("an hour at 1 Hz: %d bytes as chunks", len(body))
	q.Set("to", t0.Add(-time.Hour).Format(time.RFC3339))
	var prob struct{ Field, Reason string }
	if st := e.call(t, "GET", "/api/v1/patients/p1/series?"+q.Encode(), e.token, nil, &prob); st != 400 || prob.Field != "to" {
		t.Fatalf("to before from: %d %+v", st, prob)
	}
	if st := e.call(t, "GET", "/api/v1/patients/p1/series?from="+url.QueryEscape(t0.Format(time.RFC3339)), e.token, nil, &prob); st != 400 || prob.Field != "code" {
		t.Fatalf("no code: %d %+v", st, prob)
	}
	if st := e.call(t, "GET", "/api/v1/patients/nobody/series?code=8867-4", e.token, nil, &prob); st != 404 {
		t.Fatalf("unknown patient: %d", st)
	}
}
