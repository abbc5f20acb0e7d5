// Package obsquery answers observation queries over the series any store
// keeps: one merge of per-series sample streams in (time, series id)
// order with keyed paging, blood pressure panels paired from a device's
// systolic and diastolic series, text and coded values, and sampled
// series served as one observation per period (SampledData). A store
// provides a Source — a consistent view of its series and their samples —
// and gets vigil.ObservationStore's semantics from Find, FindByID and
// Latest, the same for the embedded store and PostgreSQL.
package obsquery

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Time bounds of queries, in Unix ms: year 1 and year 9999.
const (
	MinTime = int64(-62135596800000)
	MaxTime = int64(253402300799999)
)

// DefaultLimit is the page size when a filter sets none.
const DefaultLimit = 100

// Series is one patient's values of one code from one device (and one
// method, vigil.Measurement.Method).
type Series struct {
	ID       uint64
	Patient  string
	Code     string // LOINC
	Device   string
	Unit     string // canonical UCUM unit ("" for text)
	Method   string
	Text     bool            // text or coded values, not numbers
	Sampling *vigil.Sampling // from a MedTech SampledData mapping
}

// Sample is one stored value of a series.
type Sample struct {
	T       int64 // device time, Unix ms
	V       float64
	Lag     int64 // receive time minus device time, whole seconds
	Text    string
	Concept *vigil.Concept
}

// Samples iterates one series' samples in time order (newest first when
// opened descending).
type Samples interface {
	// Next returns the next sample, or ok false at the end.
	Next() (s Sample, ok bool, err error)
	Close()
}

// Source is a consistent view of a store's series.
type Source interface {
	// PatientSeries lists the patient's series.
	PatientSeries(patientID string) ([]Series, error)
	// SeriesByID returns one series (ok false when there is none).
	SeriesByID(id uint64) (Series, bool, error)
	// Samples opens a series' samples with from ≤ T < to.
	Samples(s Series, from, to int64, desc bool) (Samples, error)
}

// ID is a sample's observation id: `{series base 36}.{time ms base 36}`.
// Blood pressure panels are "P" + the systolic sample's id, a sampled
// series' period "D" + the id of its start.
func ID(sid uint64, t int64) string {
	return strconv.FormatUint(sid, 36) + "." + strconv.FormatInt(t, 36)
}

