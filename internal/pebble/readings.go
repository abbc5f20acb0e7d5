package pebble

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/obsquery"
	"github.com/vigil-iomt/vigil/internal/tsdb"
)

// A series is the samples of one code for one patient from one device,
// and of one method when the code alone does not tell values apart
// (vigil.Measurement.Method).
type seriesKey struct{ Patient, Code, Device, Method string }

type seriesRecord struct {
	Patient string `json:"patient"`
	Code    string `json:"code"`
	Device  string `json:"device"`
	Unit    string `json:"unit"` // the code's canonical UCUM unit
	Method  string `json:"method,omitempty"`
	// Kind "text": the series holds text or coded values (n keys), not
	// numbers (h keys and chunks).
	Kind string `json:"kind,omitempty"`
	// Sampling, when the series began under a MedTech SampledData mapping.
	Sampling *vigil.Sampling `json:"sampling,omitempty"`
}

const kindText = "text"

// bucket is the time span of one chunk: 2 hours of 1 Hz samples.
const bucket = int64(2 * time.Hour / time.Millisecond)

func bucketOf(t int64) int64 {
	b := t - t%bucket
	if t < 0 && t%bucket != 0 {
		b -= bucket
	}
	return b
}

func (s *Store) loadSeries() error {
	return scan(s.db, prefixKey(pSeriesByID), false, func(k, v []byte) (bool, error) {
		if len(k) != 10 {
			return false, vigil.Errorf(vigil.EINTERNAL, "corrupt series key")
		}
		sid := binary.BigEndian.Uint64(k[2:])
		var r seriesRecord
		if err := s.unmarshal(v, &r); err != nil {
			return false, err
		}
		s.series[seriesKey{r.Patient, r.Code, r.Device, r.Method}] = sid
		if sid >= s.nextSID {
			s.nextSID = sid + 1
		}
		return true, nil
	})
}

func seriesIndexKey(k seriesKey) []byte {
	if k.Method != "" {
		return key(pSeries, k.Patient, k.Code, k.Device, k.Method)
	}
	return key(pSeries, k.Patient, k.Code, k.Device)
}

func headKey(sid uint64, t int64) []byte { return appendHeadKey(make([]byte, 0, 18), sid, t) }

func appendHeadKey(b []byte, sid uint64, t int64) []byte {
	b = append(b, pHead, 0)
	b = binary.BigEndian.AppendUint64(b, sid)
	return binary.BigEndian.AppendUint64(b, uint64(t)^(1<<63)) // be64
}

func chunkKey(sid uint64, b int64) []byte {
	k := make([]byte, 0, 18)
	k = append(k, pChunk, 0)
	k = append(k, u64(sid)...)
	return append(k, be64(b)...)
}

func dedupKey(device, id string) []byte { return key(pDedup, device, id) }

// head sample value: float64 bits, then the lag in seconds as a varint.
func encodeHead(v float64, lag int64) []byte {
	return appendHead(make([]byte, 0, 8+binary.MaxVarintLen64), v, lag)
}

func appendHead(b []byte, v float64, lag int64) []byte {
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(v))
	return binary.AppendVarint(b, lag)
}

func decodeHead(t int64, b []byte) (tsdb.Sample, error) {
	if len(b) < 9 {
		return tsdb.Sample{}, vigil.Errorf(vigil.EINTERNAL, "corrupt head sample")
	}
	lag, n := binary.Varint(b[8:])
	if n <= 0 {
		return tsdb.Sample{}, vigil.Errorf(vigil.EINTERNAL, "corrupt head sample")
	}
	return tsdb.Sample{T: t, V: math.Float64frombits(binary.BigEndian.Uint64(b)), Lag: lag}, nil
}

func lagSeconds(r *vigil.Reading) int64 {
	if r.Received.IsZero() {
		return 0
	}
	return int64(math.Round(r.Received.Sub(r.Time).Seconds()))
}

