package pebble

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/seal"
	"github.com/vigil-iomt/vigil/internal/storetest"
	"github.com/vigil-iomt/vigil/internal/tsdb"
)

// openAt opens a store in a temp dir whose clock reads *now (tests move
// it), with compaction only when a test asks.
func openAt(t *testing.T, now *time.Time) *Store {
	t.Helper()
	o := DefaultOptions()
	o.CompactInterval = -1
	o.Now = func() time.Time { return *now }
	s, err := Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func open(t *testing.T) *Store {
	t.Helper()
	o := DefaultOptions()
	o.CompactInterval = -1
	s, err := Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConformance runs the suite twice: with the defaults, where a call
// bringing many samples of one chunk merges them straight into it, and
// with every sample written as a head key and folded by Compact.
func TestConformance(t *testing.T) {
	for _, mode := range []struct {
		name   string
		direct int
	}{{"Default", 0}, {"Heads", 1 << 30}} {
		t.Run(mode.name, func(t *testing.T) {
			openWith := func(t *testing.T, r vigil.Retention) vigil.Store {
				o := DefaultOptions()
				o.CompactInterval, o.Retention, o.DirectChunkMin = -1, r, mode.direct
				s, err := Open(t.TempDir(), o)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			storetest.Run(t, storetest.Harness{
				Open:          func(t *testing.T) vigil.Store { return openWith(t, vigil.Retention{}) },
				OpenRetaining: openWith,
				Settle: func(t *testing.T, s vigil.Store) {
					st := s.(*Store)
					st.opts.CompactAge = -time.Hour // everything, even "future" samples
					stats, err := st.Compact(context.Background())
					if err != nil {
						t.Fatal(err)
					}
					if stats.Samples == 0 && mode.direct > 1 {
						t.Fatal("compaction folded nothing")
					}
				},
			})
		})
	}
}

var ctx = context.Background()

func hrReading(dev, id string, t time.Time, v float64) *vigil.Reading {
	return &vigil.Reading{DeviceID: dev, ID: id, PatientID: "p1", Time: t, Received: t.Add(time.Second),
		Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: v, Unit: "/min"}}}
}

func TestCompactionKeepsIDsAndMergesLateData(t *testing.T) {
	now := storetest.T0.Add(10 * time.Hour)
	o := DefaultOptions()
	o.CompactInterval = -1
	o.DirectChunkMin = 1 << 30 // every sample a head key, for Compact to fold
	o.Now = func() time.Time { return now }
	dir := t.TempDir()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	var rs []*vigil.Reading
	for i := 0; i < 3*3600; i += 2 { // 3 h at 0.5 Hz: spans two chunk buckets
		rs = append(rs, hrReading("d", time.Duration(i).String(), storetest.T0.Add(time.Duration(i)*time.Second), float64(60+i%7)))
	}
	if _, err := s.AppendReadings(ctx, rs); err != nil {
		t.Fatal(err)
	}
	before, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Compact(ctx)
	if err != nil || st.Samples != len(rs) || st.Chunks != 2 {
		t.Fatalf("compact: %+v %v", st, err)
	}
	after, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("%d observations after compaction, %d before", len(after), len(before))
	}
	for i := range before {
		if !reflect.DeepEqual(before[i], after[i]) {
			t.Fatalf("observation %d changed by compaction: %+v → %+v", i, before[i], after[i])
		}
	}
	// A late reading inside a compacted bucket, and a re-sent old id.
	late := hrReading("d", "late", storetest.T0.Add(time.Second), 99)
	res, err := s.AppendReadings(ctx, []*vigil.Reading{late, rs[10]})
	if err != nil || res[0].Duplicate || !res[1].Duplicate {
		t.Fatalf("late append: %+v %v", res, err)
	}
	check := func(when string) {
		obs, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", From: storetest.T0, To: storetest.T0.Add(3 * time.Second)})
		if err != nil || len(obs) != 3 || obs[1].Value != 99 {
			t.Fatalf("%s: late reading not merged in order: %v %v", when, obs, err)
		}
	}
	check("head")
	if _, err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	check("compacted")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendReadings(ctx, rs[:1]); vigil.ErrorCode(err) != vigil.EUNAVAILABLE {
		t.Fatalf("append after close: %v", err)
	}
	// Reopen: everything is still there and ids are still remembered.
	s, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check("reopened")
	res, err = s.AppendReadings(ctx, rs[:1])
	if err != nil || !res[0].Duplicate {
		t.Fatalf("re-sent id after reopen stored again: %+v %v", res, err)
	}
	// New series after reopen get fresh ids.
	spo := &vigil.Reading{DeviceID: "d", ID: "s1", PatientID: "p1", Time: storetest.T0, Values: []vigil.Measurement{{Code: vigil.LOINCSpO2, Value: 97, Unit: "%"}}}
	if _, err := s.AppendReadings(ctx, []*vigil.Reading{spo}); err != nil {
		t.Fatal(err)
	}
	l, err := s.LatestObservations(ctx, "p1", nil, 1)
	if err != nil || len(l) != 2 || l[vigil.LOINCSpO2][0].Value != 97 || l[vigil.LOINCHeartRate][0].ID == l[vigil.LOINCSpO2][0].ID {
		t.Fatalf("latest after reopen: %v %v", l, err)
	}

	// Reading ids are forgotten after the retention.
	now = now.Add(s.opts.DedupRetention + 48*time.Hour)
	st, err = s.Compact(ctx)
	if err != nil || st.ExpiredDedups != len(rs)+2 {
		t.Fatalf("expiry: %+v %v (want %d)", st, err, len(rs)+2)
	}
}

