// Package pebble is Vigil's embedded store: registry, readings, alerts,
// users and dead letters in one CockroachDB Pebble database on local disk.
//
// Readings are written as head samples, one key per value, in the same
// synced batch as their idempotency keys, so an acknowledged reading is
// durable and stored once. A background compactor folds head samples
// older than a few minutes into 2-hour chunks per series (see package
// tsdb). Reads merge chunks and head samples. The key layout is
// documented in docs/formats/pebble.md.
package pebble

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/seal"
)

// Options configure a Store.
type Options struct {
	// Sealer, when set, encrypts at rest the records that hold PHI
	// (sealedPrefixes: patients, users, dead letters, reviews, device
	// events, alerts) and the readings (head samples, chunks, origins).
	// Values written without it still read.
	Sealer Sealer
	// CompactInterval is how often head samples are folded into chunks.
	// Negative disables the background compactor (the CLI's offline
	// registry commands); Compact can still be called.
	CompactInterval time.Duration
	// CompactAge is how old (by device time) a head sample must be before
	// it is folded into a chunk; younger samples stay in the head where
	// late arrivals are cheap.
	CompactAge time.Duration
	// DirectChunkMin is how many samples of one chunk (a series' 2-hour
	// bucket) an append must bring for them to be merged straight into
	// the chunk rather than written as head samples (default 32: batch
	// uploads and backfills; a device streaming live writes heads).
	DirectChunkMin int
	// DedupRetention is how long reading ids are remembered for
	// idempotency. A device re-sending a reading later than this after
	// Vigil first received it would store it again.
	DedupRetention time.Duration
	// DeadLetterRetention is how long dead letters are kept (default 30
	// days); Compact deletes older ones.
	DeadLetterRetention time.Duration
	// Retention says how long readings, rollups and resolved alerts are
	// kept (zero: for ever); the compactor enforces it hourly
	// (retention.go).
	Retention  Retention
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// ChangeFeed keeps a durable log of stored readings and saved alerts
	// for an outbound consumer (the EHR sync): see feed.go.
	ChangeFeed bool
	// Outbox keeps every new reading in a store-and-forward buffer for an
	// edge gateway's forwarder (see outbox.go), and every saved alert in
	// the change feed, for the forwarder to reconcile with the server.
	Outbox bool
	// FS is passed to Pebble (nil: the operating system's).
	PebbleOptions func(*pebble.Options)
}

// DefaultOptions returns the options a node uses.
func DefaultOptions() Options {
	return Options{
		CompactInterval:     time.Minute,
		CompactAge:          5 * time.Minute,
		DirectChunkMin:      32,
		DedupRetention:      7 * 24 * time.Hour,
		DeadLetterRetention: 30 * 24 * time.Hour,
		Now:                 time.Now,
	}
}

// Store is the embedded implementation of vigil.Store.
type Store struct {
	db   *pebble.DB
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	closed bool
	// chunkCache: chunks this store wrote last, open for appending
	// (mergeIntoChunk); guarded by mu.
	chunkCache     map[string]*cachedChunk
	chunksExtended int                // chunks appended to without decoding (tests)
	pending        map[string]*commit // dedup keys of readings being committed, run headers of the calls committing, and chunk keys being rewritten
	// legacyIDsUntil (Unix ms): until then k keys of ids that now go in
	// runs may still be stored (the store predates runs), and are looked
	// up too.
	legacyIDsUntil int64
	series         map[seriesKey]uint64
	// durableMarks are expiry markers (J keys) known to be committed, so
	// later batches need not write them again; guarded by mu.
	durableMarks map[dayMark]bool
	// runTop: for a run header, a number no stored id under it exceeds
	// (read from disk the first time the header is looked up, raised
	// before each commit that stores more): a call whose numbers all lie
	// above it — a device counting up, the usual case — has nothing to
	// look up. Never too low; too high only costs a lookup. Guarded by mu.
	runTop  map[string]uint64
	nextSID uint64
	feedSeq atomic.Uint64 // next change-feed sequence
	outbox  outbox
	regMu   sync.Mutex // serializes registry read-modify-writes

	deadLetters atomic.Int64 // stored dead letters, for the size metric

	inflight sync.WaitGroup
	stop     chan struct{}
	stopped  chan struct{}

	metrics *metrics
}

