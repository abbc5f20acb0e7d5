package pgstore_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

// BenchmarkGroupCommits puts on the store the load `vigil bench` puts on a
// node in PostgreSQL mode: 16 devices numbering their readings, a heart
// rate each, group commits of 128 readings (8 consecutive from each
// device) with 4 under way at once, as a node runs them across a network
// (on loopback it runs one: `vigil bench` measures that). It
// reports readings/s; PostgreSQL shares the machine's cores with it, as
// with the node.
func BenchmarkGroupCommits(b *testing.B) {
	const devices, perDevice, commits = 16, 8, 4
	ctx := context.Background()
	s := open(b)
	defer s.Close()
	var mu sync.Mutex
	next := 0 // the next round of perDevice numbers
	batch := func() []*vigil.Reading {
		mu.Lock()
		r := next
		next++
		mu.Unlock()
		now := time.Now()
		rs := make([]*vigil.Reading, 0, devices*perDevice)
		for d := range devices {
			dev := "bench-dev-" + strconv.Itoa(d)
			for k := range perDevice {
				n := r*perDevice + k
				rs = append(rs, &vigil.Reading{DeviceID: dev, ID: strconv.Itoa(n), PatientID: "BENCH-" + strconv.Itoa(d),
					Time: now.Add(time.Duration(k) * 37 * time.Microsecond), Received: now,
					Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: float64(60 + n%40), Unit: "/min"}}})
			}
		}
		return rs
	}
	if _, err := s.AppendReadings(ctx, batch()); err != nil { // the series exist
		b.Fatal(err)
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	work := make(chan struct{})
	for range commits {
		wg.Go(func() {
			for range work {
				if _, err := s.AppendReadings(ctx, batch()); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for b.Loop() {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	b.ReportMetric(float64(b.N*devices*perDevice)/b.Elapsed().Seconds(), "readings/s")
}