// BenchmarkDiskBytesPerReading writes a day of 1 Hz heart rate and SpO2
// for one patient, compacts it, expires the reading ids as production
// does after DedupRetention, and reports the bytes Pebble occupies on disk
// per reading value.
func BenchmarkDiskBytesPerReading(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		now := storetest.T0.Add(48 * time.Hour)
		o := DefaultOptions()
		o.CompactInterval = -1
		o.DedupRetention = time.Hour
		o.Now = func() time.Time { return now }
		s, err := Open(b.TempDir(), o)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		const n = 86400
		rng := rand.New(rand.NewPCG(1, 1))
		batch := make([]*vigil.Reading, 0, 1000)
		hr, spo2 := 72.0, 97.0
		for i := 0; i < n; i++ {
			ts := storetest.T0.Add(time.Duration(i) * time.Second)
			hr += (75-hr)*0.01 + rng.NormFloat64()*0.4
			spo2 += (97-spo2)*0.05 + rng.NormFloat64()*0.2
			batch = append(batch, &vigil.Reading{DeviceID: "mon", ID: "r" + time.Duration(i).String(), PatientID: "p1", Time: ts, Received: ts,
				Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: math.Round(hr), Unit: "/min"}, {Code: vigil.LOINCSpO2, Value: math.Round(min(spo2, 100)), Unit: "%"}}})
			if len(batch) == cap(batch) {
				if _, err := s.AppendReadings(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		if _, err := s.Compact(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		db := s.DB()
		// Two manual compactions: the first may only move tables down; the
		// second rewrites them, dropping deleted head samples and expired
		// idempotency keys as background compactions eventually do.
		if err := db.Flush(); err != nil {
			b.Fatal(err)
		}
		for range 2 {
			if err := db.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
				b.Fatal(err)
			}
		}
		chunks, _ := db.EstimateDiskUsage([]byte{pChunk, 0}, []byte{pChunk, 1})
		tables, _ := db.EstimateDiskUsage([]byte{0}, []byte{0xff})
		total := db.Metrics().DiskSpaceUsage()
		b.ReportMetric(float64(chunks)/float64(2*n), "chunk-bytes/value")
		b.ReportMetric(float64(tables)/float64(2*n), "table-bytes/value")
		b.ReportMetric(float64(total)/float64(2*n), "disk-bytes/value")
		s.Close()
		b.StartTimer()
	}
}

