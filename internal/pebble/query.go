package pebble

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/obsquery"
	"github.com/vigil-iomt/vigil/internal/tsdb"
)

// Observation queries are answered by internal/obsquery over a snapshot
// (source); this file holds what it reads: series and their samples
// (chunks merged with head samples, text samples).

// series as read from a snapshot.
type seriesInfo struct {
	sid uint64
	seriesRecord
}

// patientSeries lists the patient's series in the snapshot.
func patientSeries(r pebble.Reader, patientID string) ([]seriesInfo, error) {
	prefix := prefixKey(pSeries, patientID)
	var out []seriesInfo
	err := scan(r, prefix, false, func(k, v []byte) (bool, error) {
		if len(v) != 8 {
			return false, vigil.Errorf(vigil.EINTERNAL, "corrupt series index")
		}
		sid := binary.BigEndian.Uint64(v)
		var rec seriesRecord
		ok, err := getPlainJSON(r, append([]byte{pSeriesByID, 0}, v...), &rec)
		if err != nil {
			return false, err
		}
		if ok {
			out = append(out, seriesInfo{sid, rec})
		}
		return true, nil
	})
	return out, err
}

// DeviceChannels returns the codes a device has reported (for any
// patient), or those of every device when deviceID is "", sorted by
// device and code.
func (s *Store) DeviceChannels(ctx context.Context, deviceID string) ([]vigil.Channel, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	seen := map[vigil.Channel]bool{}
	var out []vigil.Channel
	err := scan(s.db, []byte{pSeriesByID, 0}, false, func(_, v []byte) (bool, error) {
		var rec seriesRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return false, vigil.Errorf(vigil.EINTERNAL, "corrupt series record: %v", err)
		}
		c := vigil.Channel{Device: rec.Device, Code: rec.Code, Unit: rec.Unit}
		if rec.Device != "" && (deviceID == "" || rec.Device == deviceID) && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
		return true, nil
	})
	slices.SortFunc(out, func(a, b vigil.Channel) int {
		return cmp.Or(strings.Compare(a.Device, b.Device), strings.Compare(a.Code, b.Code))
	})
	return out, err
}

// source is a snapshot of the store as obsquery sees it.
type source struct {
	st *Store
	r  pebble.Reader
}

func (q source) PatientSeries(patientID string) ([]obsquery.Series, error) {
	all, err := patientSeries(q.r, patientID)
	out := make([]obsquery.Series, len(all))
	for i, si := range all {
		out[i] = si.series()
	}
	return out, err
}

func (q source) SeriesByID(id uint64) (obsquery.Series, bool, error) {
	var rec seriesRecord
	ok, err := q.st.getJSON(q.r, append([]byte{pSeriesByID, 0}, u64(id)...), &rec)
	return seriesInfo{id, rec}.series(), ok, err
}

func (q source) Samples(s obsquery.Series, from, to int64, desc bool) (obsquery.Samples, error) {
	info := seriesInfo{s.ID, seriesRecord{Patient: s.Patient, Code: s.Code, Device: s.Device, Unit: s.Unit, Method: s.Method, Sampling: s.Sampling}}
	if s.Text {
		return q.st.newTextStream(q.r, info, from, to, desc)
	}
	return q.st.newSeriesStream(q.r, info, from, to, desc)
}

func (si seriesInfo) series() obsquery.Series {
	return obsquery.Series{ID: si.sid, Patient: si.Patient, Code: si.Code, Device: si.Device, Unit: si.Unit,
		Method: si.Method, Text: si.Kind == kindText, Sampling: si.Sampling}
}

// numericSeries lists the patient's numeric series of code (of one
// device, when deviceID is set).
func numericSeries(r pebble.Reader, patientID, code, deviceID string) ([]seriesInfo, error) {
	all, err := patientSeries(r, patientID)
	return slices.DeleteFunc(all, func(si seriesInfo) bool {
		return si.Code != code || si.Kind == kindText || (deviceID != "" && si.Device != deviceID)
	}), err
}