// AppendReadings stores readings durably, once per (DeviceID, ID). It
// implements vigil.ReadingStore. Concurrent calls commit concurrently and
// Pebble coalesces their WAL syncs; a reading id being committed by
// another call is waited for, so that it is reported as a duplicate only
// once it is durable.
func (s *Store) AppendReadings(ctx context.Context, rs []*vigil.Reading) ([]vigil.AppendResult, error) {
	res := make([]vigil.AppendResult, len(rs))
	// Reading ids ending in a number are remembered as runs (j keys, one
	// per run of consecutive numbers a call stores); other ids, and those
	// of a store older than runs until they expire, one k key each.
	keys := make([]string, len(rs)) // k key of reading i, or "" (a run id)
	var (
		headers []string            // the run headers of the call, in order of appearance
		refs    map[string][]runRef // header → its readings
	)
	var lastDevice, lastPrefix, lastHeader string // most readings share the previous one's
	for i, r := range rs {
		if r.DeviceID == "" || r.ID == "" || r.PatientID == "" {
			return nil, vigil.Errorf(vigil.EINVALID, "reading %d lacks a device, id or patient", i)
		}
		if prefix, n, ok := runID(r.ID); ok {
			if refs == nil {
				refs = make(map[string][]runRef)
			}
			h := lastHeader
			if h == "" || r.DeviceID != lastDevice || prefix != lastPrefix {
				h = string(runHeader(r.DeviceID, prefix))
				lastDevice, lastPrefix, lastHeader = r.DeviceID, prefix, h
			}
			rr, ok := refs[h]
			if !ok {
				if len(headers) == 0 { // a batch is usually all one device's run
					rr = make([]runRef, 0, len(rs)-i)
				}
				headers = append(headers, h)
			}
			refs[h] = append(rr, runRef{n: n, i: i})
			continue
		}
		keys[i] = string(dedupKey(r.DeviceID, r.ID))
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, vigil.Errorf(vigil.EUNAVAILABLE, "store is closing")
		}
		var wait chan struct{}
	find:
		for _, ks := range [2][]string{keys, headers} {
			for _, k := range ks {
				if k == "" {
					continue // a run id: its header is claimed
				}
				if c, ok := s.pending[k]; ok {
					wait = c.done
					break find
				}
			}
		}
		if wait == nil {
			break // s.mu held
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctxErr(ctx)
		}
	}
	// s.mu is held: no other call commits these keys until we are done.
	b := s.db.NewBatch()
	mine := &commit{done: make(chan struct{})}
	var heads *pebble.Iterator // opened by the first mergeIntoChunk
	var claimed []string       // reading ids and chunk keys this call commits
	fresh := 0                 // readings not stored before
	var newSeries []seriesKey
	marked := make(map[dayMark]bool)
	var outCount, outBytes int64 // outbox entries written
	forget := func() {
		// Series ids of a batch that did not commit.
		for _, k := range newSeries {
			delete(s.series, k)
		}
	}
	release := func() {
		for _, k := range claimed {
			delete(s.pending, k)
		}
		close(mine.done)
	}
	fail := func(err error) ([]vigil.AppendResult, error) {
		if heads != nil {
			heads.Close()
		}
		release()
		forget()
		s.mu.Unlock()
		b.Close()
		return nil, storeErr(err)
	}
	// The batch's keys go in sorted (stably: a later value for the same
	// key still wins), so the memtable's skiplist inserts walk forward
	// from the previous one instead of searching from the top.
	var ops []keyValue
	set := func(k, v []byte) { ops = append(ops, keyValue{k, v}) }
	// Numeric samples by chunk: gathered in call order with their chunk's
	// index in groups, then laid out chunk by chunk in one slice.
	groupOf := make(map[chunkGroup]int)
	var groups []chunkGroup
	type groupSample struct {
		group int
		smp   tsdb.Sample
	}
	var gathered []groupSample
	dup := make([]bool, len(rs))
	err := s.lookupIDs(rs, keys, headers, refs, dup)
	if err != nil {
		return fail(err)
	}
	for _, h := range headers {
		s.pending[h] = mine
		claimed = append(claimed, h)
	}
	recvs := make([]int64, len(rs)) // ms, of the readings stored now
	var lastMark dayMark
	for i, r := range rs {
		if dup[i] {
			res[i].Duplicate = true
			continue
		}
		if k := keys[i]; k != "" {
			if _, ok := s.pending[k]; ok { // repeated within this call
				res[i].Duplicate = true
				continue
			}
			s.pending[k] = mine
			claimed = append(claimed, k)
		}
		fresh++
		recv := r.Received
		if recv.IsZero() {
			recv = s.opts.Now()
		}
		recvs[i] = recv.UnixMilli()
		if k := keys[i]; k != "" {
			set([]byte(k), be64(recvs[i]))
		}
		// One expiry marker per device and receive day, written until a
		// batch holding it has committed — not a key per reading (that
		// cost a fifth of the MQTT ingest rate).
		if dm := (dayMark{r.DeviceID, recv.Truncate(24 * time.Hour).UnixMilli()}); dm != lastMark {
			lastMark = dm
			if !marked[dm] && !s.durableMarks[dm] {
				marked[dm] = true
				set(dedupDayKey(dm.day, r.DeviceID), nil)
			}
		}
		t, lag := r.Time.UnixMilli(), lagSeconds(r)
		if s.opts.ChangeFeed {
			set(s.feedValue(feedRecord{Kind: "r", Device: r.DeviceID, Reading: r.ID, Patient: r.PatientID, Time: t, Received: recv.UnixMilli()}))
		}
		if s.opts.Outbox {
			k, v, err := s.outboxValue(r)
			if err != nil {
				return fail(err)
			}
			set(k, v)
			outCount++
			outBytes += int64(len(v))
		}
		for _, m := range r.Values {
			sk := seriesKey{Patient: r.PatientID, Code: m.Code, Device: r.DeviceID, Method: m.Method}
			sid, ok := s.series[sk]
			if !ok {
				sid = s.nextSID
				s.nextSID++
				s.series[sk] = sid
				newSeries = append(newSeries, sk)
				rec := seriesRecord{Patient: sk.Patient, Code: sk.Code, Device: sk.Device, Unit: m.Unit, Method: sk.Method}
				if m.Textual() {
					rec.Kind = kindText
				}
				rec.Sampling = m.Sampling
				rb, _ := json.Marshal(rec)
				set(seriesIndexKey(sk), u64(sid))
				set(append([]byte{pSeriesByID, 0}, u64(sid)...), rb)
			}
			if m.Textual() {
				tv, _ := json.Marshal(textSample{Text: m.Text, Concept: m.Concept, Lag: lag})
				if tv, err = s.sealValue(tv); err != nil {
					return fail(err)
				}
				set(textKey(sid, t), tv)
			} else {
				g := chunkGroup{sid, bucketOf(t)}
				gi, ok := groupOf[g]
				if !ok {
					gi = len(groups)
					groupOf[g] = gi
					groups = append(groups, g)
				}
				if gathered == nil {
					gathered = make([]groupSample, 0, len(rs)) // most readings hold one value
				}
				gathered = append(gathered, groupSample{gi, tsdb.Sample{T: t, V: m.Value, Lag: lag}})
			}
			if r.Origin != nil {
				o, _ := json.Marshal(r.Origin)
				if o, err = s.sealValue(o); err != nil {
					return fail(err)
				}
				set(originKey(sid, t), o)
			}
		}
	}
	for _, h := range headers {
		for _, run := range newRuns(refs[h], dup, recvs) {
			set(append([]byte(h), be64(int64(run.start))...), append(be64(int64(run.end)), be64(run.recv)...))
			if top, ok := s.runTop[h]; ok && run.end > top {
				s.runTop[h] = run.end // before the commit: never too low
			}
		}
	}
	// Numeric samples: a head key each, or — when a call brings many for
	// one chunk (a batch upload, a backfill) — merged straight into the
	// chunk, which spares the head keys' flushes and compactions.
	var arena []byte                               // the head keys and values of the call
	const maxHead = 18 + 8 + binary.MaxVarintLen64 // a head key and its value, unsealed
	numeric := make([][]tsdb.Sample, len(groups))
	count := make([]int, len(groups))
	for _, gs := range gathered {
		count[gs.group]++
	}
	all := make([]tsdb.Sample, len(gathered))
	for gi, n := range count {
		numeric[gi], all = all[:0:n], all[n:]
	}
	for _, gs := range gathered {
		numeric[gs.group] = append(numeric[gs.group], gs.smp)
	}
	for gi, g := range groups {
		smps := numeric[gi]
		if len(smps) >= s.opts.DirectChunkMin {
			k, v, ok, err := s.mergeIntoChunk(&heads, g, smps)
			if err != nil {
				return fail(err)
			}
			if ok {
				s.pending[string(k)] = mine
				claimed = append(claimed, string(k))
				set(k, v)
				continue
			}
		}
		if need := maxHead * len(smps); cap(arena)-len(arena) < need {
			// Room for this chunk's heads, growing geometrically over
			// the call; what is carved from a buffer stays valid after.
			arena = make([]byte, 0, max(need, 2*cap(arena)))
		}
		for _, smp := range smps {
			// Key and value carved from the call's buffer (sized above,
			// so appending never moves what is carved): with sealing on,
			// the value's plain bytes are read once, by Seal.
			at := len(arena)
			arena = appendHead(arena, smp.V, smp.Lag)
			hv, err := s.sealValue(arena[at:len(arena):len(arena)])
			if err != nil {
				return fail(err)
			}
			at = len(arena)
			arena = appendHeadKey(arena, g.sid, smp.T)
			set(arena[at:len(arena):len(arena)], hv)
		}
	}
	if heads != nil {
		heads.Close()
	}
	slices.SortStableFunc(ops, func(a, b keyValue) int { return bytes.Compare(a.k, b.k) })
	for _, o := range ops {
		if err := b.Set(o.k, o.v, nil); err != nil {
			return fail(err)
		}
	}
	if fresh == 0 { // all stored already: nothing to write or sync
		release()
		s.mu.Unlock()
		b.Close()
		return res, nil
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	err = b.Commit(pebble.Sync)
	b.Close()
	s.inflight.Done()
	s.mu.Lock()
	if err != nil {
		// The series ids allocated here may be referenced by no durable
		// key; forget them so a later append writes their records again.
		forget()
	} else {
		if len(s.durableMarks) > 100_000 {
			clear(s.durableMarks) // markers are merely written again
		}
		for dm := range marked {
			s.durableMarks[dm] = true
		}
		s.outbox.count.Add(outCount)
		s.outbox.bytes.Add(outBytes)
	}
	release()
	s.mu.Unlock()
	if err != nil {
		s.metrics.appendErrors.Inc()
		return nil, storeErr(err)
	}
	s.metrics.readings.Add(float64(fresh))
	return res, nil
}

