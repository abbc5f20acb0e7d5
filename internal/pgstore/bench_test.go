package pgstore_test

import (
	"context"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/storetest"
)

// BenchmarkBytesPerReading stores the embedded store's benchmark day (one
// patient, 1 Hz heart rate and SpO2: 172,800 values) in PostgreSQL and
// reports the samples table's size on disk (heap, TOAST and its primary
// key index, after VACUUM) per value, and the append rate. Compare
// internal/pebble BenchmarkDiskBytesPerReading.
func BenchmarkBytesPerReading(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		s := open(b)
		b.StartTimer()
		const n = 86400
		rng := rand.New(rand.NewPCG(1, 1))
		batch := make([]*vigil.Reading, 0, 1000)
		hr, spo2 := 72.0, 97.0
		for i := range n {
			ts := storetest.T0.Add(time.Duration(i) * time.Second)
			hr += (75-hr)*0.01 + rng.NormFloat64()*0.4
			spo2 += (97-spo2)*0.05 + rng.NormFloat64()*0.2
			batch = append(batch, &vigil.Reading{DeviceID: "mon", ID: "r" + strconv.Itoa(i), PatientID: "p1", Time: ts, Received: ts,
				Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: math.Round(hr), Unit: "/min"}, {Code: vigil.LOINCSpO2, Value: math.Round(min(spo2, 100)), Unit: "%"}}})
			if len(batch) == cap(batch) {
				if _, err := s.AppendReadings(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(2*n)/b.Elapsed().Seconds(), "values/s")
		conn, err := pgx.Connect(ctx, dbURL())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "VACUUM ANALYZE "+s.Schema()+".samples"); err != nil {
			b.Fatal(err)
		}
		var samples, ids int64
		err = conn.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace ns ON ns.oid = p.relnamespace WHERE p.relname = 'samples' AND ns.nspname = $1`, s.Schema()).Scan(&samples)
		if err == nil {
			err = conn.QueryRow(ctx, "SELECT pg_total_relation_size($1::regclass)", s.Schema()+".reading_ids").Scan(&ids)
		}
		conn.Close(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(samples)/(2*n), "bytes/value")
		b.ReportMetric(float64(ids)/n, "idkey-bytes/reading")
		s.Close()
		b.StartTimer()
	}
}
