package pebble

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/tsdb"
)

// Time bounds of queries, in Unix ms: year 1 and year 9999.
const (
	minTime = int64(-62135596800000)
	maxTime = int64(253402300799999)
)

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

// item is one observation in a query's merge.
type item struct {
	t   int64
	sid uint64
	obs *vigil.Observation
}

type stream interface {
	peek() (*item, error) // nil at the end
	next()
	close()
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
	it       item
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

func (s *seriesStream) close() {
	s.cit.Close()
	s.hit.Close()
}

func (s *seriesStream) peek() (*item, error) {
	for s.pos >= len(s.buf) {
		if s.done || s.err != nil {
			return nil, s.err
		}
		s.load()
	}
	smp := s.buf[s.pos]
	s.it = item{t: smp.T, sid: s.info.sid, obs: s.observation(smp)}
	return &s.it, nil
}

func (s *seriesStream) next() { s.pos++ }

func (s *seriesStream) observation(smp tsdb.Sample) *vigil.Observation {
	t := time.UnixMilli(smp.T).UTC()
	return &vigil.Observation{
		ID:        observationID(s.info.sid, smp.T),
		PatientID: s.info.Patient,
		DeviceID:  s.info.Device,
		Code:      s.info.Code,
		Value:     smp.V,
		Unit:      s.info.Unit,
		Method:    s.info.Method,
		Time:      t,
		Received:  t.Add(time.Duration(smp.Lag) * time.Second),
	}
}

// textStream yields one text series' samples in [from, to) in time order.
type textStream struct {
	open   func([]byte) ([]byte, error)
	info   seriesInfo
	it     *pebble.Iterator
	desc   bool
	ok     bool // it is positioned on a sample
	loaded bool // cur holds that sample
	err    error
	cur    item
}

func (st *Store) newTextStream(r pebble.Reader, info seriesInfo, from, to int64, desc bool) (*textStream, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: textKey(info.sid, from), UpperBound: textKey(info.sid, to)})
	if err != nil {
		return nil, storeErr(err)
	}
	s := &textStream{open: st.openValue, info: info, it: it, desc: desc}
	if desc {
		s.ok = it.Last()
	} else {
		s.ok = it.First()
	}
	return s, nil
}

func (s *textStream) peek() (*item, error) {
	if s.err != nil {
		return nil, s.err
	}
	if !s.ok {
		return nil, storeErr(s.it.Error())
	}
	if s.loaded {
		return &s.cur, nil
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
		s.err = vigil.Errorf(vigil.EINTERNAL, "text sample of series %d does not read: %v", s.info.sid, err)
		return nil, s.err
	}
	tm := time.UnixMilli(t).UTC()
	s.cur = item{t: t, sid: s.info.sid, obs: &vigil.Observation{
		ID:        observationID(s.info.sid, t),
		PatientID: s.info.Patient,
		DeviceID:  s.info.Device,
		Code:      s.info.Code,
		Method:    s.info.Method,
		Text:      ts.Text,
		Concept:   ts.Concept,
		Time:      tm,
		Received:  tm.Add(time.Duration(ts.Lag) * time.Second),
	}}
	s.loaded = true
	return &s.cur, nil
}

func (s *textStream) next() {
	s.loaded = false
	if s.desc {
		s.ok = s.it.Prev()
	} else {
		s.ok = s.it.Next()
	}
}

func (s *textStream) close() { s.it.Close() }

// groupRange is the time range whose sampled periods a query reads, and
// the periods excluded from it (FHIR date=ne).
type groupRange struct {
	from, to int64
	exclude  []vigil.Period
}

// maxSlots bounds the values of one sampled period (a day at 1 Hz is
// 86,400); the mapping's validation refuses finer periods.
const maxSlots = 100_000

// groupStream yields a sampled series (vigil.Sampling) as one observation
// per period: the values in [start, start+interval) as SampledData.
type groupStream struct {
	inner   *seriesStream
	info    seriesInfo
	desc    bool
	exclude []vigil.Period
	cur     *item
}

func (g *groupStream) start(t int64) int64 {
	iv := int64(g.info.Sampling.IntervalMin) * 60_000
	if iv <= 0 {
		return t // one observation per time a value was taken
	}
	return t - ((t%iv)+iv)%iv
}

func (g *groupStream) peek() (*item, error) {
	for g.cur == nil {
		first, err := g.inner.peek()
		if err != nil || first == nil {
			return nil, err
		}
		b := g.start(first.t)
		var vals []*vigil.Observation
		for {
			it, err := g.inner.peek()
			if err != nil {
				return nil, err
			}
			if it == nil || g.start(it.t) != b {
				break
			}
			if !excluded(g.exclude, it.obs.Time) {
				vals = append(vals, it.obs)
			}
			g.inner.next()
		}
		if len(vals) > 0 {
			g.cur = &item{t: b, sid: g.info.sid, obs: g.observation(b, vals)}
		}
	}
	return g.cur, nil
}