// Runs of reading ids. A device numbers its readings; a call usually
// brings consecutive numbers (a batch upload, the readings one group
// commit holds), so an id of the form {text}{number} — the number in
// canonical decimal, no leading zero, at most 18 digits — is remembered
// in a run key, j/device/text/{be64 first} → be64 last, be64 received
// ms (the latest of the run), one per run of consecutive numbers a call
// stores. A call's runs never overlap stored ones: a run holds only
// numbers no stored run covers. Other ids keep a k key each.

// runRef is reading i of a call, whose id ends in number n.
type runRef struct {
	n uint64
	i int
}

// runID splits id into the text before its closing number and the
// number, if it ends in one written canonically.
func runID(id string) (prefix string, n uint64, ok bool) {
	i := len(id)
	for i > 0 && id[i-1] >= '0' && id[i-1] <= '9' {
		i--
	}
	d := id[i:]
	if d == "" || len(d) > 18 || d[0] == '0' && len(d) > 1 {
		return "", 0, false
	}
	for j := 0; j < len(d); j++ {
		n = n*10 + uint64(d[j]-'0')
	}
	return id[:i], n, true
}

// runHeader is the part of a run key before its first number.
func runHeader(device, prefix string) []byte { return prefixKey(pDedupRun, device, prefix) }