// eachSeries calls fn with a stream over [from, to) of each of the
// patient's numeric series of code (of one device, when deviceID is
// set), in one snapshot, and closes it after.
func (s *Store) eachSeries(ctx context.Context, patientID, code, deviceID string, from, to time.Time, fn func(seriesInfo, *seriesStream) error) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	all, err := numericSeries(snap, patientID, code, deviceID)
	if err != nil {
		return err
	}
	for _, si := range all {
		st, err := s.newSeriesStream(snap, si, from.UnixMilli(), to.UnixMilli(), false)
		if err != nil {
			return err
		}
		err = fn(si, st)
		st.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func tooMany(max int) error {
	return vigil.FieldErrorf("to", "too-many", "more than %d values in this range: ask for a shorter one", max)
}

// ReadSeries returns the patient's numeric values of code in [from, to)
// per device (and method), reading the compressed chunks directly; at most
// max values in all (more is EINVALID: narrow the range).
func (s *Store) ReadSeries(ctx context.Context, patientID, code, deviceID string, from, to time.Time, max int) ([]vigil.SeriesData, error) {
	var out []vigil.SeriesData
	n := 0
	err := s.eachSeries(ctx, patientID, code, deviceID, from, to, func(si seriesInfo, st *seriesStream) error {
		sd := vigil.SeriesData{Device: si.Device, Method: si.Method, Unit: si.Unit}
		for {
			smp, ok, err := st.Next()
			if err != nil || !ok {
				if len(sd.T) > 0 {
					out = append(out, sd)
				}
				return err
			}
			if n++; n > max {
				return tooMany(max)
			}
			sd.T, sd.V = append(sd.T, smp.T), append(sd.V, smp.V)
		}
	})
	return out, err
}

// FindObservations implements vigil.ObservationStore.
func (s *Store) FindObservations(ctx context.Context, f vigil.ObservationFilter) ([]*vigil.Observation, string, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, "", err
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	return obsquery.Find(source{s, snap}, f)
}

// FindObservationByID implements vigil.ObservationStore.
func (s *Store) FindObservationByID(ctx context.Context, id string) (*vigil.Observation, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	return obsquery.FindByID(source{s, snap}, id)
}

// LatestObservations implements vigil.ObservationStore.
func (s *Store) LatestObservations(ctx context.Context, patientID string, codes []string, max int) (map[string][]*vigil.Observation, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	return obsquery.Latest(source{s, snap}, patientID, codes, max)
}

// seriesStream yields one series' samples in [from, to) in time order,
// loading one chunk bucket at a time and merging head samples into it.
type seriesStream struct {
	open     func([]byte) ([]byte, error) // unseals values (Store.openValue)
	r        pebble.Reader
	info     seriesInfo
	from, to int64
	desc     bool
	cit, hit *pebble.Iterator
	cur      int64 // next bucket to look at (asc: ≥ cur; desc: ≤ cur)
	buf      []tsdb.Sample
	pos      int
	done     bool
	err      error
	// raw: a bucket's chunk lying wholly in [from, to) with no head
	// samples is handed on as it is (rawChunk) instead of decoded.
	raw      bool
	rawChunk []byte
}

func (st *Store) newSeriesStream(r pebble.Reader, info seriesInfo, from, to int64, desc bool) (*seriesStream, error) {
	s := &seriesStream{open: st.openValue, r: r, info: info, from: from, to: to, desc: desc}
	var err error
	s.cit, err = r.NewIter(&pebble.IterOptions{
		LowerBound: chunkKey(info.sid, bucketOf(from)),
		UpperBound: upperBound(chunkKey(info.sid, bucketOf(to-1))),
	})
	if err != nil {
		return nil, storeErr(err)
	}
	s.hit, err = r.NewIter(&pebble.IterOptions{LowerBound: headKey(info.sid, from), UpperBound: headKey(info.sid, to)})
	if err != nil {
		s.cit.Close()
		return nil, storeErr(err)
	}
	if desc {
		s.cur = bucketOf(to - 1)
	} else {
		s.cur = bucketOf(from)
	}
	return s, nil
}

func (s *seriesStream) Close() {
	s.cit.Close()
	s.hit.Close()
}

// Next implements obsquery.Samples.
func (s *seriesStream) Next() (obsquery.Sample, bool, error) {
	for s.pos >= len(s.buf) {
		if s.done || s.err != nil {
			return obsquery.Sample{}, false, s.err
		}
		s.load()
	}
	smp := s.buf[s.pos]
	s.pos++
	return obsquery.Sample{T: smp.T, V: smp.V, Lag: smp.Lag}, true, nil
}

// textStream yields one text series' samples in [from, to) in time order.
type textStream struct {
	open func([]byte) ([]byte, error)
	sid  uint64
	it   *pebble.Iterator
	desc bool
	ok   bool // it is positioned on a sample
}

func (st *Store) newTextStream(r pebble.Reader, info seriesInfo, from, to int64, desc bool) (*textStream, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: textKey(info.sid, from), UpperBound: textKey(info.sid, to)})
	if err != nil {
		return nil, storeErr(err)
	}
	s := &textStream{open: st.openValue, sid: info.sid, it: it, desc: desc}
	if desc {
		s.ok = it.Last()
	} else {
		s.ok = it.First()
	}
	return s, nil
}

