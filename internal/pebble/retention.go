package pebble

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigil-iomt/vigil"
)

// Retention, RetentionStats, Rollup and RollupSeries are vigil's.
type (
	Retention      = vigil.Retention
	RetentionStats = vigil.RetentionStats
	Rollup         = vigil.Rollup
	RollupSeries   = vigil.RollupSeries
)

// pRollup keys: R\0{series id}{resolution byte 'm' or 'h'}{be64 start ms}
// → sealed 28 bytes: min, max, sum (float64 bits) and count (uint32).
const pRollup = 'R'

// Rollup resolutions.
const (
	RollupMinute = vigil.RollupMinute
	RollupHour   = vigil.RollupHour
)

var rollupRes = []struct {
	code byte
	d    time.Duration
}{{'m', RollupMinute}, {'h', RollupHour}}

func rollupKey(sid uint64, res byte, start int64) []byte {
	k := append([]byte{pRollup, 0}, u64(sid)...)
	return append(append(k, res), be64(start)...)
}

// rollupAgg is one rollup bucket being built or read.
type rollupAgg struct {
	min, max, sum float64
	n             uint32
}

func (a *rollupAgg) add(v float64) {
	if a.n == 0 || v < a.min {
		a.min = v
	}
	if a.n == 0 || v > a.max {
		a.max = v
	}
	a.sum += v
	a.n++
}

func (a *rollupAgg) merge(b rollupAgg) {
	if b.n == 0 {
		return
	}
	if a.n == 0 {
		*a = b
		return
	}
	a.min, a.max = math.Min(a.min, b.min), math.Max(a.max, b.max)
	a.sum += b.sum
	a.n += b.n
}

func (a rollupAgg) encode() []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint64(b, math.Float64bits(a.min))
	binary.BigEndian.PutUint64(b[8:], math.Float64bits(a.max))
	binary.BigEndian.PutUint64(b[16:], math.Float64bits(a.sum))
	binary.BigEndian.PutUint32(b[24:], a.n)
	return b
}

func decodeRollup(b []byte) (rollupAgg, bool) {
	if len(b) != 28 {
		return rollupAgg{}, false
	}
	return rollupAgg{math.Float64frombits(binary.BigEndian.Uint64(b)), math.Float64frombits(binary.BigEndian.Uint64(b[8:])),
		math.Float64frombits(binary.BigEndian.Uint64(b[16:])), binary.BigEndian.Uint32(b[24:])}, true
}

// EnforceRetention applies Options.Retention at now: numeric samples older
// than Readings (whole 2-hour buckets) are rolled up and removed, with
// text values and origins of that age; rollups older than Rollups and
// resolved alerts raised before Alerts are removed. Late samples that
// arrive for a removed range are rolled up into the same buckets by the
// next call. The background compactor calls it every hour.
func (s *Store) EnforceRetention(ctx context.Context, now time.Time) (RetentionStats, error) {
	var st RetentionStats
	r := s.opts.Retention
	if r.Readings > 0 {
		cutoff := bucketOf(now.Add(-r.Readings).UnixMilli())
		var sids []seriesInfo
		err := scan(s.db, []byte{pSeriesByID, 0}, false, func(k, v []byte) (bool, error) {
			var rec seriesRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return false, vigil.Errorf(vigil.EINTERNAL, "corrupt series record: %v", err)
			}
			sids = append(sids, seriesInfo{binary.BigEndian.Uint64(k[2:]), rec})
			return true, nil
		})
		if err != nil {
			return st, err
		}
		for _, si := range sids {
			if err := ctxErr(ctx); err != nil {
				return st, err
			}
			n, w, err := s.rollUpAndRemove(si, cutoff)
			if err != nil {
				return st, err
			}
			st.Samples += n
			st.Rollups += w
		}
	}
	if r.Rollups > 0 {
		end := now.Add(-r.Rollups).UnixMilli()
		b := s.db.NewBatch()
		err := scan(s.db, []byte{pSeriesByID, 0}, false, func(k, _ []byte) (bool, error) {
			sid := binary.BigEndian.Uint64(k[2:])
			for _, res := range rollupRes {
				if err := b.DeleteRange(rollupKey(sid, res.code, 0), rollupKey(sid, res.code, end), nil); err != nil {
					return false, err
				}
				st.Expired++
			}
			return true, nil
		})
		if err == nil {
			err = s.commitSync(b)
		} else {
			b.Close()
		}
		if err != nil {
			return st, err
		}
	}
	if r.Alerts > 0 {
		end := be64(now.Add(-r.Alerts).UnixNano())
		b := s.db.NewBatch()
		err := scan(s.db, []byte{pAlertRaised, 0}, false, func(k, _ []byte) (bool, error) {
			if len(k) < 10 || string(k[2:10]) >= string(end) {
				return false, nil
			}
			var a vigil.Alert
			ok, err := s.getJSON(s.db, key(pAlert, string(k[10:])), &a)
			if err != nil || !ok || a.Open() {
				return err == nil, err
			}
			st.Alerts++
			if err := b.Delete(key(pAlert, a.ID), nil); err != nil {
				return false, err
			}
			return true, b.Delete(k, nil)
		})
		if err == nil {
			err = s.commitSync(b)
		} else {
			b.Close()
		}
		if err != nil {
			return st, err
		}
	}
	s.metrics.retained(st)
	return st, nil
}