// run is consecutive reading numbers stored by one call.
type run struct {
	start, end uint64
	recv       int64 // the latest receive time, Unix ms
}

// newRuns returns the runs of the readings refs names that are to be
// stored now (not dup), sorted; refs is sorted by number.
func newRuns(refs []runRef, dup []bool, recvs []int64) []run {
	var out []run
	for _, r := range refs {
		if dup[r.i] {
			continue
		}
		if l := len(out) - 1; l >= 0 && out[l].end+1 == r.n {
			out[l].end = r.n
			out[l].recv = max(out[l].recv, recvs[r.i])
			continue
		}
		out = append(out, run{r.n, r.n, recvs[r.i]})
	}
	return out
}

// lookupIDs sets dup[i] for each reading of rs whose id is stored (a k key
// or a run covering it) or comes again within rs. keys holds the k keys
// (or "" for a run id); refs, by run header, the readings with run ids,
// which lookupIDs sorts by number. s.mu is held.
func (s *Store) lookupIDs(rs []*vigil.Reading, keys []string, headers []string, refs map[string][]runRef, dup []bool) error {
	// k keys, and while a store older than runs may hold them, those of
	// run ids too.
	legacy := s.opts.Now().UnixMilli() < s.legacyIDsUntil
	var look []string
	var at []int
	for i, k := range keys {
		if k == "" && legacy {
			k = string(dedupKey(rs[i].DeviceID, rs[i].ID))
		}
		if k != "" {
			look = append(look, k)
			at = append(at, i)
		}
	}
	if len(look) > 0 {
		found, err := existing(s.db, look)
		if err != nil {
			return err
		}
		for j, f := range found {
			dup[at[j]] = f
		}
	}
	if len(headers) == 0 {
		return nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pDedupRun, 0}, UpperBound: []byte{pDedupRun, 1}})
	if err != nil {
		return storeErr(err)
	}
	for _, h := range headers {
		rr := refs[h]
		slices.SortStableFunc(rr, func(a, b runRef) int { return cmp.Compare(a.n, b.n) })
		for j := 1; j < len(rr); j++ {
			if rr[j].n == rr[j-1].n {
				dup[rr[j].i] = true // an id again within the call
			}
		}
		hb := []byte(h)
		top, known := s.runTop[h]
		if !known {
			// The highest run stored under h ends at or below top.
			if it.SeekLT(upperBound(hb)) && len(it.Key()) == len(hb)+8 && bytes.HasPrefix(it.Key(), hb) && len(it.Value()) >= 16 {
				top = uint64(unbe64(it.Value()[:8]))
			}
			if err := it.Error(); err != nil {
				it.Close()
				return storeErr(err)
			}
			if len(s.runTop) >= maxRunTops {
				clear(s.runTop) // read again from disk as headers come back
			}
			s.runTop[h] = top
		}
		if rr[0].n > top {
			continue // every number above what is stored under h
		}
		// The run starting at or before the first number, then each
		// later one up to the last number.
		valid := it.SeekLT(append(hb[:len(hb):len(hb)], be64(int64(rr[0].n)+1)...))
		if !valid || !bytes.HasPrefix(it.Key(), hb) {
			valid = it.SeekGE(hb)
		}
		j := 0
		for ; valid && j < len(rr); valid = it.Next() {
			k, v := it.Key(), it.Value()
			if len(k) != len(hb)+8 || !bytes.HasPrefix(k, hb) {
				break
			}
			if len(v) < 16 {
				it.Close()
				return vigil.Errorf(vigil.EINTERNAL, "run key %q has a %d-byte value: the store is damaged", k, len(v))
			}
			start, end := uint64(unbe64(k[len(hb):])), uint64(unbe64(v[:8]))
			for j < len(rr) && rr[j].n < start {
				j++
			}
			for ; j < len(rr) && rr[j].n <= end; j++ {
				dup[rr[j].i] = true
			}
		}
	}
	err = it.Error()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	return storeErr(err)
}