func TestDeadLetterRetention(t *testing.T) {
	now := storetest.T0
	s := openAt(t, &now)
	defer s.Close()
	for i := 0; i < 3; i++ {
		if err := s.AddDeadLetter(ctx, &vigil.DeadLetter{Time: now.Add(time.Duration(i) * 24 * time.Hour), Source: "mqtt", Reason: "malformed"}); err != nil {
			t.Fatal(err)
		}
	}
	if s.deadLetters.Load() != 3 {
		t.Fatalf("count %d", s.deadLetters.Load())
	}
	now = now.Add(s.opts.DeadLetterRetention + 36*time.Hour) // the first two are past retention
	st, err := s.Compact(ctx)
	if err != nil || st.ExpiredDeadLetters != 2 {
		t.Fatalf("compact: %+v %v", st, err)
	}
	ds, _ := s.FindDeadLetters(ctx, vigil.DeadLetterFilter{})
	if len(ds) != 1 || s.deadLetters.Load() != 1 {
		t.Fatalf("%d left (count %d), want 1", len(ds), s.deadLetters.Load())
	}
}

func TestReadingDays(t *testing.T) {
	now := storetest.T0.Add(40 * 24 * time.Hour)
	s := openAt(t, &now)
	defer s.Close()
	var rs []*vigil.Reading
	for _, d := range []int{0, 0, 1, 5, 5, 30, 31} {
		for h := 0; h < 3; h++ {
			ts := storetest.T0.Truncate(24 * time.Hour).Add(time.Duration(d)*24*time.Hour + time.Duration(h*7)*time.Hour + time.Minute)
			rs = append(rs, hrReading("d", ts.String(), ts, 70))
		}
	}
	if _, err := s.AppendReadings(ctx, rs); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		from := storetest.T0.Truncate(24 * time.Hour)
		days, err := s.ReadingDays(ctx, "p1", from, from.Add(30*24*time.Hour))
		if err != nil || len(days) != 3 || !days[2].Equal(from.Add(5*24*time.Hour)) {
			t.Fatalf("%s: %v %v", when, days, err)
		}
	}
	check("head")
	now = now.Add(time.Hour)
	if _, err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	check("compacted")
}

// The whole conformance suite again with encryption at rest on: every
// record and sample goes through seal and back.
// openSealed opens a store in dir/db that seals records with a data key
// under dir's master key, and returns it with its options.
func openSealed(t *testing.T, dir string) (*Store, Options) {
	t.Helper()
	mk, err := seal.MasterKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := seal.NewLocalKey(mk)
	sl, err := seal.Open(dir, w)
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.CompactInterval = -1
	o.Sealer = sl
	s, err := Open(filepath.Join(dir, "db"), o)
	if err != nil {
		t.Fatal(err)
	}
	return s, o
}