var (
	_ vigil.Store     = (*Store)(nil)
	_ vigil.Lifecycle = (*Store)(nil)
)

type commit struct{ done chan struct{} }

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	d := DefaultOptions()
	if opts.CompactInterval == 0 {
		opts.CompactInterval = d.CompactInterval
	}
	if opts.DirectChunkMin == 0 {
		opts.DirectChunkMin = d.DirectChunkMin
	}
	if opts.CompactAge == 0 {
		opts.CompactAge = d.CompactAge
	}
	if opts.DedupRetention == 0 {
		opts.DedupRetention = d.DedupRetention
	}
	if opts.DeadLetterRetention == 0 {
		opts.DeadLetterRetention = d.DeadLetterRetention
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Every reading costs one point lookup of its idempotency key, and
	// nearly all are misses (new readings): bloom filters on every level
	// answer those from memory instead of reading table blocks.
	cache := pebble.NewCache(64 << 20)
	defer cache.Unref()
	po := &pebble.Options{Logger: quietLogger{opts.Logger}, Cache: cache}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		po.Levels[i].FilterType = pebble.TableFilter
	}
	// Readings arrive as small random keys (idempotency keys) spread over
	// the whole key space, so every L0→Lbase compaction rewrites most of
	// Lbase. Letting L0 gather more tables first means Lbase is rewritten
	// less often: 8 (twice Pebble's default) halved the CPU spent
	// compacting under vigil bench (1.7–2.0 s → 0.8–0.9 s per 8 s run);
	// 16, with the larger memtables below, took batch ingest of 5 million
	// readings from 16.7 s of CPU to 14.8–15.7 s (MQTT unchanged). Point
	// lookups stay cheap through the bloom filters; a series read merges
	// at most 16 L0 tables per chunk it seeks.
	po.L0CompactionThreshold = 16
	po.L0StopWritesThreshold = 64
	// 16 MiB memtables (Pebble's default is 4): a quarter as many flushes
	// and L0 tables to merge. Batch ingest of 5 million readings took a
	// fifth less CPU (29–33 s → 24–26 s) and ran 15–40 % faster
	// (docs/benchmarks.md); at most two are held before writes wait.
	po.MemTableSize = 16 << 20
	if opts.PebbleOptions != nil {
		opts.PebbleOptions(po)
	}
	tail, walErr := checkWAL(dir)
	if tail != nil && tail.corrupt {
		return nil, tail.damaged(dir)
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w (is another Vigil process using this data directory?)", dir, err)
	}
	switch {
	case walErr != nil:
		opts.Logger.Warn("could not read the store's write-ahead log before recovery", "err", walErr)
	case tail != nil && tail.ignored > 0:
		// Pebble replays the newest log up to its last whole record; what
		// follows was never synced, so never acknowledged.
		opts.Logger.Warn("the store's write-ahead log ended in an incomplete record (the last stop was not clean): recovered to the last whole record; nothing acknowledged is lost, as acknowledgements follow a sync",
			"log", tail.file, "recovered_bytes", tail.good, "ignored_bytes", tail.ignored)
	}
	s := &Store{
		db:           db,
		opts:         opts,
		log:          opts.Logger,
		pending:      make(map[string]*commit),
		chunkCache:   make(map[string]*cachedChunk),
		series:       make(map[seriesKey]uint64),
		durableMarks: make(map[dayMark]bool),
		runTop:       make(map[string]uint64),
		stop:         make(chan struct{}),
		stopped:      make(chan struct{}),
	}
	if err := s.checkFormat(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.loadLegacyIDs(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.loadSeries(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.loadFeed(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.loadOutbox(); err != nil {
		db.Close()
		return nil, err
	}
	if err := scan(db, prefixKey(pDeadLetter), false, func(_, _ []byte) (bool, error) {
		s.deadLetters.Add(1)
		return true, nil
	}); err != nil {
		db.Close()
		return nil, err
	}
	s.metrics = newMetrics(opts.Registerer, s)
	if opts.CompactInterval > 0 {
		go s.compactLoop()
	} else {
		close(s.stopped)
	}
	return s, nil
}

// Close waits for appends in progress, stops the compactor and closes the
// database. Appends after Close fail with EUNAVAILABLE.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.stopped
	s.inflight.Wait()
	return s.db.Close()
}

// DB exposes the Pebble database for tests and tools in this module.
func (s *Store) DB() *pebble.DB { return s.db }

// quietLogger routes Pebble's own logging to slog at debug level (info is
// too chatty for operators; errors are surfaced as returned errors).
type quietLogger struct{ l *slog.Logger }

func (q quietLogger) Infof(format string, args ...any) {
	q.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}
func (q quietLogger) Errorf(format string, args ...any) {
	q.l.Error("pebble: " + fmt.Sprintf(format, args...))
}
func (q quietLogger) Fatalf(format string, args ...any) {
	q.l.Error("pebble fatal: " + fmt.Sprintf(format, args...))
	panic(fmt.Sprintf(format, args...))
}

// Key prefixes. Every key starts with one letter and a zero byte; ids never
// contain zero bytes (vigil.ValidID, and ingest rejects them in reading
// ids), so a zero byte also separates the parts of composite keys.
const (
	pPatient     = 'p' // p/patient → patient JSON
	pDevice      = 'd' // d/device → device record JSON
	pAssign      = 'a' // a/device/from → assignment JSON
	pPatAssign   = 'A' // A/patient/device/from → ""
	pUser        = 'u' // u/user → user record JSON
	pToken       = 't' // t/token id → token record JSON
	pSeries      = 's' // s/patient/code/device → series id
	pSeriesByID  = 'S' // S/sid → series JSON
	pHead        = 'h' // h/sid/time → head sample
	pChunk       = 'c' // c/sid/bucket start → tsdb chunk
	pDedup       = 'k' // k/device/reading id → received ms (ids not ending in a number; all before format 2)
	pDedupExpiry = 'K' // K/received day/device/reading id → "" (before 2026-12: now one J key per device and day)
	pDedupDay    = 'J' // J/received day/device → "": the device has k or j keys received that day
	pDedupRun    = 'j' // j/device/id text/be64 first number → be64 last number, be64 received ms (runs of ids)
	pAlert       = 'l' // l/alert id → alert JSON
	pAlertRaised = 'L' // L/raised/alert id → ""
	pDeadLetter  = 'x' // x/id → dead letter JSON
	pMeta        = 'm' // m/name → metadata
	// g/{id}/{version} → mapping JSON and r/{id}/{version} → rule JSON: see alerts.go
)

func key(prefix byte, parts ...string) []byte {
	n := 2
	for _, p := range parts {
		n += len(p) + 1
	}
	k := make([]byte, 0, n)
	k = append(k, prefix, 0)
	for i, p := range parts {
		if i > 0 {
			k = append(k, 0)
		}
		k = append(k, p...)
	}
	return k
}

// prefixKey is the scan prefix of keys starting with prefix and parts:
// key(prefix, parts...) followed by a separator when parts are given.
func prefixKey(prefix byte, parts ...string) []byte {
	if len(parts) == 0 {
		return key(prefix)
	}
	return append(key(prefix, parts...), 0)
}

// upperBound returns the smallest key greater than every key with prefix p.
func upperBound(p []byte) []byte {
	end := append([]byte{}, p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// be64 encodes a signed integer so that byte order is numeric order.
func be64(v int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v)^(1<<63))
	return b[:]
}

func unbe64(b []byte) int64 { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// get reads a key from r (the DB or a snapshot); ok is false when absent.
func get(r pebble.Reader, k []byte) (v []byte, ok bool, err error) {
	val, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, storeErr(err)
	}
	v = append([]byte(nil), val...)
	closer.Close()
	return v, true, nil
}

func (s *Store) getJSON(r pebble.Reader, k []byte, v any) (bool, error) {
	b, ok, err := get(r, k)
	if !ok || err != nil {
		return ok, err
	}
	if err := s.unmarshal(b, v); err != nil {
		return false, vigil.Errorf(vigil.EINTERNAL, "corrupt record %q: %v", k[:1], err)
	}
	return true, nil
}

// Sealer encrypts and decrypts record values (internal/seal).
type Sealer interface {
	Seal(plain []byte) ([]byte, error)
	Open(sealed []byte) ([]byte, error)
}

// getPlainJSON reads a record that is never sealed (series, metadata).
func getPlainJSON(r pebble.Reader, k []byte, v any) (bool, error) {
	b, ok, err := get(r, k)
	if !ok || err != nil {
		return ok, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, vigil.Errorf(vigil.EINTERNAL, "corrupt record %q: %v", k[:1], err)
	}
	return true, nil
}

// sealedPrefixes are the records that hold PHI beyond ids: patients
// (names, identifiers, birth dates), users (names, credentials), dead
// letters (raw device payloads), reviews (notes), device events and
// alerts (values). With Options.Sealer they are encrypted at rest.
var sealedPrefixes = map[byte]bool{pPatient: true, pUser: true, pDeadLetter: true, pReview: true, pEvent: true, pAlert: true, pSubscription: true}

// sealValue seals a raw value (a sample, a chunk, an origin) when the
// store has a Sealer.
func (s *Store) sealValue(v []byte) ([]byte, error) {
	if s.opts.Sealer == nil {
		return v, nil
	}
	return s.opts.Sealer.Seal(v)
}

// openValue opens a value sealValue sealed; others pass unchanged.
func (s *Store) openValue(v []byte) ([]byte, error) {
	if s.opts.Sealer == nil {
		if seal.Sealed(v) {
			return nil, vigil.Errorf(vigil.EINTERNAL, "the value is encrypted and this store has no key (master key missing?)")
		}
		return v, nil
	}
	return s.opts.Sealer.Open(v)
}

func (s *Store) setJSON(b *pebble.Batch, k []byte, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if s.opts.Sealer != nil && len(k) > 0 && sealedPrefixes[k[0]] {
		if buf, err = s.opts.Sealer.Seal(buf); err != nil {
			return fmt.Errorf("seal record: %w", err)
		}
	}
	return b.Set(k, buf, nil)
}

// scan calls fn for every key/value with the given prefix, in key order
// (reverse when desc), until fn returns false.
func scan(r pebble.Reader, prefix []byte, desc bool, fn func(k, v []byte) (bool, error)) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upperBound(prefix)})
	if err != nil {
		return storeErr(err)
	}
	defer it.Close()
	var valid bool
	if desc {
		valid = it.Last()
	} else {
		valid = it.First()
	}
	for valid {
		v, err := it.ValueAndErr()
		if err != nil {
			return storeErr(err)
		}
		more, err := fn(it.Key(), v)
		if err != nil || !more {
			return err
		}
		if desc {
			valid = it.Prev()
		} else {
			valid = it.Next()
		}
	}
	return storeErr(it.Error())
}

func (s *Store) commitSync(b *pebble.Batch) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		b.Close()
		return vigil.Errorf(vigil.EUNAVAILABLE, "store is closing")
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()
	return storeErr(b.Commit(pebble.Sync))
}

func storeErr(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var ve *vigil.Error
	if errors.As(err, &ve) {
		return err
	}
	if errors.Is(err, pebble.ErrClosed) {
		return vigil.Errorf(vigil.EUNAVAILABLE, "store is closed")
	}
	return &vigil.Error{Code: vigil.EINTERNAL, Message: "store: " + err.Error()}
}

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return vigil.Errorf(vigil.EUNAVAILABLE, "request cancelled: %v", err)
	}
	return nil
}

// Checkpoint writes a consistent snapshot of the store to dir (which must
// not exist) while it keeps running: the sstables are hard-linked where
// the file system allows, the log is synced and copied, so everything
// committed before the call is in it. Opening dir gives the store as it
// was.
func (s *Store) Checkpoint(dir string) error {
	return storeErr(s.db.Checkpoint(dir, pebble.WithFlushedWAL()))
}