// maxRunTops bounds Store.runTop (about 100 bytes an entry).
const maxRunTops = 100_000

// directChunkGrowth bounds the work of merging into a chunk: samples go
// straight into a chunk only if it holds at most this many times as many,
// so each new sample costs at most this many samples decoded and encoded.
const directChunkGrowth = 8

// chunkGroup names one chunk: a series and the start of its bucket.
type chunkGroup struct {
	sid    uint64
	bucket int64
}

// mergeIntoChunk returns the chunk of g with smps merged in (the new
// samples win over stored ones at the same time), sealed. It reports !ok —
// the samples are to be written as head keys — when another call or
// Compact is rewriting the chunk now, or when head samples lie in the new
// samples' time span (a head sample is read over its chunk's, so a newer
// value must not go under it). s.mu is held; the caller claims the chunk
// key until its batch has committed. *heads is an iterator over the head
// keys, opened here on first use and closed by the caller.
func (s *Store) mergeIntoChunk(heads **pebble.Iterator, g chunkGroup, smps []tsdb.Sample) (k, v []byte, ok bool, err error) {
	k = chunkKey(g.sid, g.bucket)
	if _, busy := s.pending[string(k)]; busy {
		return nil, nil, false, nil
	}
	smps = tsdb.Sort(smps)
	if *heads == nil {
		if *heads, err = s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pHead, 0}, UpperBound: []byte{pHead, 1}}); err != nil {
			return nil, nil, false, storeErr(err)
		}
	}
	end := headKey(g.sid, smps[len(smps)-1].T+1)
	if (*heads).SeekGE(headKey(g.sid, smps[0].T)) && bytes.Compare((*heads).Key(), end) < 0 {
		return nil, nil, false, nil
	}
	if err := (*heads).Error(); err != nil {
		return nil, nil, false, storeErr(err)
	}
	stored, found, err := get(s.db, k)
	if err != nil {
		return nil, nil, false, err
	}
	// The chunk this store wrote last, still as it was: extend it without
	// decoding it when the new samples all come after it (and it is not
	// too big to rewrite, below).
	c := s.chunkCache[string(k)]
	if found && c != nil && bytes.Equal(c.sealed, stored) && c.app.Len() <= directChunkGrowth*len(smps) && c.app.Append(smps) {
		if v, err = s.sealValue(c.app.Bytes()); err != nil {
			delete(s.chunkCache, string(k))
			return nil, nil, false, err
		}
		c.sealed = v // if the batch does not commit, the next call's compare fails
		s.chunksExtended++
		return k, v, true, nil
	}
	if found {
		old, err := s.openValue(stored)
		if err != nil {
			return nil, nil, false, vigil.Errorf(vigil.EINTERNAL, "sealed chunk does not open: %v", err)
		}
		// Rewriting a chunk costs its size: a fast stream's group commits
		// bring a few dozen samples each to a chunk of many thousands,
		// which would be decoded and encoded again every time. Those
		// stay heads, folded in once a minute by Compact.
		if n, err := tsdb.Count(old); err == nil && n > directChunkGrowth*len(smps) {
			return nil, nil, false, nil
		}
		prev, err := tsdb.Decode(old)
		if err != nil {
			return nil, nil, false, vigil.Errorf(vigil.EINTERNAL, "corrupt chunk of series %d: %v", g.sid, err)
		}
		smps = tsdb.Merge(prev, smps)
	}
	app, err := tsdb.NewAppender(smps)
	if err == nil {
		v, err = s.sealValue(app.Bytes())
	}
	if err != nil {
		return nil, nil, false, err
	}
	if len(s.chunkCache) >= chunkCacheSize {
		clear(s.chunkCache)
	}
	s.chunkCache[string(k)] = &cachedChunk{sealed: v, app: app}
	return k, v, true, nil
}