// rollUpAndRemove rolls up one series' samples before cutoff (a bucket
// start), merges them into the stored rollups and removes the samples, in
// one synced batch.
func (s *Store) rollUpAndRemove(si seriesInfo, cutoff int64) (removed, written int, err error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	b := s.db.NewBatch()
	defer b.Close()
	if si.Kind != kindText {
		aggs := make([]map[int64]*rollupAgg, len(rollupRes))
		for i := range aggs {
			aggs[i] = map[int64]*rollupAgg{}
		}
		stream, err := s.newSeriesStream(snap, si, 0, cutoff, false)
		if err != nil {
			return 0, 0, err
		}
		for {
			smp, ok, err := stream.Next()
			if err != nil {
				stream.Close()
				return 0, 0, err
			}
			if !ok {
				break
			}
			removed++
			for i, res := range rollupRes {
				start := smp.T - smp.T%res.d.Milliseconds()
				a := aggs[i][start]
				if a == nil {
					a = &rollupAgg{}
					aggs[i][start] = a
				}
				a.add(smp.V)
			}
		}
		stream.Close()
		for i, res := range rollupRes {
			for start, a := range aggs[i] {
				k := rollupKey(si.sid, res.code, start)
				if raw, closer, err := snap.Get(k); err == nil {
					if v, err := s.openValue(raw); err == nil {
						if old, ok := decodeRollup(v); ok {
							a.merge(old)
						}
					}
					closer.Close()
				} else if err != pebble.ErrNotFound {
					return 0, 0, err
				}
				v, err := s.sealValue(a.encode())
				if err != nil {
					return 0, 0, err
				}
				if err := b.Set(k, v, nil); err != nil {
					return 0, 0, err
				}
				written++
			}
		}
		if removed == 0 {
			return 0, 0, nil
		}
	} else {
		// Text values are not rolled up: count what goes.
		if err := scan(snap, append([]byte{pText, 0}, u64(si.sid)...), false, func(k, _ []byte) (bool, error) {
			if unbe64(k[10:]) >= cutoff {
				return false, nil
			}
			removed++
			return true, nil
		}); err != nil {
			return 0, 0, err
		}
		if removed == 0 {
			return 0, 0, nil
		}
	}
	for _, r := range [][2][]byte{
		{headKey(si.sid, 0), headKey(si.sid, cutoff)},
		{chunkKey(si.sid, 0), chunkKey(si.sid, cutoff)},
		{textKey(si.sid, 0), textKey(si.sid, cutoff)},
		{originKey(si.sid, 0), originKey(si.sid, cutoff)},
	} {
		if err := b.DeleteRange(r[0], r[1], nil); err != nil {
			return 0, 0, err
		}
	}
	if err := s.commitSync(b); err != nil {
		return 0, 0, err
	}
	return removed, written, nil
}

// ReadRollups returns the patient's rollups of code at resolution res
// (RollupMinute or RollupHour) that start in [from, to), per series.
// They cover the time whose raw samples have expired.
func (s *Store) ReadRollups(ctx context.Context, patientID, code string, res time.Duration, from, to time.Time) ([]RollupSeries, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var rc byte
	for _, r := range rollupRes {
		if r.d == res {
			rc = r.code
		}
	}
	if rc == 0 {
		return nil, vigil.FieldErrorf("resolution", "invalid", "rollups are kept per minute (1m) and per hour (1h)")
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	all, err := numericSeries(snap, patientID, code, "")
	if err != nil {
		return nil, err
	}
	var out []RollupSeries
	for _, si := range all {
		rs := RollupSeries{Device: si.Device, Method: si.Method, Unit: si.Unit}
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: rollupKey(si.sid, rc, from.UnixMilli()), UpperBound: rollupKey(si.sid, rc, to.UnixMilli())})
		if err != nil {
			return nil, storeErr(err)
		}
		for ok := it.First(); ok; ok = it.Next() {
			v, err := s.openValue(it.Value())
			if err != nil {
				it.Close()
				return nil, err
			}
			a, ok := decodeRollup(v)
			if !ok || a.n == 0 {
				continue
			}
			start := unbe64(it.Key()[len(it.Key())-8:])
			rs.Rollups = append(rs.Rollups, Rollup{Start: time.UnixMilli(start).UTC(), Min: a.min, Max: a.max, Mean: a.sum / float64(a.n), Count: int(a.n)})
		}
		it.Close()
		if len(rs.Rollups) > 0 {
			out = append(out, rs)
		}
	}
	return out, nil
}