// observation builds the period's SampledData: value k is the one taken
// at start + k·period (rounded down), "E" where none was.
func (g *groupStream) observation(b int64, vals []*vigil.Observation) *vigil.Observation {
	if g.desc {
		slices.Reverse(vals)
	}
	sp := g.info.Sampling
	period := max(sp.PeriodMS, 1)
	end := b + int64(sp.IntervalMin)*60_000 // = b for one time
	slots := make([]string, 0, len(vals))
	for _, v := range vals {
		k := int(float64(v.Time.UnixMilli()-b) / period)
		if k >= maxSlots {
			break
		}
		for len(slots) <= k {
			slots = append(slots, "E")
		}
		slots[k] = strconv.FormatFloat(v.Value, 'f', -1, 64)
	}
	last := vals[len(vals)-1]
	return &vigil.Observation{
		ID:        "D" + observationID(g.info.sid, b),
		PatientID: g.info.Patient,
		DeviceID:  g.info.Device,
		Code:      g.info.Code,
		Method:    g.info.Method,
		Unit:      g.info.Unit,
		Value:     last.Value,
		Time:      time.UnixMilli(b).UTC(),
		Received:  last.Received,
		Sampled:   &vigil.SampledData{PeriodMS: sp.PeriodMS, End: time.UnixMilli(end).UTC(), Data: strings.Join(slots, " "), Count: len(vals)},
	}
}