// chunkCacheSize bounds the chunks kept open for appending (a few MiB: a
// 2-hour chunk of 1 Hz values is about 10 KB, kept twice).
const chunkCacheSize = 256

// cachedChunk is a chunk as this store last wrote it: sealed, and open for
// appending. It is used only while the stored value is still exactly
// sealed, so a batch that did not commit, Compact or an erasure merely
// make it miss.
type cachedChunk struct {
	sealed []byte
	app    *tsdb.Appender
}

// expireDedups adds to b the deletion of idempotency keys received before
// expiryDay, at most limit of them (the rest wait for the next call). A J
// marker names a device and a day it had readings received: that device's k
// and j keys are scanned and the old ones deleted, then its expired markers.
// Stores written before J markers existed hold a K key per reading; those
// are expired one by one.
func (s *Store) expireDedups(b *pebble.Batch, expiryDay int64, limit int) (int, error) {
	n := 0
	expiry := be64(expiryDay)
	err := scan(s.db, prefixKey(pDedupExpiry), false, func(k, _ []byte) (bool, error) {
		if len(k) < 10 || string(k[2:10]) >= string(expiry) {
			return false, nil
		}
		b.Delete(k, nil)
		b.Delete(append([]byte{pDedup, 0}, k[10:]...), nil)
		n++
		return n < limit, nil
	})
	if err != nil || n >= limit {
		return n, err
	}
	// Devices with an expired marker, and their markers.
	markers := make(map[string][][]byte)
	var devices []string
	err = scan(s.db, prefixKey(pDedupDay), false, func(k, _ []byte) (bool, error) {
		if len(k) < 10 || string(k[2:10]) >= string(expiry) {
			return false, nil
		}
		d := string(k[10:])
		if _, ok := markers[d]; !ok {
			devices = append(devices, d)
		}
		markers[d] = append(markers[d], slices.Clone(k))
		return true, nil
	})
	if err != nil {
		return n, err
	}
	for _, d := range devices {
		done := true
		// k keys hold the receive time; runs, after their last number.
		for _, p := range []struct {
			prefix []byte
			recvAt int
		}{{key(pDedup, d, ""), 0}, {prefixKey(pDedupRun, d), 8}} {
			err := scan(s.db, p.prefix, false, func(k, v []byte) (bool, error) {
				if len(v) == p.recvAt+8 && unbe64(v[p.recvAt:]) < expiryDay {
					if n >= limit {
						done = false
						return false, nil
					}
					b.Delete(k, nil)
					n++
				}
				return true, nil
			})
			if err != nil {
				return n, err
			}
			if !done {
				break
			}
		}
		if !done {
			break // the markers stay: the next call goes on
		}
		for _, k := range markers[d] {
			b.Delete(k, nil)
		}
		// A reading received on an expired day (a replay) must write its
		// marker again.
		s.mu.Lock()
		clear(s.durableMarks)
		s.mu.Unlock()
	}
	return n, nil
}

type keyValue struct{ k, v []byte }

// dayMark is a device and a receive day (Unix ms).
type dayMark struct {
	device string
	day    int64
}

// dedupDayKey is the expiry marker: device had readings received on day.
func dedupDayKey(day int64, device string) []byte {
	return append(append([]byte{pDedupDay, 0}, be64(day)...), device...)
}