func TestConformanceSealed(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) vigil.Store {
			s, _ := openSealed(t, t.TempDir())
			return s
		},
		Settle: func(t *testing.T, s vigil.Store) {
			st := s.(*Store)
			st.opts.CompactAge = -time.Hour
			if _, err := st.Compact(context.Background()); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// Samples and chunks are sealed: the same store opened without the key
// cannot read them back.
func TestReadingsSealed(t *testing.T) {
	dir := t.TempDir()
	s, o := openSealed(t, dir)
	t0 := time.Now().Add(-3 * time.Hour).Truncate(time.Hour)
	var rs []*vigil.Reading
	for i := range 10 {
		r := hrReading("mon", fmt.Sprint(i), t0.Add(time.Duration(i)*time.Minute), 70+float64(i))
		r.PatientID = "p1"
		rs = append(rs, r)
	}
	if _, err := s.AppendReadings(ctx, rs[:5]); err != nil {
		t.Fatal(err)
	}
	s.opts.CompactAge = -time.Hour
	if _, err := s.Compact(ctx); err != nil { // the first five into a chunk
		t.Fatal(err)
	}
	if _, err := s.AppendReadings(ctx, rs[5:]); err != nil { // the rest stay head samples
		t.Fatal(err)
	}
	obs, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1"})
	if err != nil || len(obs) != 10 || obs[9].Value != 79 {
		t.Fatalf("with the key: %d observations, %v", len(obs), err)
	}
	s.Close()
	o.Sealer = nil
	s, err = Open(filepath.Join(dir, "db"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1"}); err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Fatalf("without the key: %v", err)
	}
}

// TestDedupExpiry: reading ids are remembered for DedupRetention from the
// day they were received, per device, whether kept in runs (j) or a key
// each (k) with a per-day marker (J) or, by stores before December 2026,
// an index key per reading (K); a limited pass goes on where it stopped.
func TestDedupExpiry(t *testing.T) {
	now := storetest.T0
	s := openAt(t, &now)
	defer s.Close()
	day0, day3 := storetest.T0, storetest.T0.Add(72*time.Hour)
	var old []*vigil.Reading
	for i := range 5 {
		old = append(old, hrReading("d1", fmt.Sprint("a", i), day0.Add(time.Duration(i)*time.Minute), 70))
		old = append(old, hrReading("d2", fmt.Sprint("b", i, "x"), day0.Add(time.Duration(i)*time.Minute), 71))
	}
	// d1's ids are one run (a j key), d2's a k key each.
	wantExpired := 1 + 5 + 1
	if _, err := s.AppendReadings(ctx, old); err != nil {
		t.Fatal(err)
	}
	recent := []*vigil.Reading{hrReading("d1", "c0", day3, 72), hrReading("d1", "c1", day3.Add(time.Minute), 73)}
	if _, err := s.AppendReadings(ctx, recent); err != nil {
		t.Fatal(err)
	}
	// A store written before the markers: k key and K index key.
	legacyDay := day0.Truncate(24 * time.Hour).UnixMilli()
	b := s.db.NewBatch()
	b.Set(dedupKey("d3", "z0"), be64(day0.UnixMilli()), nil)
	b.Set(append(append([]byte{pDedupExpiry, 0}, be64(legacyDay)...), dedupKey("d3", "z0")[2:]...), nil, nil)
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}

	// Before the retention has passed nothing is forgotten.
	now = day0.Add(s.opts.DedupRetention)
	if st, err := s.Compact(ctx); err != nil || st.ExpiredDedups != 0 {
		t.Fatalf("early: %+v %v", st, err)
	}
	// A day later day 0's ids go, in passes of at most 4; day 3's stay.
	now = day0.Add(s.opts.DedupRetention + 24*time.Hour)
	expiry := now.Add(-s.opts.DedupRetention).Truncate(24 * time.Hour).UnixMilli()
	total := 0
	for pass := 0; ; pass++ {
		b := s.db.NewBatch()
		n, err := s.expireDedups(b, expiry, 4)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(nil); err != nil {
			t.Fatal(err)
		}
		total += n
		if n == 0 || pass > 10 {
			break
		}
	}
	if total != wantExpired {
		t.Fatalf("expired %d keys, want %d", total, wantExpired)
	}
	res, err := s.AppendReadings(ctx, append(old[:1], recent...))
	if err != nil || res[0].Duplicate || !res[1].Duplicate || !res[2].Duplicate {
		t.Fatalf("after expiry: %+v %v (want the day-0 id stored again, the day-3 ids still known)", res, err)
	}
	// Day 0's markers and the legacy index are gone; day 3's marker stays.
	var left []string
	for _, p := range []byte{pDedupDay, pDedupExpiry} {
		scan(s.db, prefixKey(p), false, func(k, _ []byte) (bool, error) {
			left = append(left, fmt.Sprintf("%c %s %s", p, time.UnixMilli(unbe64(k[2:10])).UTC().Format(time.DateOnly), k[10:]))
			return true, nil
		})
	}
	want := []string{"J 2026-11-02 d1", "J 2026-11-05 d1"} // old[0] stored again (it says it was received on day 0), and day 3
	if !reflect.DeepEqual(left, want) {
		t.Fatalf("markers left %q, want %q", left, want)
	}
}

// The change feed holds every stored reading and saved alert, in order,
// survives a restart and forgets only what the consumer trims.
func TestChangeFeed(t *testing.T) {
	dir := t.TempDir()
	o := DefaultOptions()
	o.CompactInterval, o.ChangeFeed = -1, true
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	rs := []*vigil.Reading{
		{DeviceID: "mon", ID: "1", PatientID: "p1", Time: t0, Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 70, Unit: "/min"}}},
		{DeviceID: "mon", ID: "2", PatientID: "p1", Time: t0.Add(time.Second), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 71, Unit: "/min"}}},
	}
	if _, err := s.AppendReadings(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendReadings(ctx, rs[:1]); err != nil { // a duplicate: no entry
		t.Fatal(err)
	}
	if err := s.SaveAlert(ctx, &vigil.Alert{ID: "a1", PatientID: "p1", Raised: t0}); err != nil {
		t.Fatal(err)
	}
	es, err := s.FeedAfter(ctx, 0, 10)
	if err != nil || len(es) != 3 || es[0].ReadingID != "1" || es[1].ReadingID != "2" || es[2].Kind != vigil.FeedAlert || es[2].AlertID != "a1" || !es[1].Time.Equal(t0.Add(time.Second)) {
		t.Fatalf("feed: %+v %v", es, err)
	}
	if err := s.TrimFeed(ctx, []uint64{es[0].Seq}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(dir, o); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AppendReadings(ctx, []*vigil.Reading{{DeviceID: "mon", ID: "3", PatientID: "p1", Time: t0.Add(2 * time.Second), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 72, Unit: "/min"}}}}); err != nil {
		t.Fatal(err)
	}
	es2, err := s.FeedAfter(ctx, 0, 10)
	if err != nil || len(es2) != 3 || es2[0].Seq != es[1].Seq || es2[2].ReadingID != "3" || es2[2].Seq <= es[2].Seq {
		t.Fatalf("after a restart: %+v %v", es2, err)
	}
}