func (g *groupStream) next()  { g.cur = nil }
func (g *groupStream) close() { g.inner.close() }

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
	var chunk []tsdb.Sample
	if v, ok, err := get(s.r, chunkKey(s.info.sid, b)); err != nil {
		s.err = err
		return
	} else if ok {
		if v, err = s.open(v); err != nil {
			s.err = vigil.Errorf(vigil.EINTERNAL, "sealed chunk of series %d does not open: %v", s.info.sid, err)
			return
		}
		if chunk, err = tsdb.Decode(v); err != nil {
			s.err = vigil.Errorf(vigil.EINTERNAL, "corrupt chunk of series %d: %v", s.info.sid, err)
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
	for _, smp := range tsdb.Merge(chunk, head) {
		if smp.T >= s.from && smp.T < s.to {
			s.buf = append(s.buf, smp)
		}
	}
	if s.desc {
		slices.Reverse(s.buf)
	}
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// panelStream pairs systolic and diastolic samples of one device taken at
// the same time into blood pressure panels. Unpaired values pass through.
type panelStream struct {
	sys, dia stream
	desc     bool
	it       item
	pop      func()
}

func (p *panelStream) close() { p.sys.close(); p.dia.close() }

func (p *panelStream) next() { p.pop() }

func (p *panelStream) peek() (*item, error) {
	s, err := p.sys.peek()
	if err != nil {
		return nil, err
	}
	d, err := p.dia.peek()
	if err != nil {
		return nil, err
	}
	switch {
	case s == nil && d == nil:
		return nil, nil
	case d == nil || (s != nil && s.t != d.t && (s.t < d.t) != p.desc):
		p.pop = p.sys.next
		return s, nil
	case s == nil || s.t != d.t:
		p.pop = p.dia.next
		return d, nil
	}
	so, do := s.obs, d.obs
	p.it = item{t: s.t, sid: s.sid, obs: &vigil.Observation{
		ID:        "P" + so.ID,
		PatientID: so.PatientID,
		DeviceID:  so.DeviceID,
		Code:      vigil.LOINCBPPanel,
		Unit:      so.Unit,
		Time:      so.Time,
		Received:  so.Received,
		Components: []vigil.Measurement{
			{Code: vigil.LOINCSystolic, Value: so.Value, Unit: so.Unit},
			{Code: vigil.LOINCDiastolic, Value: do.Value, Unit: do.Unit},
		},
	}}
	p.pop = func() { p.sys.next(); p.dia.next() }
	return &p.it, nil
}

// Observation ids: the series id and the device time in ms, both base 36,
// joined by a dot; blood pressure panels carry a leading "P" and the
// systolic series id. Stable across compaction; at most 27 characters.
func observationID(sid uint64, t int64) string {
	return strconv.FormatUint(sid, 36) + "." + strconv.FormatInt(t, 36)
}

// parseObservationID reads a sample's id, or a panel's ("P…") or a
// sampled period's ("D…", time = the period's start): kind is 0, 'P' or 'D'.
func parseObservationID(id string) (kind byte, sid uint64, t int64, err error) {
	rest := id
	if strings.HasPrefix(id, "P") || strings.HasPrefix(id, "D") {
		kind, rest = id[0], id[1:]
	}
	a, b, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad id")
	}
	if sid, err = strconv.ParseUint(a, 36, 64); err != nil {
		return
	}
	t, err = strconv.ParseInt(b, 36, 64)
	return
}

// FindObservations implements vigil.ObservationStore.
func (s *Store) FindObservations(ctx context.Context, f vigil.ObservationFilter) ([]*vigil.Observation, string, error) {
	if f.PatientID == "" {
		return nil, "", vigil.FieldErrorf("patient", "required", "observation searches need a patient")
	}
	if err := ctxErr(ctx); err != nil {
		return nil, "", err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	from, to := minTime, maxTime+1
	if !f.From.IsZero() {
		from = max(from, f.From.UnixMilli())
		if f.From.Sub(time.UnixMilli(from)) > 0 { // sub-millisecond bound: round up
			from++
		}
	}
	if !f.To.IsZero() {
		to = min(to, f.To.UnixMilli())
		if f.To.Sub(time.UnixMilli(to)) > 0 {
			to++
		}
	}
	var groups *groupRange
	if f.SampledData {
		// Periods are read whole over the searched range (not from the
		// cursor: a period starting before it was served already, and
		// the cursor check below skips it).
		groups = &groupRange{from: from, to: to, exclude: f.Exclude}
	}
	var curT int64
	var curSID uint64
	if f.Cursor != "" {
		var err error
		if curT, curSID, err = parseCursor(f.Cursor); err != nil {
			return nil, "", vigil.FieldErrorf("cursor", "invalid", "bad page cursor; start the search again")
		}
		if f.Desc {
			to = min(to, curT+1)
		} else {
			from = max(from, curT)
		}
	}
	if from >= to {
		return nil, "", nil
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	streams, err := s.openStreams(snap, f.PatientID, f.Codes, f.DeviceID, from, to, f.Desc, groups)
	if err != nil {
		return nil, "", err
	}
	defer func() {
		for _, st := range streams {
			st.close()
		}
	}()
	var out []*vigil.Observation
	var last *item
	for {
		it, err := nextItem(streams, f.Desc)
		if err != nil {
			return nil, "", err
		}
		if it == nil {
			return out, "", nil
		}
		if f.Cursor != "" && ((it.t == curT && it.sid == curSID) || before(it, &item{t: curT, sid: curSID}, f.Desc)) {
			continue // served on an earlier page
		}
		if len(f.Codes) > 0 && !slices.Contains(f.Codes, it.obs.Code) {
			continue // an unpaired systolic or diastolic value of a panel search
		}
		if it.obs.Sampled == nil && excluded(f.Exclude, it.obs.Time) {
			continue // (a period's values were checked one by one)
		}
		if len(out) == limit {
			return out, formatCursor(last.t, last.sid), nil
		}
		out = append(out, it.obs)
		cp := *it
		last = &cp
	}
}

func excluded(ps []vigil.Period, t time.Time) bool {
	for _, p := range ps {
		if p.Contains(t) {
			return true
		}
	}
	return false
}

// nextItem pops the next item in (time, series id) order across streams.
func nextItem(streams []stream, desc bool) (*item, error) {
	var best *item
	bi := -1
	for i, st := range streams {
		it, err := st.peek()
		if err != nil {
			return nil, err
		}
		if it == nil {
			continue
		}
		if best == nil || before(it, best, desc) {
			best, bi = it, i
		}
	}
	if best == nil {
		return nil, nil
	}
	cp := *best
	streams[bi].next()
	return &cp, nil
}

func before(a, b *item, desc bool) bool {
	if a.t != b.t {
		return (a.t < b.t) != desc
	}
	return (a.sid < b.sid) != desc
}

func formatCursor(t int64, sid uint64) string {
	return "c1." + strconv.FormatInt(t, 36) + "." + strconv.FormatUint(sid, 36)
}

func parseCursor(c string) (int64, uint64, error) {
	parts := strings.Split(c, ".")
	if len(parts) != 3 || parts[0] != "c1" {
		return 0, 0, fmt.Errorf("bad cursor")
	}
	t, err := strconv.ParseInt(parts[1], 36, 64)
	if err != nil {
		return 0, 0, err
	}
	sid, err := strconv.ParseUint(parts[2], 36, 64)
	return t, sid, err
}

// openStreams opens one stream per selected series. When codes is empty
// or asks for LOINCBPPanel, the systolic and diastolic series of a device
// are paired into one panel stream.
//
// With groups, a series with a Sampling yields one observation per period
// (groupStream) over the group range instead of its values.
func (s *Store) openStreams(r pebble.Reader, patientID string, codes []string, deviceID string, from, to int64, desc bool, groups *groupRange) (_ []stream, err error) {
	all, err := patientSeries(r, patientID)
	if err != nil {
		return nil, err
	}
	panels := len(codes) == 0 || slices.Contains(codes, vigil.LOINCBPPanel)
	// A device's systolic and diastolic series of one method pair up.
	byDevice := make(map[[3]string]seriesInfo)
	for _, si := range all {
		byDevice[[3]string{si.Device, si.Code, si.Method}] = si
	}
	var streams []stream
	defer func() {
		if err != nil {
			for _, st := range streams {
				st.close()
			}
		}
	}()
	for _, si := range all {
		if deviceID != "" && si.Device != deviceID {
			continue
		}
		if panels {
			d, hasDia := byDevice[[3]string{si.Device, vigil.LOINCDiastolic, si.Method}]
			_, hasSys := byDevice[[3]string{si.Device, vigil.LOINCSystolic, si.Method}]
			if si.Code == vigil.LOINCSystolic && hasDia {
				ss, err := s.newSeriesStream(r, si, from, to, desc)
				if err != nil {
					return nil, err
				}
				ds, err := s.newSeriesStream(r, d, from, to, desc)
				if err != nil {
					ss.close()
					return nil, err
				}
				streams = append(streams, &panelStream{sys: ss, dia: ds, desc: desc})
				continue
			}
			if si.Code == vigil.LOINCDiastolic && hasSys {
				continue // part of the panel stream
			}
		}
		if len(codes) > 0 && !slices.Contains(codes, si.Code) {
			continue
		}
		var st stream
		switch {
		case si.Kind == kindText:
			st, err = s.newTextStream(r, si, from, to, desc)
		case groups != nil && si.Sampling != nil:
			var ss *seriesStream
			if ss, err = s.newSeriesStream(r, si, groups.from, groups.to, desc); err == nil {
				st = &groupStream{inner: ss, info: si, desc: desc, exclude: groups.exclude}
			}
		default:
			st, err = s.newSeriesStream(r, si, from, to, desc)
		}
		if err != nil {
			return nil, err
		}
		streams = append(streams, st)
	}
	return streams, nil
}

// FindObservationByID implements vigil.ObservationStore.
func (s *Store) FindObservationByID(ctx context.Context, id string) (*vigil.Observation, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	notFound := vigil.Errorf(vigil.ENOTFOUND, "observation %s not found", id)
	kind, sid, t, err := parseObservationID(id)
	if err != nil {
		return nil, notFound
	}
	panel := kind == 'P'
	snap := s.db.NewSnapshot()
	defer snap.Close()
	var rec seriesRecord
	ok, err := s.getJSON(snap, append([]byte{pSeriesByID, 0}, u64(sid)...), &rec)
	if err != nil {
		return nil, err
	}
	if !ok || (panel && rec.Code != vigil.LOINCSystolic) || (kind == 'D' && rec.Sampling == nil) {
		return nil, notFound
	}
	to := t + 1
	var groups *groupRange
	if kind == 'D' {
		to = t + max(1, int64(rec.Sampling.IntervalMin)*60_000)
		groups = &groupRange{from: t, to: to}
	}
	var codes []string
	if panel {
		codes = []string{vigil.LOINCBPPanel}
	} else {
		codes = []string{rec.Code}
	}
	streams, err := s.openStreams(snap, rec.Patient, codes, rec.Device, t, to, false, groups)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, st := range streams {
			st.close()
		}
	}()
	for {
		it, err := nextItem(streams, false)
		if err != nil {
			return nil, err
		}
		if it == nil {
			return nil, notFound
		}
		if it.obs.ID == id {
			return it.obs, nil
		}
	}
}

// LatestObservations implements vigil.ObservationStore.
func (s *Store) LatestObservations(ctx context.Context, patientID string, codes []string, max int) (map[string][]*vigil.Observation, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if max <= 0 {
		max = 1
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	if len(codes) == 0 {
		all, err := patientSeries(snap, patientID)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, si := range all {
			c := si.Code
			if c == vigil.LOINCSystolic || c == vigil.LOINCDiastolic {
				c = vigil.LOINCBPPanel
			}
			if !seen[c] {
				seen[c] = true
				codes = append(codes, c)
			}
		}
	}
	out := make(map[string][]*vigil.Observation)
	for _, code := range codes {
		streams, err := s.openStreams(snap, patientID, []string{code}, "", minTime, maxTime+1, true, nil)
		if err != nil {
			return nil, err
		}
		var obs []*vigil.Observation
		for len(obs) < max {
			it, err := nextItem(streams, true)
			if err != nil {
				for _, st := range streams {
					st.close()
				}
				return nil, err
			}
			if it == nil {
				break
			}
			if it.obs.Code == code {
				obs = append(obs, it.obs)
			}
		}
		for _, st := range streams {
			st.close()
		}
		if len(obs) > 0 {
			out[code] = obs
		}
	}
	return out, nil
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