// existing reports which keys are stored, in one pass over them in key
// order. Nearly every key is new. Where ids run in sequence (a batch of a
// device's readings) one SeekGE finds the next stored key and answers for
// every key before it; where they do not (random ids among many stored) a
// SeekGE answers for one key only, so after two such seeks the pass uses
// bloom-filtered SeekPrefixGE for the next 64 keys, then tries again. A
// resent batch, whose keys are stored one after another, is walked with
// Next.
func existing(db *pebble.DB, keys []string) ([]bool, error) {
	found := make([]bool, len(keys))
	if len(keys) == 1 {
		_, ok, err := get(db, []byte(keys[0]))
		found[0] = ok
		return found, err
	}
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(keys[a], keys[b]) })
	lo, hi := []byte(keys[order[0]]), upperBound([]byte(keys[order[len(order)-1]]))
	ranged, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, storeErr(err)
	}
	var prefixed *pebble.Iterator
	var (
		next       []byte // the smallest stored key ≥ the keys passed (valid if positioned)
		positioned bool   // ranged sits on next (or is exhausted: next == nil)
		answered   int    // keys the last SeekGE answered
		barren     int    // SeekGEs in a row that answered one key only
		prefixLeft int    // keys still to look up with SeekPrefixGE
	)
	for _, i := range order {
		k := keys[i]
		if positioned {
			// A resent batch's keys are stored one after another: a step
			// or two forward is cheaper than another seek.
			for steps := 0; steps < 2 && next != nil && k > string(next); steps++ {
				next = nil
				if ranged.Next() {
					next = ranged.Key()
				}
			}
			if next == nil || k <= string(next) {
				found[i] = next != nil && k == string(next)
				answered++
				continue
			}
			if answered <= 1 {
				barren++
			} else {
				barren = 0
			}
			if barren >= 2 {
				barren, prefixLeft, positioned = 0, 64, false
			}
		}
		if prefixLeft > 0 {
			if prefixed == nil {
				if prefixed, err = db.NewIter(nil); err != nil {
					ranged.Close()
					return nil, storeErr(err)
				}
			}
			kb := []byte(k)
			found[i] = prefixed.SeekPrefixGE(kb) && bytes.Equal(prefixed.Key(), kb)
			prefixLeft--
			continue
		}
		next, positioned, answered = nil, true, 1
		if ranged.SeekGE([]byte(k)) {
			next = ranged.Key()
		}
		found[i] = next != nil && k == string(next)
	}
	err = ranged.Error()
	if cerr := ranged.Close(); err == nil {
		err = cerr
	}
	if prefixed != nil {
		if perr := prefixed.Error(); err == nil {
			err = perr
		}
		if cerr := prefixed.Close(); err == nil {
			err = cerr
		}
	}
	return found, storeErr(err)
}

// compactLoop runs Compact every CompactInterval until Close.
func (s *Store) compactLoop() {
	defer close(s.stopped)
	t := time.NewTicker(s.opts.CompactInterval)
	defer t.Stop()
	var retained time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if _, err := s.Compact(context.Background()); err != nil {
				s.log.Error("compaction failed; head samples stay readable and it will be retried", "err", err)
			}
			if r := s.opts.Retention; (r != Retention{}) && time.Since(retained) >= time.Hour {
				retained = time.Now()
				st, err := s.EnforceRetention(context.Background(), s.opts.Now())
				if err != nil {
					s.log.Error("retention not enforced this hour; it will be retried", "err", err)
				} else if st.Samples+st.Alerts > 0 {
					s.log.Info("retention enforced", "samples_removed", st.Samples, "rollups_written", st.Rollups, "alerts_removed", st.Alerts)
				}
			}
		}
	}
}

// CompactStats says what one Compact call did.
type CompactStats struct {
	Samples            int // head samples folded into chunks
	Chunks             int // chunks written
	ExpiredDedups      int // reading ids forgotten after DedupRetention
	ExpiredDeadLetters int // dead letters dropped after DeadLetterRetention
}