// ParseID reads an observation id: kind is 0, 'P' (panel) or 'D' (period).
func ParseID(id string) (kind byte, sid uint64, t int64, err error) {
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

// Find implements vigil.ObservationStore.FindObservations over src.
func Find(src Source, f vigil.ObservationFilter) ([]*vigil.Observation, string, error) {
	if f.PatientID == "" {
		return nil, "", vigil.FieldErrorf("patient", "required", "observation searches need a patient")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	from, to := MinTime, MaxTime+1
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
	var cur item
	if f.Cursor != "" {
		var err error
		if cur.t, cur.sid, err = parseCursor(f.Cursor); err != nil {
			return nil, "", vigil.FieldErrorf("cursor", "invalid", "bad page cursor; start the search again")
		}
		if f.Desc {
			to = min(to, cur.t+1)
		} else {
			from = max(from, cur.t)
		}
	}
	if from >= to {
		return nil, "", nil
	}
	streams, err := open(src, f.PatientID, f.Codes, f.DeviceID, from, to, f.Desc, groups)
	if err != nil {
		return nil, "", err
	}
	defer closeAll(streams)
	var out []*vigil.Observation
	var last item
	for {
		it, err := nextItem(streams, f.Desc)
		if err != nil {
			return nil, "", err
		}
		if it == nil {
			return out, "", nil
		}
		if f.Cursor != "" && ((it.t == cur.t && it.sid == cur.sid) || before(it, &cur, f.Desc)) {
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
		last = *it
	}
}

// FindByID implements vigil.ObservationStore.FindObservationByID over src.
func FindByID(src Source, id string) (*vigil.Observation, error) {
	notFound := vigil.Errorf(vigil.ENOTFOUND, "observation %s not found", id)
	kind, sid, t, err := ParseID(id)
	if err != nil {
		return nil, notFound
	}
	s, ok, err := src.SeriesByID(sid)
	if err != nil {
		return nil, err
	}
	panel := kind == 'P'
	if !ok || (panel && s.Code != vigil.LOINCSystolic) || (kind == 'D' && s.Sampling == nil) {
		return nil, notFound
	}
	to := t + 1
	var groups *groupRange
	if kind == 'D' {
		to = t + max(1, int64(s.Sampling.IntervalMin)*60_000)
		groups = &groupRange{from: t, to: to}
	}
	codes := []string{s.Code}
	if panel {
		codes = []string{vigil.LOINCBPPanel}
	}
	streams, err := open(src, s.Patient, codes, s.Device, t, to, false, groups)
	if err != nil {
		return nil, err
	}
	defer closeAll(streams)
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

// Latest implements vigil.ObservationStore.LatestObservations over src.
func Latest(src Source, patientID string, codes []string, max int) (map[string][]*vigil.Observation, error) {
	if max <= 0 {
		max = 1
	}
	if len(codes) == 0 {
		all, err := src.PatientSeries(patientID)
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
		streams, err := open(src, patientID, []string{code}, "", MinTime, MaxTime+1, true, nil)
		if err != nil {
			return nil, err
		}
		var obs []*vigil.Observation
		for len(obs) < max {
			it, err := nextItem(streams, true)
			if err != nil {
				closeAll(streams)
				return nil, err
			}
			if it == nil {
				break
			}
			if it.obs.Code == code {
				obs = append(obs, it.obs)
			}
		}
		closeAll(streams)
		if len(obs) > 0 {
			out[code] = obs
		}
	}
	return out, nil
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

func closeAll(streams []stream) {
	for _, st := range streams {
		st.close()
	}
}

// open opens one stream per selected series. When codes is empty or asks
// for LOINCBPPanel, the systolic and diastolic series of a device are
// paired into one panel stream. With groups, a series with a Sampling
// yields one observation per period (groupStream) over the group range
// instead of its values.
func open(src Source, patientID string, codes []string, deviceID string, from, to int64, desc bool, groups *groupRange) (_ []stream, err error) {
	all, err := src.PatientSeries(patientID)
	if err != nil {
		return nil, err
	}
	panels := len(codes) == 0 || slices.Contains(codes, vigil.LOINCBPPanel)
	// A device's systolic and diastolic series of one method pair up.
	byDevice := make(map[[3]string]Series)
	for _, si := range all {
		byDevice[[3]string{si.Device, si.Code, si.Method}] = si
	}
	var streams []stream
	defer func() {
		if err != nil {
			closeAll(streams)
		}
	}()
	samples := func(si Series, from, to int64) (*sampleStream, error) {
		it, err := src.Samples(si, from, to, desc)
		if err != nil {
			return nil, err
		}
		return &sampleStream{it: it, info: si}, nil
	}
	for _, si := range all {
		if deviceID != "" && si.Device != deviceID {
			continue
		}
		if panels {
			d, hasDia := byDevice[[3]string{si.Device, vigil.LOINCDiastolic, si.Method}]
			_, hasSys := byDevice[[3]string{si.Device, vigil.LOINCSystolic, si.Method}]
			if si.Code == vigil.LOINCSystolic && hasDia {
				ss, err := samples(si, from, to)
				if err != nil {
					return nil, err
				}
				ds, err := samples(d, from, to)
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
		if groups != nil && si.Sampling != nil && !si.Text {
			ss, err := samples(si, groups.from, groups.to)
			if err != nil {
				return nil, err
			}
			streams = append(streams, &groupStream{inner: ss, info: si, desc: desc, exclude: groups.exclude})
			continue
		}
		ss, err := samples(si, from, to)
		if err != nil {
			return nil, err
		}
		streams = append(streams, ss)
	}
	return streams, nil
}

// sampleStream turns a series' samples into observations.
type sampleStream struct {
	it     Samples
	info   Series
	cur    item
	loaded bool
	done   bool
}

func (s *sampleStream) peek() (*item, error) {
	if s.done {
		return nil, nil
	}
	if !s.loaded {
		smp, ok, err := s.it.Next()
		if err != nil {
			return nil, err
		}
		if !ok {
			s.done = true
			return nil, nil
		}
		s.cur = item{t: smp.T, sid: s.info.ID, obs: s.observation(smp)}
		s.loaded = true
	}
	return &s.cur, nil
}

func (s *sampleStream) next()  { s.loaded = false }
func (s *sampleStream) close() { s.it.Close() }

func (s *sampleStream) observation(smp Sample) *vigil.Observation {
	t := time.UnixMilli(smp.T).UTC()
	o := &vigil.Observation{
		ID:        ID(s.info.ID, smp.T),
		PatientID: s.info.Patient,
		DeviceID:  s.info.Device,
		Code:      s.info.Code,
		Unit:      s.info.Unit,
		Method:    s.info.Method,
		Time:      t,
		Received:  t.Add(time.Duration(smp.Lag) * time.Second),
	}
	if s.info.Text {
		o.Text, o.Concept = smp.Text, smp.Concept
	} else {
		o.Value = smp.V
	}
	return o
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
	inner   *sampleStream
	info    Series
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
			g.cur = &item{t: b, sid: g.info.ID, obs: g.observation(b, vals)}
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
		ID:        "D" + ID(g.info.ID, b),
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

// before says whether a comes before b in page order (for distinct items).
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
