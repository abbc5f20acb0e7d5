package pebble

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/storetest"
)

// keyCount counts the keys under one prefix byte.
func keyCount(t *testing.T, s *Store, p byte) int {
	t.Helper()
	n := 0
	if err := scan(s.db, prefixKey(p), false, func(_, _ []byte) (bool, error) { n++; return true, nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// series reads the heart-rate samples of p1 from device d as time → value.
func series(t *testing.T, s *Store) map[int64]float64 {
	t.Helper()
	sd, err := s.ReadSeries(ctx, "p1", vigil.LOINCHeartRate, "d", storetest.T0.Add(-24*time.Hour), storetest.T0.Add(24*time.Hour), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]float64{}
	for _, d := range sd {
		for i, ts := range d.T {
			if _, dup := out[ts]; dup {
				t.Fatalf("time %d read twice", ts)
			}
			out[ts] = d.V[i]
		}
	}
	return out
}

func TestBatchesMergeIntoChunks(t *testing.T) {
	now := storetest.T0.Add(10 * time.Hour)
	s := openAt(t, &now)
	defer s.Close()
	want := map[int64]float64{}
	batch := func(prefix string, from, n int, v float64) []*vigil.Reading {
		var rs []*vigil.Reading
		for i := from; i < from+n; i++ {
			at := storetest.T0.Add(time.Duration(i) * time.Second)
			rs = append(rs, hrReading("d", fmt.Sprint(prefix, i), at, v+float64(i%5)))
			want[at.UnixMilli()] = v + float64(i%5)
		}
		return rs
	}
	// Three hours at 1 Hz in one call: two chunks, no head keys.
	if _, err := s.AppendReadings(ctx, batch("a", 0, 3*3600, 60)); err != nil {
		t.Fatal(err)
	}
	if h, c := keyCount(t, s, pHead), keyCount(t, s, pChunk); h != 0 || c != 2 {
		t.Fatalf("after a 3-hour batch: %d head keys, %d chunks; want 0 and 2", h, c)
	}
	// An overlapping batch: new ids win at the same times, a re-sent id is
	// a duplicate and changes nothing.
	again := batch("b", 3000, 1000, 80)
	resent := hrReading("d", "a10", storetest.T0.Add(10*time.Second), 1)
	res, err := s.AppendReadings(ctx, append(again, resent))
	if err != nil || res[0].Duplicate || !res[len(res)-1].Duplicate {
		t.Fatalf("overlapping batch: %v %v", res[len(res)-1], err)
	}
	// Live readings, one per call, become head samples; a batch over their
	// span then goes to heads too (a head is read over its chunk), so the
	// newest value still wins.
	for i := 5000; i < 5010; i++ {
		if _, err := s.AppendReadings(ctx, batch("live", i, 1, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AppendReadings(ctx, batch("c", 4990, 40, 120)); err != nil {
		t.Fatal(err)
	}
	if h := keyCount(t, s, pHead); h != 40 {
		t.Fatalf("%d head keys; want the 10 live samples overwritten within the 40 of the batch over them", h)
	}
	check := func(when string) {
		got := series(t, s)
		if len(got) != len(want) {
			t.Fatalf("%s: %d samples read, %d written", when, len(got), len(want))
		}
		for ts, v := range want {
			if got[ts] != v {
				t.Fatalf("%s: at %d read %v, want %v", when, ts, got[ts], v)
			}
		}
	}
	check("before compaction")
	s.opts.CompactAge = -time.Hour
	if _, err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if h := keyCount(t, s, pHead); h != 0 {
		t.Fatalf("%d head keys after compaction", h)
	}
	check("after compaction")
}

// TestConcurrentChunkWriters has batches, live readings and Compact rewrite
// the same chunks at once: no sample may be lost to a lost update.
func TestConcurrentChunkWriters(t *testing.T) {
	now := storetest.T0.Add(10 * time.Hour)
	s := openAt(t, &now)
	defer s.Close()
	s.opts.CompactAge = -time.Hour
	const writers, batches, size = 4, 12, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers+2)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				var rs []*vigil.Reading
				for i := range size {
					// Writer w owns times ≡ w (mod writers+1); the last
					// residue is the live writer's.
					sec := ((b*size+i)*(writers+1) + w) % 7200
					rs = append(rs, hrReading("d", fmt.Sprint(w, "-", b, "-", i), storetest.T0.Add(time.Duration(sec)*time.Second), float64(w)))
				}
				if _, err := s.AppendReadings(ctx, rs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // live, one reading a call
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range 200 {
			sec := (rng.IntN(7200/(writers+1)))*(writers+1) + writers
			if _, err := s.AppendReadings(ctx, []*vigil.Reading{hrReading("d", fmt.Sprint("live-", i), storetest.T0.Add(time.Duration(sec)*time.Second), float64(writers))}); err != nil {
				errs <- err
				return
			}
		}
	}()
	stop := make(chan struct{})
	var compactor sync.WaitGroup
	compactor.Add(1)
	go func() {
		defer compactor.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Compact(ctx); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	compactor.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := series(t, s)
	for w := range writers {
		for b := range batches {
			for i := range size {
				sec := ((b*size+i)*(writers+1) + w) % 7200
				ts := storetest.T0.Add(time.Duration(sec) * time.Second).UnixMilli()
				if v, ok := got[ts]; !ok || v != float64(w) {
					t.Fatalf("writer %d's sample at second %d: %v %v (lost update)", w, sec, v, ok)
				}
			}
		}
	}
}

// TestExisting checks the one-pass lookup against a map for sequential,
// resent, random and mixed ids, and ids repeated within one call.
func TestExisting(t *testing.T) {
	s := open(t)
	defer s.Close()
	rng := rand.New(rand.NewPCG(7, 8))
	stored := map[string]bool{}
	b := s.db.NewBatch()
	for i := range 5000 {
		var id string
		if i%2 == 0 {
			id = fmt.Sprintf("seq-%06d", i)
		} else {
			id = fmt.Sprintf("rnd-%016x", rng.Uint64())
		}
		k := string(dedupKey("d", id))
		stored[k] = true
		if err := b.Set([]byte(k), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	for name, ids := range map[string]func(i int) string{
		"new sequence":    func(i int) string { return fmt.Sprintf("new-%06d", i) },
		"resent sequence": func(i int) string { return fmt.Sprintf("seq-%06d", 2*i) },
		"interleaved":     func(i int) string { return fmt.Sprintf("seq-%06d", i) },
		"random":          func(i int) string { return fmt.Sprintf("rnd-%016x", rng.Uint64()) },
		"mixed": func(i int) string {
			switch i % 3 {
			case 0:
				return fmt.Sprintf("seq-%06d", rng.IntN(6000))
			case 1:
				return fmt.Sprintf("rnd-%016x", rng.Uint64())
			}
			return fmt.Sprintf("zzz-%d", i)
		},
		"repeated": func(i int) string { return fmt.Sprintf("seq-%06d", i/3) },
	} {
		var keys []string
		for i := range 3000 {
			keys = append(keys, string(dedupKey("d", ids(i))))
		}
		if name == "random" { // and some stored ones among them
			for k := range stored {
				if len(keys) >= 3500 {
					break
				}
				keys = append(keys, k)
			}
		}
		got, err := existing(s.db, keys)
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			if got[i] != stored[k] {
				t.Fatalf("%s: key %q reported stored=%v", name, k, got[i])
			}
		}
	}
}

// TestSmallBatchIntoBigChunkWritesHeads: a few dozen samples for a chunk
// holding thousands go to heads, not a rewrite of the chunk.
func TestSmallBatchIntoBigChunkWritesHeads(t *testing.T) {
	now := storetest.T0.Add(10 * time.Hour)
	s := openAt(t, &now)
	defer s.Close()
	var rs []*vigil.Reading
	for i := range 7200 {
		rs = append(rs, hrReading("d", fmt.Sprint("a", i), storetest.T0.Add(time.Duration(i)*time.Second), 60))
	}
	if _, err := s.AppendReadings(ctx, rs); err != nil {
		t.Fatal(err)
	}
	rs = rs[:0]
	for i := range 40 { // between the stored seconds
		rs = append(rs, hrReading("d", fmt.Sprint("b", i), storetest.T0.Add(time.Duration(i)*time.Second+500*time.Millisecond), 70))
	}
	if _, err := s.AppendReadings(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if h, c := keyCount(t, s, pHead), keyCount(t, s, pChunk); h != 40 || c != 1 {
		t.Fatalf("%d head keys, %d chunks; want 40 and 1", h, c)
	}
	if got := series(t, s); len(got) != 7240 {
		t.Fatalf("%d samples read, want 7240", len(got))
	}
}

// TestChunkExtendedWithoutDecoding: batches in time order extend the
// chunk this store wrote last; Compact rewriting it, a batch out of order
// and values needing another scale fall back to decoding; the stored
// samples are the same either way.
func TestChunkExtendedWithoutDecoding(t *testing.T) {
	now := storetest.T0.Add(10 * time.Hour)
	s := openAt(t, &now)
	defer s.Close()
	s.opts.CompactAge = -time.Hour
	want := map[int64]float64{}
	send := func(prefix string, from, n int, v func(i int) float64) {
		t.Helper()
		var rs []*vigil.Reading
		for i := from; i < from+n; i++ {
			at := storetest.T0.Add(time.Duration(i) * time.Second)
			rs = append(rs, hrReading("d", fmt.Sprint(prefix, i), at, v(i)))
			want[at.UnixMilli()] = v(i)
		}
		if _, err := s.AppendReadings(ctx, rs); err != nil {
			t.Fatal(err)
		}
	}
	whole := func(i int) float64 { return float64(60 + i%9) }
	send("a", 0, 500, whole)
	send("b", 500, 500, whole)
	send("c", 1000, 500, whole)
	if s.chunksExtended != 2 {
		t.Fatalf("%d chunks extended, want 2", s.chunksExtended)
	}
	send("d", 200, 100, func(i int) float64 { return 99 })                   // before the chunk's end: decoded and merged
	send("e", 1500, 500, func(i int) float64 { return 60.5 + float64(i%3) }) // a finer scale
	if s.chunksExtended != 2 {
		t.Fatalf("%d chunks extended, want still 2", s.chunksExtended)
	}
	send("f", 2000, 500, whole) // the chunk written last again
	if _, err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	s.AppendReadings(ctx, []*vigil.Reading{hrReading("d", "head", storetest.T0.Add(2600*time.Second), 61)}) // a head, folded next
	want[storetest.T0.Add(2600*time.Second).UnixMilli()] = 61
	if _, err := s.Compact(ctx); err != nil { // rewrites the chunk: the cached one misses
		t.Fatal(err)
	}
	send("g", 3000, 500, whole)
	if s.chunksExtended != 3 {
		t.Fatalf("%d chunks extended, want 3 (not the one Compact rewrote)", s.chunksExtended)
	}
	got := series(t, s)
	if len(got) != len(want) {
		t.Fatalf("%d samples read, want %d", len(got), len(want))
	}
	for ts, v := range want {
		if got[ts] != v {
			t.Fatalf("at %d read %v, want %v", ts, got[ts], v)
		}
	}
}
