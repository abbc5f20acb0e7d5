package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

// With --retain-readings, readings past it are rolled up and removed; the
// API serves the hourly rollups a chart of the trend needs.
func TestRetentionAndRollupsAPI(t *testing.T) {
	ctx := context.Background()
	e := startWith(t, node.Options{MaxReadingAge: -1, Retention: pebble.Retention{Readings: 24 * time.Hour}})
	old := time.Now().Add(-72 * time.Hour).Truncate(2 * time.Hour)
	var body []byte
	body = append(body, '[')
	for i := range 120 {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, reading("r"+time.Duration(i).String(), old.Add(time.Duration(i)*time.Minute), `{"code":"8867-4","value":`+jsonNum(60+i%10)+`,"unit":"/min"}`)...)
	}
	body = append(body, ']')
	secret, err := e.n.Admin.AddDevice(ctx, &vigil.Device{ID: "mon-2", Kind: vigil.DeviceBedsideMonitor})
	must(t, err)
	must(t, e.n.Admin.Assign(ctx, "mon-2", "p1", old.Add(-time.Hour)))
	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/mon-2/readings", bytes.NewReader(body))
	req.SetBasicAuth("mon-2", secret)
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("ingest: %d", res.StatusCode)
	}
	st, err := e.n.Store.(*pebble.Store).EnforceRetention(ctx, time.Now())
	must(t, err)
	if st.Samples != 120 {
		t.Fatalf("retention: %+v", st)
	}
	var out struct {
		Series []pebble.RollupSeries
	}
	if code := e.call(t, "GET", "/api/v1/patients/p1/rollups?code=8867-4&resolution=1h&from="+old.Add(-time.Hour).UTC().Format(time.RFC3339), e.token, nil, &out); code != 200 {
		t.Fatalf("rollups: %d", code)
	}
	if len(out.Series) != 1 || len(out.Series[0].Rollups) != 2 || out.Series[0].Rollups[0].Count != 60 || out.Series[0].Rollups[0].Min != 60 || out.Series[0].Rollups[0].Max != 69 {
		b, _ := json.Marshal(out)
		t.Fatalf("rollups: %s", b)
	}
	obs, _, err := e.n.Store.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Limit: 10})
	must(t, err)
	if len(obs) != 0 {
		t.Fatalf("%d raw observations past their retention", len(obs))
	}
}

func jsonNum(n int) string { b, _ := json.Marshal(n); return string(b) }
