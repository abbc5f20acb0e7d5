package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

// BenchmarkReadDay reads back 24 hours of one vital sign at 1 Hz (86,400
// points) the way each system is asked for it, in the same run on the
// same data:
//
//	vigil-api  GET /api/v1/patients/p1/series (the compact series API,
//	           HTTP and JSON decoding included) from a node on the
//	           embedded store, compacted
//	vigil-api-chunks  the same in its binary form (Accept:
//	           application/vnd.vigil.series-chunks), decoded
//	postgres   SELECT t, v FROM a plain table with an index on
//	           (patient, code, t), through pgx (this machine's PostgreSQL)
//	influxdb   InfluxQL over InfluxDB 1.6's HTTP API, JSON decoded (Debian's
//	           influxd, started by the benchmark; skipped when missing)
//
// go test -run '^$' -bench ReadDay -benchtime 20x ./internal/node/
func BenchmarkReadDay(b *testing.B) {
	ctx := context.Background()
	e := startWith(b, vigilOptions())
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -2)
	const n = 86400
	rng := rand.New(rand.NewPCG(7, 7))
	ts := make([]time.Time, n)
	vs := make([]float64, n)
	hr := 72.0
	for i := range n {
		ts[i] = day.Add(time.Duration(i) * time.Second)
		hr += (75-hr)*0.01 + rng.NormFloat64()*0.4
		vs[i] = math.Round(hr)
	}
	batch := make([]*vigil.Reading, 0, 1000)
	for i := range n {
		batch = append(batch, &vigil.Reading{DeviceID: e.device, ID: fmt.Sprint("d", i), PatientID: "p1", Time: ts[i], Received: ts[i],
			Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: vs[i], Unit: "/min"}}})
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := e.n.Store.AppendReadings(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if _, err := e.n.Store.(*pebble.Store).Compact(ctx); err != nil {
		b.Fatal(err)
	}
	from, to := day.Format(time.RFC3339), day.Add(24*time.Hour).Format(time.RFC3339)

	b.Run("vigil-api", func(b *testing.B) {
		u := e.n.URL() + "/api/v1/patients/p1/series?" + url.Values{"code": {vigil.LOINCHeartRate}, "from": {from}, "to": {to}}.Encode()
		for b.Loop() {
			req, _ := http.NewRequest("GET", u, nil)
			req.Header.Set("Authorization", "Bearer "+e.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			var res struct {
				Series []struct {
					Start int64
					DT    []int64 `json:"dt"`
					V     []float64
				}
			}
			err = json.NewDecoder(resp.Body).Decode(&res)
			resp.Body.Close()
			if err != nil || len(res.Series) != 1 || len(res.Series[0].V) != n {
				b.Fatalf("series: %v %d series, %d values", err, len(res.Series), len(res.Series[0].V))
			}
		}
	})

	b.Run("vigil-api-chunks", func(b *testing.B) {
		u := e.n.URL() + "/api/v1/patients/p1/series?" + url.Values{"code": {vigil.LOINCHeartRate}, "from": {from}, "to": {to}}.Encode()
		size := 0
		for b.Loop() {
			req, _ := http.NewRequest("GET", u, nil)
			req.Header.Set("Authorization", "Bearer "+e.token)
			req.Header.Set("Accept", httpapi.SeriesChunkType)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				b.Fatal(err)
			}
			size = len(body)
			res, err := httpapi.DecodeSeriesChunks(body)
			if err != nil || len(res) != 1 || len(res[0].V) != n {
				b.Fatalf("series: %v %d", err, len(res))
			}
		}
		b.ReportMetric(float64(size), "body-bytes")
	})

	b.Run("postgres", func(b *testing.B) {
		dsn, schema := pgSchema(b)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		for _, q := range []string{"CREATE SCHEMA " + schema, "CREATE TABLE " + schema + ".plain (patient text, code text, t timestamptz, v double precision)",
			"CREATE INDEX ON " + schema + ".plain (patient, code, t)"} {
			if _, err := conn.Exec(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		rows := make([][]any, n)
		for i := range n {
			rows[i] = []any{"p1", vigil.LOINCHeartRate, ts[i], vs[i]}
		}
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{schema, "plain"}, []string{"patient", "code", "t", "v"}, pgx.CopyFromRows(rows)); err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "VACUUM ANALYZE "+schema+".plain"); err != nil {
			b.Fatal(err)
		}
		q := "SELECT t, v FROM " + schema + ".plain WHERE patient = $1 AND code = $2 AND t >= $3 AND t < $4 ORDER BY t"
		b.ResetTimer()
		for b.Loop() {
			rs, err := conn.Query(ctx, q, "p1", vigil.LOINCHeartRate, day, day.Add(24*time.Hour))
			if err != nil {
				b.Fatal(err)
			}
			got := 0
			for rs.Next() {
				var t time.Time
				var v float64
				if err := rs.Scan(&t, &v); err != nil {
					b.Fatal(err)
				}
				got++
			}
			rs.Close()
			if got != n {
				b.Fatalf("%d rows", got)
			}
		}
	})

	b.Run("influxdb", func(b *testing.B) {
		base := startInflux(b)
		post := func(path, ctype string, body io.Reader) {
			resp, err := http.Post(base+path, ctype, body)
			if err != nil {
				b.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				b.Fatalf("%s: %d %s", path, resp.StatusCode, msg)
			}
		}
		post("/query?q="+url.QueryEscape("CREATE DATABASE vigil"), "", nil)
		var lp bytes.Buffer
		for i := range n {
			fmt.Fprintf(&lp, "vitals,patient=p1,code=%s value=%g %d\n", vigil.LOINCHeartRate, vs[i], ts[i].UnixMilli())
			if (i+1)%10000 == 0 || i == n-1 {
				post("/write?db=vigil&precision=ms", "text/plain", &lp)
				lp.Reset()
			}
		}
		q := fmt.Sprintf("SELECT value FROM vitals WHERE patient = 'p1' AND code = '%s' AND time >= '%s' AND time < '%s'", vigil.LOINCHeartRate, from, to)
		u := base + "/query?db=vigil&epoch=ms&q=" + url.QueryEscape(q)
		b.ResetTimer()
		for b.Loop() {
			resp, err := http.Get(u)
			if err != nil {
				b.Fatal(err)
			}
			var res struct {
				Results []struct {
					Series []struct {
						Values [][2]float64
					}
				}
			}
			err = json.NewDecoder(resp.Body).Decode(&res)
			resp.Body.Close()
			if err != nil || len(res.Results) != 1 || len(res.Results[0].Series) != 1 || len(res.Results[0].Series[0].Values) != n {
				b.Fatalf("influx answer: %v %+v", err, len(res.Results))
			}
		}
	})
}

// vigilOptions are the node's options for benchmarks: compaction only
// when asked.
func vigilOptions() node.Options { return node.Options{CompactInterval: -1} }

// startInflux starts Debian's influxd (1.6) on a temp dir and free
// loopback ports and returns its HTTP base URL; it skips the benchmark
// when influxd is not installed (apt-get install influxdb).
func startInflux(b *testing.B) string {
	b.Helper()
	exe, err := exec.LookPath("influxd")
	if err != nil {
		b.Skip("influxd not installed (apt-get install influxdb): no InfluxDB peer")
	}
	dir := b.TempDir()
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	httpPort, rpcPort := port(), port()
	cfg := fmt.Sprintf(`reporting-disabled = true
bind-address = "127.0.0.1:%d"
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "1s"
  compact-full-write-cold-duration = "1s"
[http]
  bind-address = "127.0.0.1:%d"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
`, rpcPort, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), httpPort)
	if err := os.WriteFile(filepath.Join(dir, "influxdb.conf"), []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-config", filepath.Join(dir, "influxdb.conf"))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(base + "/ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 204 {
				return base
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("influxd did not start: %s", strings.TrimSpace(logs.String()))
		}
	}
}