// ReadSeriesChunks hands compacted chunks inside the range on as they
// are, re-encodes the edges and buckets with head samples, and holds
// exactly what ReadSeries reads.
func TestReadSeriesChunks(t *testing.T) {
	now := storetest.T0.Add(10 * time.Hour)
	s := openAt(t, &now)
	defer s.Close()
	var rs []*vigil.Reading
	for i := 0; i < 6*3600; i++ { // 6 h at 1 Hz: three 2-hour buckets
		rs = append(rs, hrReading("d", strconv.Itoa(i), storetest.T0.Add(time.Duration(i)*time.Second), float64(60+i%7)))
	}
	if _, err := s.AppendReadings(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	// A late value into the last bucket stays a head sample.
	late := hrReading("d", "late", storetest.T0.Add(5*time.Hour+500*time.Millisecond), 99)
	if _, err := s.AppendReadings(ctx, []*vigil.Reading{late}); err != nil {
		t.Fatal(err)
	}
	from, to := storetest.T0.Add(30*time.Minute), storetest.T0.Add(6*time.Hour)
	want, err := s.ReadSeries(ctx, "p1", vigil.LOINCHeartRate, "", from, to, 100000)
	if err != nil || len(want) != 1 {
		t.Fatal(err)
	}
	got, err := s.ReadSeriesChunks(ctx, "p1", vigil.LOINCHeartRate, "", from, to, 100000)
	if err != nil || len(got) != 1 || len(got[0].Chunks) != 3 {
		t.Fatalf("chunks: %v %+v", err, got)
	}
	var ts []int64
	var vs []float64
	for _, c := range got[0].Chunks {
		smp, err := tsdb.Decode(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range smp {
			ts, vs = append(ts, x.T), append(vs, x.V)
		}
	}
	if !slices.Equal(ts, want[0].T) || !slices.Equal(vs, want[0].V) || len(ts) != 5*3600+1800+1 {
		t.Fatalf("%d values from chunks, %d from ReadSeries", len(ts), len(want[0].T))
	}
	if _, err := s.ReadSeriesChunks(ctx, "p1", vigil.LOINCHeartRate, "", from, to, 1000); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Fatalf("over the bound: %v", err)
	}
}
