package pebble

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/storetest"
)

func TestRunID(t *testing.T) {
	for _, c := range []struct {
		id     string
		prefix string
		n      uint64
		ok     bool
	}{
		{"0", "", 0, true},
		{"17", "", 17, true},
		{"4-4999", "4-", 4999, true},
		{"a0", "a", 0, true},
		{"b-12x3", "b-12x", 3, true},
		{"999999999999999999", "", 999999999999999999, true},
		{"1000000000000000000", "", 0, false}, // 19 digits
		{"07", "", 0, false},                  // not canonical: "7" is another id
		{"a00", "", 0, false},
		{"abc", "", 0, false},
		{"1x", "", 0, false},
	} {
		p, n, ok := runID(c.id)
		if ok != c.ok || ok && (p != c.prefix || n != c.n) {
			t.Errorf("runID(%q) = %q, %d, %v; want %q, %d, %v", c.id, p, n, ok, c.prefix, c.n, c.ok)
		}
	}
}

// idUniverse is the ids the model tests draw from: numbered ids under a
// few prefixes (kept in runs), some with the same digits in a form that
// is not (a leading zero, a closing letter, 19 digits), so that an id and
// its look-alike must never be taken for each other.
func idUniverse() []string {
	var ids []string
	for n := range 40 {
		ids = append(ids, fmt.Sprint(n), fmt.Sprint("s", n), fmt.Sprint("t-", n), fmt.Sprint("t-", n, "x"))
		ids = append(ids, fmt.Sprintf("s%03d", n), fmt.Sprint(1_000_000_000_000_000_000+uint64(n)))
	}
	return ids
}

// randomCall is a call's readings: ids drawn in runs and at random, some
// repeated, for two devices; each (device, id) has its own time, so every
// stored reading is one sample.
func randomCall(rng *rand.Rand, ids []string, at map[string]time.Time) []*vigil.Reading {
	var rs []*vigil.Reading
	for len(rs) < 1+rng.IntN(40) {
		dev := []string{"d1", "d2"}[rng.IntN(2)]
		i := rng.IntN(len(ids))
		for range 1 + rng.IntN(8) { // a run of the universe's order: consecutive numbers per form
			id := ids[i%len(ids)]
			rs = append(rs, hrReading(dev, id, at[dev+"/"+id], 60))
			i += 6 * (1 + rng.IntN(2)) // the next number of the same form, or skip one
		}
		if rng.IntN(5) == 0 { // again within the call
			rs = append(rs, rs[rng.IntN(len(rs))])
		}
	}
	return rs
}

func universeTimes(ids []string) map[string]time.Time {
	at := make(map[string]time.Time)
	for j, dev := range []string{"d1", "d2"} {
		for i, id := range ids {
			at[dev+"/"+id] = storetest.T0.Add(time.Duration(j*len(ids)+i) * time.Second)
		}
	}
	return at
}

// TestIdempotencyModel compares AppendReadings' answers with a model (a
// set of stored ids) over random calls, the store reopened now and then:
// each (device, id) is new exactly once, and every new one is stored.
func TestIdempotencyModel(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		universe := idUniverse()
		at := universeTimes(universe)
		dir := t.TempDir()
		o := DefaultOptions()
		o.CompactInterval = -1
		o.DirectChunkMin = 1 + rng.IntN(40)
		s, err := Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		model := make(map[string]bool)
		for call := range 60 {
			rs := randomCall(rng, universe, at)
			res, err := s.AppendReadings(ctx, rs)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range rs {
				k := r.DeviceID + "/" + r.ID
				if res[i].Duplicate != model[k] {
					t.Fatalf("seed %d call %d: %s duplicate %v, want %v", seed, call, k, res[i].Duplicate, model[k])
				}
				model[k] = true
			}
			if rng.IntN(10) == 0 {
				s.Close()
				if s, err = Open(dir, o); err != nil {
					t.Fatal(err)
				}
			}
		}
		checkStored(t, s, model, at)
		s.Close()
	}
}