// Next implements obsquery.Samples.
func (s *textStream) Next() (obsquery.Sample, bool, error) {
	if !s.ok {
		return obsquery.Sample{}, false, storeErr(s.it.Error())
	}
	t := unbe64(s.it.Key()[10:])
	v, err := s.it.ValueAndErr()
	if err == nil {
		v, err = s.open(v)
	}
	var ts textSample
	if err == nil {
		err = json.Unmarshal(v, &ts)
	}
	if err != nil {
		return obsquery.Sample{}, false, vigil.Errorf(vigil.EINTERNAL, "text sample of series %d does not read: %v", s.sid, err)
	}
	if s.desc {
		s.ok = s.it.Prev()
	} else {
		s.ok = s.it.Next()
	}
	return obsquery.Sample{T: t, Lag: ts.Lag, Text: ts.Text, Concept: ts.Concept}, true, nil
}

func (s *textStream) Close() { s.it.Close() }

// load fills buf with the next bucket that has samples.
func (s *seriesStream) load() {
	s.buf, s.pos = s.buf[:0], 0
	var b int64
	found := false
	if s.desc {
		if s.cur < bucketOf(s.from) {
			s.done = true
			return
		}
		if s.cit.SeekLT(chunkKey(s.info.sid, s.cur+bucket)) {
			b, found = unbe64(s.cit.Key()[10:]), true
		}
		if s.hit.SeekLT(headKey(s.info.sid, min(s.cur+bucket, s.to))) {
			if hb := bucketOf(unbe64(s.hit.Key()[10:])); !found || hb > b {
				b, found = hb, true
			}
		}
	} else {
		if s.cur > bucketOf(s.to-1) {
			s.done = true
			return
		}
		if s.cit.SeekGE(chunkKey(s.info.sid, s.cur)) {
			b, found = unbe64(s.cit.Key()[10:]), true
		}
		if s.hit.SeekGE(headKey(s.info.sid, max(s.cur, s.from))) {
			if hb := bucketOf(unbe64(s.hit.Key()[10:])); !found || hb < b {
				b, found = hb, true
			}
		}
	}
	if !found {
		s.done = true
		s.err = storeErr(firstErr(s.cit.Error(), s.hit.Error()))
		return
	}
	if s.desc {
		s.cur = b - bucket
	} else {
		s.cur = b + bucket
	}
	var raw []byte
	if v, ok, err := get(s.r, chunkKey(s.info.sid, b)); err != nil {
		s.err = err
		return
	} else if ok {
		if raw, err = s.open(v); err != nil {
			s.err = vigil.Errorf(vigil.EINTERNAL, "sealed chunk of series %d does not open: %v", s.info.sid, err)
			return
		}
	}
	var head []tsdb.Sample
	lo, hi := max(b, s.from), min(b+bucket, s.to)
	end := headKey(s.info.sid, hi)
	for ok := s.hit.SeekGE(headKey(s.info.sid, lo)); ok && bytes.Compare(s.hit.Key(), end) < 0; ok = s.hit.Next() {
		v, err := s.hit.ValueAndErr()
		if err != nil {
			s.err = storeErr(err)
			return
		}
		if v, err = s.open(v); err != nil {
			s.err = vigil.Errorf(vigil.EINTERNAL, "sealed sample does not open: %v", err)
			return
		}
		smp, err := decodeHead(unbe64(s.hit.Key()[10:]), v)
		if err != nil {
			s.err = err
			return
		}
		head = append(head, smp)
	}
	if s.raw && raw != nil && len(head) == 0 && b >= s.from && b+bucket <= s.to {
		s.rawChunk = raw
		return
	}
	var chunk []tsdb.Sample
	if raw != nil {
		var err error
		if chunk, err = tsdb.Decode(raw); err != nil {
			s.err = vigil.Errorf(vigil.EINTERNAL, "corrupt chunk of series %d: %v", s.info.sid, err)
			return
		}
	}
	for _, smp := range tsdb.Merge(chunk, head) {
		if smp.T >= s.from && smp.T < s.to {
			s.buf = append(s.buf, smp)
		}
	}
	if s.desc {
		slices.Reverse(s.buf)
	}
}