// Compact folds head samples older than CompactAge into chunks and forgets
// reading ids older than DedupRetention. It is safe to call concurrently
// with reads and appends (not with itself: the background loop is the only
// caller in a node).
func (s *Store) Compact(ctx context.Context) (CompactStats, error) {
	var st CompactStats
	cutoff := s.opts.Now().Add(-s.opts.CompactAge).UnixMilli()
	// Collect head samples to fold, per chunk.
	var order []chunkGroup
	groups := make(map[chunkGroup][]tsdb.Sample)
	headKeys := make(map[chunkGroup][][]byte)
	heads := 0
	err := scan(s.db, prefixKey(pHead), false, func(k, v []byte) (bool, error) {
		if len(k) != 18 {
			return false, vigil.Errorf(vigil.EINTERNAL, "corrupt head key")
		}
		t := unbe64(k[10:])
		if t >= cutoff {
			return true, nil
		}
		v, err := s.openValue(v)
		if err != nil {
			return false, vigil.Errorf(vigil.EINTERNAL, "sealed sample does not open: %v", err)
		}
		smp, err := decodeHead(t, v)
		if err != nil {
			return false, err
		}
		g := chunkGroup{binary.BigEndian.Uint64(k[2:10]), bucketOf(t)}
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], smp)
		headKeys[g] = append(headKeys[g], append([]byte(nil), k...))
		heads++
		return heads < 1_000_000, ctxErr(ctx) // bound one pass's memory
	})
	if err != nil {
		return st, err
	}
	// Claim the chunks to rewrite; one an append is merging samples into
	// now is left for the next pass.
	mine := &commit{done: make(chan struct{})}
	var claimed []string
	s.mu.Lock()
	order = slices.DeleteFunc(order, func(g chunkGroup) bool {
		ck := string(chunkKey(g.sid, g.bucket))
		if _, busy := s.pending[ck]; busy {
			return true
		}
		s.pending[ck] = mine
		claimed = append(claimed, ck)
		return false
	})
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		for _, k := range claimed {
			delete(s.pending, k)
		}
		s.mu.Unlock()
		close(mine.done)
	}()
	b := s.db.NewBatch()
	for _, g := range order {
		samples := groups[g]
		ck := chunkKey(g.sid, g.bucket)
		old, ok, err := get(s.db, ck)
		if err != nil {
			b.Close()
			return st, err
		}
		if ok {
			if old, err = s.openValue(old); err != nil {
				b.Close()
				return st, vigil.Errorf(vigil.EINTERNAL, "sealed chunk does not open: %v", err)
			}
			prev, err := tsdb.Decode(old)
			if err != nil {
				b.Close()
				return st, vigil.Errorf(vigil.EINTERNAL, "corrupt chunk: %v", err)
			}
			samples = tsdb.Merge(prev, samples)
		}
		enc, err := tsdb.Encode(samples)
		if err == nil {
			enc, err = s.sealValue(enc)
		}
		if err != nil {
			b.Close()
			return st, err
		}
		if err := b.Set(ck, enc, nil); err != nil {
			b.Close()
			return st, err
		}
		st.Chunks++
	}
	for _, g := range order {
		for _, k := range headKeys[g] {
			b.Delete(k, nil)
		}
		st.Samples += len(headKeys[g])
	}

	// Forget old reading ids.
	expiryDay := s.opts.Now().Add(-s.opts.DedupRetention).Truncate(24 * time.Hour).UnixMilli()
	n, err := s.expireDedups(b, expiryDay, 1_000_000)
	st.ExpiredDedups = n
	if err != nil {
		b.Close()
		return st, err
	}
	// Drop dead letters past their retention (ids sort by time).
	dlCutoff := timeID(s.opts.Now().Add(-s.opts.DeadLetterRetention))
	expiredDL := 0
	err = scan(s.db, prefixKey(pDeadLetter), false, func(k, _ []byte) (bool, error) {
		if string(k[2:]) >= dlCutoff[:16] {
			return false, nil
		}
		b.Delete(k, nil)
		expiredDL++
		return expiredDL < 100_000, nil
	})
	if err != nil {
		b.Close()
		return st, err
	}
	st.ExpiredDeadLetters = expiredDL
	if b.Empty() {
		b.Close()
		return st, nil
	}
	if err := s.commitSync(b); err != nil {
		return st, err
	}
	s.deadLetters.Add(-int64(expiredDL))
	s.metrics.compacted.Add(float64(st.Samples))
	return st, nil
}

// Origin keys: o/{series id}{be64 time ms} → vigil.Origin JSON, written
// with the sample when the reading says where it was taken.
const pOrigin = 'o'

// pText keys hold the samples of text series: n/sid/time → textSample
// JSON (sealed). They are few (device states, not vital signs), so they
// are not folded into chunks.
const pText = 'n'

type textSample struct {
	Text    string         `json:"s,omitempty"`
	Concept *vigil.Concept `json:"c,omitempty"`
	Lag     int64          `json:"l,omitempty"` // receive lag in seconds
}

func textKey(sid uint64, t int64) []byte {
	return append(append([]byte{pText, 0}, u64(sid)...), be64(t)...)
}

func originKey(sid uint64, t int64) []byte {
	return append(append([]byte{pOrigin, 0}, u64(sid)...), be64(t)...)
}

// FillOrigins sets the Origin of each observation that has one stored
// (a blood pressure panel takes its systolic value's).
func (s *Store) FillOrigins(ctx context.Context, obs []*vigil.Observation) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	for _, o := range obs {
		_, sid, t, err := obsquery.ParseID(o.ID) // a period: the value at its start, if any
		if err != nil {
			continue
		}
		b, ok, err := get(s.db, originKey(sid, t))
		if err != nil {
			return storeErr(err)
		}
		if !ok {
			continue
		}
		if b, err = s.openValue(b); err != nil {
			return vigil.Errorf(vigil.EINTERNAL, "sealed origin does not open: %v", err)
		}
		var or vigil.Origin
		if err := json.Unmarshal(b, &or); err == nil {
			o.Origin = &or
		}
	}
	return nil
}
