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
	influxDirs[base] = dir
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

// BenchmarkStorageDay stores a ward's day — 20 patients × 5 vital signs
// (heart rate, SpO2, respiration rate, temperature, systolic pressure) at
// 1 Hz, 8,640,000 values — in Vigil's embedded store (sealed at rest, as
// vigil serve runs it) and in InfluxDB 1.6 in the same run, compacts both,
// and reports bytes per value on disk: Vigil's tables (the WAL is recycled
// and the idempotency keys expire after 7 days, so both are left out) and
// InfluxDB's TSM files after its full compaction.
//
// go test -run '^$' -bench StorageDay -benchtime 1x ./internal/node/
func BenchmarkStorageDay(b *testing.B) {
	ctx := context.Background()
	const patients, n = 20, 86400
	codes := []string{vigil.LOINCHeartRate, vigil.LOINCSpO2, vigil.LOINCRespRate, vigil.LOINCBodyTemp, vigil.LOINCSystolic}
	units := []string{"/min", "%", "/min", "Cel", "mm[Hg]"}
	day := storetestT0()
	// value returns patient p's value of vital k at second i: a slow
	// random walk around a normal value, at the resolution devices send.
	vals := make([][][]float64, patients)
	for p := range patients {
		rng := rand.New(rand.NewPCG(uint64(p), 11))
		vals[p] = make([][]float64, len(codes))
		mean := []float64{75, 97, 16, 36.8, 120}
		step := []float64{0.4, 0.2, 0.3, 0.01, 0.5}
		digits := []float64{1, 1, 1, 10, 1}
		for k := range codes {
			v := mean[k]
			vals[p][k] = make([]float64, n)
			for i := range n {
				v += (mean[k]-v)*0.01 + rng.NormFloat64()*step[k]
				vals[p][k][i] = math.Round(v*digits[k]) / digits[k]
			}
		}
	}
	total := float64(patients * n * len(codes))
	for b.Loop() {
		// Vigil
		dir := b.TempDir()
		o := pebble.DefaultOptions()
		o.CompactInterval = -1
		o.DedupRetention = time.Hour
		now := day.Add(48 * time.Hour)
		o.Now = func() time.Time { return now }
		sl, err := node.OpenSealer(dir)
		if err != nil {
			b.Fatal(err)
		}
		o.Sealer = sl
		s, err := pebble.Open(filepath.Join(dir, "store"), o)
		if err != nil {
			b.Fatal(err)
		}
		batch := make([]*vigil.Reading, 0, 1000)
		for p := range patients {
			for i := range n {
				t := day.Add(time.Duration(i) * time.Second)
				r := &vigil.Reading{DeviceID: fmt.Sprint("mon-", p), ID: fmt.Sprint(i), PatientID: fmt.Sprint("p", p), Time: t, Received: t}
				for k, c := range codes {
					r.Values = append(r.Values, vigil.Measurement{Code: c, Value: vals[p][k][i], Unit: units[k]})
				}
				batch = append(batch, r)
				if len(batch) == cap(batch) || (p == patients-1 && i == n-1) {
					if _, err := s.AppendReadings(ctx, batch); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
			}
		}
		for { // each pass expires at most a million reading ids
			st, err := s.Compact(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if st.Samples == 0 && st.ExpiredDedups == 0 {
				break
			}
		}
		db := s.DB()
		if err := db.Flush(); err != nil {
			b.Fatal(err)
		}
		for range 2 {
			if err := db.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
				b.Fatal(err)
			}
		}
		tables, _ := db.EstimateDiskUsage([]byte{0}, []byte{0xff})
		s.Close()

		// InfluxDB 1.6
		base := startInflux(b)
		ddir := influxDataDir(base)
		post := func(path string, body io.Reader) {
			resp, err := http.Post(base+path, "text/plain", body)
			if err != nil {
				b.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				b.Fatalf("%s: %d %s", path, resp.StatusCode, msg)
			}
		}
		post("/query?q="+url.QueryEscape("CREATE DATABASE vigil"), nil)
		var lp bytes.Buffer
		lines := 0
		for p := range patients {
			for k, c := range codes {
				for i := range n {
					fmt.Fprintf(&lp, "vitals,patient=p%d,code=%s value=%g %d\n", p, c, vals[p][k][i], day.Add(time.Duration(i)*time.Second).UnixMilli())
					if lines++; lines%20000 == 0 {
						post("/write?db=vigil&precision=ms", &lp)
						lp.Reset()
					}
				}
			}
		}
		if lp.Len() > 0 {
			post("/write?db=vigil&precision=ms", &lp)
		}
		// Wait until the shard is fully compacted: the TSM files' size
		// stops changing and no compaction is in progress.
		var tsm int64
		for stable, last := 0, int64(-1); stable < 10; time.Sleep(time.Second) {
			size, tmp := dirSize(filepath.Join(ddir, "data"))
			if size == last && !tmp {
				stable++
			} else {
				stable = 0
			}
			last, tsm = size, size
		}
		b.ReportMetric(float64(tables)/total, "vigil-bytes/value")
		b.ReportMetric(float64(tsm)/total, "influx-bytes/value")
		b.ReportMetric(float64(tables)/float64(tsm), "vigil/influx")
	}
}

// storetestT0 is a fixed day in the past.
func storetestT0() time.Time { return time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC) }

// influxDirs remembers each started influxd's directory by base URL.
var influxDirs = map[string]string{}

func influxDataDir(base string) string { return influxDirs[base] }

// dirSize sums the sizes of the TSM files under dir and says whether a
// compaction's temporary file is there.
func dirSize(dir string) (int64, bool) {
	var n int64
	tmp := false
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		if strings.HasSuffix(p, ".tmp") {
			tmp = true
		}
		if strings.HasSuffix(p, ".tsm") {
			n += info.Size()
		}
		return nil
	})
	return n, tmp
}