// nextChunk returns the next bucket's values: the stored chunk as it is
// (raw) when it can be, else the merged samples (smp).
func (s *seriesStream) nextChunk() (raw []byte, smp []tsdb.Sample, ok bool, err error) {
	for {
		if s.done || s.err != nil {
			return nil, nil, false, s.err
		}
		s.rawChunk = nil
		s.load()
		if s.rawChunk != nil {
			return s.rawChunk, nil, true, nil
		}
		if len(s.buf) > 0 {
			return nil, slices.Clone(s.buf), true, nil
		}
	}
}

// ReadSeriesChunks is ReadSeries in the chunk format: compacted 2-hour
// chunks inside the range are passed on without decoding; the edges and
// recent (head) values are encoded afresh.
func (s *Store) ReadSeriesChunks(ctx context.Context, patientID, code, deviceID string, from, to time.Time, max int) ([]vigil.SeriesChunks, error) {
	var out []vigil.SeriesChunks
	n := 0
	err := s.eachSeries(ctx, patientID, code, deviceID, from, to, func(si seriesInfo, st *seriesStream) error {
		st.raw = true
		sc := vigil.SeriesChunks{Device: si.Device, Method: si.Method, Unit: si.Unit}
		for {
			raw, smp, ok, err := st.nextChunk()
			if err != nil || !ok {
				if len(sc.Chunks) > 0 {
					out = append(out, sc)
				}
				return err
			}
			if raw == nil {
				if raw, err = tsdb.Encode(smp); err != nil {
					return err
				}
			}
			c, err := tsdb.Count(raw)
			if err != nil {
				return vigil.Errorf(vigil.EINTERNAL, "corrupt chunk of series %d: %v", si.sid, err)
			}
			if n += c; n > max {
				return tooMany(max)
			}
			sc.Chunks = append(sc.Chunks, raw)
		}
	})
	return out, err
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// ReadingDays returns the UTC days in [from, to) on which the patient has
// stored values (from any device, excluding Vigil's own computed scores),
// in order. It reads only chunk keys (a chunk covers 2 hours inside one
// day) and skips ahead a day at a time through head samples.
func (s *Store) ReadingDays(ctx context.Context, patientID string, from, to time.Time) ([]time.Time, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	series, err := patientSeries(snap, patientID)
	if err != nil {
		return nil, err
	}
	day := func(ms int64) int64 { return time.UnixMilli(ms).UTC().Truncate(24 * time.Hour).UnixMilli() }
	days := map[int64]bool{}
	lo, hi := from.UnixMilli(), to.UnixMilli()
	const dayMS = int64(24 * time.Hour / time.Millisecond)
	for _, si := range series {
		if si.Device == "vigil-news2" {
			continue
		}
		for _, kind := range []byte{pChunk, pHead, pText} {
			mk := func(t int64) []byte {
				switch kind {
				case pChunk:
					return chunkKey(si.sid, t)
				case pText:
					return textKey(si.sid, t)
				}
				return headKey(si.sid, t)
			}
			start := lo
			if kind == pChunk {
				start = bucketOf(lo)
			}
			it, err := snap.NewIter(&pebble.IterOptions{LowerBound: mk(start), UpperBound: mk(hi)})
			if err != nil {
				return nil, storeErr(err)
			}
			for ok := it.First(); ok; {
				t := unbe64(it.Key()[10:])
				if t >= lo {
					days[day(t)] = true
				}
				ok = it.SeekGE(mk(day(t) + dayMS))
			}
			err = it.Close()
			if err != nil {
				return nil, storeErr(err)
			}
		}
	}
	out := make([]time.Time, 0, len(days))
	for d := range days {
		out = append(out, time.UnixMilli(d).UTC())
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out, nil
}
