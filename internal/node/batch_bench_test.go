package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/node"
)

// BenchmarkBatchIngest writes the same 5,000,000 readings — 20 bedside
// monitors' heart rate, SpO2, respiration rate, temperature and systolic
// pressure, one value per reading — in batches of 5,000 from 4 concurrent
// clients to each system, in the same run, every batch durable before its
// answer:
//
//	vigil     POST /api/v1/devices/{id}/readings, canonical JSON, to a
//	          node on the embedded store (sealed at rest, rules, NEWS2 and
//	          baselines evaluated, as vigil serve runs it)
//	influxdb  POST /write line protocol to InfluxDB 1.6 (Debian's influxd,
//	          started by the benchmark; skipped when missing)
//	postgres  COPY into a plain table indexed on (patient, code, t), one
//	          transaction per batch (synchronous_commit on), through pgx
//
// and reports readings per second and Vigil's ratio to each peer, and the
// CPU time this process (Vigil and the load generator) spent in Vigil's
// phase.
//
// go test -run '^$' -bench BatchIngest -benchtime 1x ./internal/node/
//
// VIGIL_BENCH_CPUPROFILE=FILE writes a CPU profile of Vigil's phase alone
// (the peers' phases and the setup left out).
func BenchmarkBatchIngest(b *testing.B) {
	ctx := context.Background()
	const monitors, batch, clients, batches = 20, 5000, 4, 1000
	codes := []string{vigil.LOINCHeartRate, vigil.LOINCSpO2, vigil.LOINCRespRate, vigil.LOINCBodyTemp, vigil.LOINCSystolic}
	units := []string{"/min", "%", "/min", "Cel", "mm[Hg]"}
	base := []float64{72, 97, 16, 36.8, 120}
	now := time.Now().Truncate(time.Second)
	t0 := now.Add(-24 * time.Hour)
	// Batch k is monitor k%20's readings k/20·1000 … seconds after t0, five
	// codes per second.
	type row struct {
		code string
		unit string
		t    time.Time
		v    float64
	}
	rowsOf := func(k int) []row {
		rs := make([]row, batch)
		for j := range rs {
			c := j % len(codes)
			rs[j] = row{codes[c], units[c], t0.Add(time.Duration((k/monitors)*batch/len(codes)+j/len(codes)) * time.Second), base[c] + float64(j%7)*0.5 - 1.5}
		}
		return rs
	}
	total := float64(batches * batch)
	run := func(b *testing.B, send func(k int) error) float64 {
		b.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		start := time.Now()
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := c; k < batches; k += clients {
					if err := send(k); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		return total / time.Since(start).Seconds()
	}

	// As vigil serve runs (cmd/vigil/serve.go): collect at 300 % heap growth.
	defer debug.SetGCPercent(debug.SetGCPercent(300))
	for b.Loop() {
		// Vigil
		n, err := node.Start(ctx, node.Options{DataDir: b.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0",
			HTTPLimits: httpapi.Limits{Address: 1e9, AddressBurst: 1 << 30, User: 1e9, UserBurst: 1 << 30, Device: 1e9, DeviceBurst: 1 << 30}})
		if err != nil {
			b.Fatal(err)
		}
		secrets := make([]string, monitors)
		for m := range monitors {
			if err := n.Admin.AddPatient(ctx, &vigil.Patient{ID: fmt.Sprint("p", m)}); err != nil {
				b.Fatal(err)
			}
			if secrets[m], err = n.Admin.AddDevice(ctx, &vigil.Device{ID: fmt.Sprint("mon-", m), Kind: vigil.DeviceBedsideMonitor}); err != nil {
				b.Fatal(err)
			}
			if err := n.Admin.Assign(ctx, fmt.Sprint("mon-", m), fmt.Sprint("p", m), t0.Add(-time.Hour)); err != nil {
				b.Fatal(err)
			}
		}
		bodies := make([][]byte, batches)
		for k := range batches {
			var buf bytes.Buffer
			buf.WriteByte('[')
			for j, r := range rowsOf(k) {
				if j > 0 {
					buf.WriteByte(',')
				}
				fmt.Fprintf(&buf, `{"id":"%d-%d","time":"%s","values":[{"code":"%s","value":%g,"unit":"%s"}]}`, k, j, r.t.UTC().Format(time.RFC3339), r.code, r.v, r.unit)
			}
			buf.WriteByte(']')
			bodies[k] = buf.Bytes()
		}
		// The bodies (550 MB) go outside the Go heap: in a real deployment
		// they are in the devices' memory, not the server's. On the heap
		// they raised the node's GC goal to gigabytes of fresh pages, which
		// the first run of each process faulted in (300,000 page faults,
		// 4–6 s more CPU than later runs).
		bodies, unmap := offHeap(b, bodies)
		runtime.GC() // the heap copies are garbage now: the GC goal follows the node alone
		client := &http.Client{Timeout: time.Minute}
		var ru0, ru1 syscall.Rusage
		syscall.Getrusage(0, &ru0)
		if p := os.Getenv("VIGIL_BENCH_CPUPROFILE"); p != "" {
			f, err := os.Create(p)
			if err != nil {
				b.Fatal(err)
			}
			pprof.StartCPUProfile(f)
		}
		var resent atomic.Int64
		vigilRate := run(b, func(k int) error {
			m := k % monitors
			for {
				req, _ := http.NewRequest("POST", n.URL()+fmt.Sprintf("/api/v1/devices/mon-%d/readings", m), bytes.NewReader(bodies[k]))
				req.SetBasicAuth(fmt.Sprint("mon-", m), secrets[m])
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200:
					return nil
				case resp.StatusCode == http.StatusServiceUnavailable:
					// Shed under overload: sent again after Retry-After,
					// as a device does (the wait counts in the rate).
					resent.Add(1)
					wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
					time.Sleep(max(time.Duration(wait)*time.Second, 100*time.Millisecond))
				default:
					return fmt.Errorf("vigil batch %d: %d %.300s", k, resp.StatusCode, msg)
				}
			}
		})
		pprof.StopCPUProfile()
		b.ReportMetric(float64(resent.Load()), "vigil-resent-batches")
		syscall.Getrusage(0, &ru1)
		b.ReportMetric(float64(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano())/1e9, "vigil-phase-cpu-s")
		n.Close()
		unmap()

		// InfluxDB 1.6
		influxRate := 0.0
		if ib := startInfluxIfPresent(b); ib != "" {
			resp, err := http.Post(ib+"/query?q="+url.QueryEscape("CREATE DATABASE vigil"), "text/plain", nil)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			lines := make([][]byte, batches)
			for k := range batches {
				var buf bytes.Buffer
				for _, r := range rowsOf(k) {
					fmt.Fprintf(&buf, "vitals,patient=p%d,code=%s value=%g %d\n", k%monitors, r.code, r.v, r.t.Unix())
				}
				lines[k] = buf.Bytes()
			}
			influxRate = run(b, func(k int) error {
				resp, err := client.Post(ib+"/write?db=vigil&precision=s", "text/plain", bytes.NewReader(lines[k]))
				if err != nil {
					return err
				}
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 204 {
					return fmt.Errorf("influx batch %d: %d %s", k, resp.StatusCode, msg)
				}
				return nil
			})
		}

		// PostgreSQL COPY
		dsn, schema := pgSchema(b)
		conns := make([]*pgx.Conn, clients)
		for c := range conns {
			if conns[c], err = pgx.Connect(ctx, dsn); err != nil {
				b.Fatal(err)
			}
			defer conns[c].Close(ctx)
		}
		for _, q := range []string{"CREATE SCHEMA " + schema, "CREATE TABLE " + schema + ".plain (patient text, code text, t timestamptz, v double precision)",
			"CREATE INDEX ON " + schema + ".plain (patient, code, t)"} {
			if _, err := conns[0].Exec(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		rows := make([][][]any, batches)
		for k := range batches {
			for _, r := range rowsOf(k) {
				rows[k] = append(rows[k], []any{fmt.Sprint("p", k%monitors), r.code, r.t, r.v})
			}
		}
		pgRate := run(b, func(k int) error {
			_, err := conns[k%clients].CopyFrom(ctx, pgx.Identifier{schema, "plain"}, []string{"patient", "code", "t", "v"}, pgx.CopyFromRows(rows[k]))
			return err
		})

		b.ReportMetric(vigilRate, "vigil-readings/s")
		b.ReportMetric(pgRate, "pg-copy-readings/s")
		b.ReportMetric(vigilRate/pgRate, "vigil/pg")
		if influxRate > 0 {
			b.ReportMetric(influxRate, "influx-readings/s")
			b.ReportMetric(vigilRate/influxRate, "vigil/influx")
		}
	}
}

// offHeap copies bufs into one anonymous mapping outside the Go heap and
// returns them there, with the function that unmaps them.
func offHeap(b *testing.B, bufs [][]byte) ([][]byte, func()) {
	size := 0
	for _, p := range bufs {
		size += len(p)
	}
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		b.Fatal(err)
	}
	out := make([][]byte, len(bufs))
	off := 0
	for i, p := range bufs {
		out[i] = mem[off : off+copy(mem[off:], p) : off+len(p)]
		off += len(p)
	}
	return out, func() { syscall.Munmap(mem) }
}

// startInfluxIfPresent is startInflux, or "" (not a skip) when influxd is
// not installed, so the other peers are still measured.
func startInfluxIfPresent(b *testing.B) string {
	if !influxInstalled() {
		b.Log("influxd not installed (apt-get install influxdb): InfluxDB not measured")
		return ""
	}
	return startInflux(b)
}

func influxInstalled() bool {
	_, err := exec.LookPath("influxd")
	return err == nil
}