// checkStored: every reading the model holds is stored, and nothing else.
func checkStored(t *testing.T, s *Store, model map[string]bool, at map[string]time.Time) {
	t.Helper()
	for _, dev := range []string{"d1", "d2"} {
		got := make(map[int64]bool)
		ser, err := s.ReadSeries(ctx, "p1", vigil.LOINCHeartRate, dev, storetest.T0.Add(-time.Hour), storetest.T0.Add(24*time.Hour), 100_000)
		if err != nil {
			t.Fatal(err)
		}
		for _, sd := range ser {
			for _, ms := range sd.T {
				got[ms] = true
			}
		}
		want := 0
		for k := range model {
			if k[:len(dev)] == dev {
				want++
				if !got[at[k].UnixMilli()] {
					t.Errorf("%s acknowledged as new but not stored", k)
				}
			}
		}
		if len(got) != want {
			t.Errorf("%s: %d samples stored, want %d", dev, len(got), want)
		}
	}
}

// TestIdempotencyConcurrent: calls with overlapping ids from several
// goroutines at once; each (device, id) is answered new exactly once and
// is stored.
func TestIdempotencyConcurrent(t *testing.T) {
	universe := idUniverse()
	at := universeTimes(universe)
	for round := range 20 { // a race shows in some rounds only
		s := open(t)
		var mu sync.Mutex
		newCount := make(map[string]int)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(g), uint64(round)))
				for range 200 {
					rs := randomCall(rng, universe, at)
					res, err := s.AppendReadings(ctx, rs)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for i, r := range rs {
						k := r.DeviceID + "/" + r.ID
						if !res[i].Duplicate {
							newCount[k]++
						} else if _, ok := newCount[k]; !ok {
							newCount[k] = 0 // seen, and said to be stored already
						}
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		model := make(map[string]bool)
		for k, n := range newCount {
			if n != 1 {
				t.Errorf("round %d: %s answered new %d times", round, k, n)
			}
			model[k] = true
		}
		checkStored(t, s, model, at)
		s.Close()
	}
}

// TestUpgradeKeepsOldIDs: a format 1 store kept every id in a k key. Upgraded,
// it still knows those ids as duplicates until they expire, and then
// stops looking them up; a format 1 store without ids is not marked.
func TestUpgradeKeepsOldIDs(t *testing.T) {
	now := storetest.T0
	dir := filepath.Join(t.TempDir(), "store")
	o := DefaultOptions()
	o.CompactInterval = -1
	o.Now = func() time.Time { return now }
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	// As version 1 wrote them: a k key and a J marker per id, and samples.
	old := []*vigil.Reading{hrReading("d1", "41", now, 70), hrReading("d1", "42", now.Add(time.Second), 71), hrReading("d1", "a7", now.Add(2*time.Second), 72)}
	b := s.db.NewBatch()
	for _, r := range old {
		b.Set(dedupKey(r.DeviceID, r.ID), be64(r.Received.UnixMilli()), nil)
	}
	b.Set(dedupDayKey(now.Truncate(24*time.Hour).UnixMilli(), "d1"), nil, nil)
	b.Set(formatKey, []byte("1"), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.Close()
	now = now.Add(time.Hour)
	if s, err = Open(dir, o); err != nil {
		t.Fatal(err)
	}
	if got := getFormat(t, s.db); got != "2" || s.legacyIDsUntil == 0 {
		t.Fatalf("after the upgrade: format %q, legacy ids until %d", got, s.legacyIDsUntil)
	}
	res, err := s.AppendReadings(ctx, append(old, hrReading("d1", "43", now, 73)))
	if err != nil || !res[0].Duplicate || !res[1].Duplicate || !res[2].Duplicate || res[3].Duplicate {
		t.Fatalf("old ids after the upgrade: %+v %v (want the three old ones duplicates, 43 new)", res, err)
	}
	// Once they have expired (Compact deletes them), they are no longer looked up.
	now = now.Add(o.DedupRetention + 49*time.Hour)
	if _, err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if now.UnixMilli() < s.legacyIDsUntil {
		t.Fatalf("legacy lookups still on %s after the upgrade", o.DedupRetention+49*time.Hour)
	}
	left := 0
	scan(s.db, prefixKey(pDedup), false, func(_, _ []byte) (bool, error) { left++; return true, nil })
	if left != 0 {
		t.Fatalf("%d k keys left after expiry", left)
	}
	s.Close()

	// A version 1 store that never took a reading gets no mark.
	dir = filepath.Join(t.TempDir(), "empty")
	if s, err = Open(dir, o); err != nil {
		t.Fatal(err)
	}
	s.db.Set(formatKey, []byte("1"), pebble.Sync)
	s.Close()
	if s, err = Open(dir, o); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.legacyIDsUntil != 0 {
		t.Fatal("an upgraded store without k keys looks them up")
	}
}
