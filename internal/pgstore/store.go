// Package pgstore is Vigil's PostgreSQL store: the same vigil.Store the
// embedded Pebble store is (both pass internal/storetest), for nodes that
// share one database. Samples live in a table partitioned by month of
// device time and arrive in batches through COPY; every write is one
// transaction committed before the caller hears of it (PostgreSQL's
// synchronous_commit, on by default, makes that durable). The schema is
// embedded and migrated forward at Open (docs/formats/postgres.md).
package pgstore

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options configure a store.
type Options struct {
	// Schema is the PostgreSQL schema the tables live in (created if
	// missing); "" means "vigil".
	Schema string
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// ChangeFeed keeps a durable log of stored readings and saved alerts
	// for an outbound consumer (the EHR sync), as the embedded store's.
	ChangeFeed bool
	// DedupRetention is how long a reading id is remembered (a re-send
	// within it is a duplicate); 0 means 7 days, as the embedded store;
	// negative: forever. ExpireInterval is how often expired ids are
	// deleted (0: every minute; negative: only by ExpireReadingIDs).
	DedupRetention time.Duration
	ExpireInterval time.Duration
	// Retention says how long readings (rolled up first), rollups and
	// resolved alerts are kept (zero: for ever); enforced hourly by each
	// node (the statements are idempotent).
	Retention vigil.Retention
	// Registerer receives vigil_retention_removed_total (nil: none).
	Registerer prometheus.Registerer
}

// Store is a vigil.Store on PostgreSQL. It is safe for concurrent use,
// also by several processes on one database.
type Store struct {
	removed *prometheus.CounterVec // by retention, per data class
	pool    *pgxpool.Pool
	opts    Options
	series  sync.Map // seriesKey → id, of series known to be committed
	parts   sync.Map // month start (ms) → true, partitions known to exist
	// oneStatement counts batches AppendReadings stored with the upserting
	// form of appendStatement, plain those stored with its plain form.
	oneStatement, plain atomic.Int64
	// plainPause is how many more batches go straight to the upserting
	// form after the plain form met a key already stored.
	plainPause atomic.Int64
	stop       chan struct{}
	done       chan struct{}
}

// Open connects to the database at url (postgres://…), creates the schema
// and migrates it to the version this build knows. A database written by
// a newer Vigil is refused.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	if opts.Schema == "" {
		opts.Schema = "vigil"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DedupRetention == 0 {
		opts.DedupRetention = 7 * 24 * time.Hour
	}
	if opts.ExpireInterval == 0 {
		opts.ExpireInterval = time.Minute
	}
	if !vigil.ValidID(strings.ReplaceAll(opts.Schema, "_", "-")) {
		return nil, vigil.FieldErrorf("schema", "invalid", "schema %q: use letters, digits and '_'", opts.Schema)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, vigil.Errorf(vigil.EINVALID, "database URL: %v", err)
	}
	schema := opts.Schema
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if _, err := c.Exec(ctx, "SET search_path TO "+pgx.Identifier{schema}.Sanitize()); err != nil {
			return err
		}
		// AppendReadings' COPY target, one per connection (emptied at
		// every commit).
		_, err := c.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS stage_samples (ord integer, series bigint, t bigint,
			value double precision, lag integer, text_value jsonb, origin jsonb) ON COMMIT DELETE ROWS`)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, storeErr(err)
	}
	s := &Store{pool: pool, opts: opts, stop: make(chan struct{}), done: make(chan struct{}),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_retention_removed_total", Help: "Records removed by the retention policies, by data class (readings: raw samples, rolled up first; alerts: resolved alerts).",
		}, []string{"class"})}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.removed); err != nil {
			pool.Close()
			return nil, err
		}
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	go s.expireLoop()
	return s, nil
}

// expireLoop deletes expired reading ids every ExpireInterval.
func (s *Store) expireLoop() {
	defer close(s.done)
	if s.opts.ExpireInterval < 0 || s.opts.DedupRetention < 0 {
		return
	}
	t := time.NewTicker(s.opts.ExpireInterval)
	defer t.Stop()
	var retained time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), s.opts.ExpireInterval)
			s.ExpireReadingIDs(ctx, s.opts.Now().Add(-s.opts.DedupRetention))
			cancel()
			if (s.opts.Retention != vigil.Retention{}) && time.Since(retained) >= time.Hour {
				retained = time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
				s.EnforceRetention(ctx, s.opts.Now())
				cancel()
			}
		}
	}
}

// ExpireReadingIDs forgets reading ids received before cutoff, 10,000 per
// statement, and returns how many. A device re-sending one of them later
// would have it stored again (the sample is simply rewritten).
func (s *Store) ExpireReadingIDs(ctx context.Context, cutoff time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM reading_ids WHERE ctid IN
			(SELECT ctid FROM reading_ids WHERE received < $1 LIMIT 10000)`, cutoff.UnixMilli())
		if err != nil {
			return total, storeErr(err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}

// Schema is the PostgreSQL schema the store's tables are in.
func (s *Store) Schema() string { return s.opts.Schema }

// Close stops the expiry and releases the connections.
func (s *Store) Close() error {
	close(s.stop)
	<-s.done
	s.pool.Close()
	return nil
}

// migrate applies the embedded migrations not yet applied, each in its
// own transaction, under an advisory lock (several nodes may start at
// once).
func (s *Store) migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	slices.Sort(names)
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return storeErr(err)
	}
	defer conn.Release()
	schema := pgx.Identifier{s.opts.Schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema); err != nil {
		return storeErr(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1))", "vigil-migrate-"+s.opts.Schema); err != nil {
		return storeErr(err)
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtext($1))", "vigil-migrate-"+s.opts.Schema)
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"); err != nil {
		return storeErr(err)
	}
	var have int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&have); err != nil {
		return storeErr(err)
	}
	if have > len(names) {
		return vigil.Errorf(vigil.EINVALID, "the database schema %s is at version %d, written by a newer Vigil (this one knows %d): upgrade Vigil", s.opts.Schema, have, len(names))
	}
	for i, name := range names[have:] {
		sql, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_version (version) VALUES ($1)", have+i+1)
			return err
		})
		if err != nil {
			return storeErr(err)
		}
	}
	return nil
}

// storeErr maps database errors to Vigil's: unreachable or shutting down
// is EUNAVAILABLE (retry), the rest EINTERNAL.
func storeErr(err error) error {
	if err == nil {
		return nil
	}
	var ve *vigil.Error
	if errors.As(err, &ve) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return vigil.Errorf(vigil.EUNAVAILABLE, "%v", err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		if pe.Code == "53100" { // disk_full: the pipeline tells devices to send again later
			return vigil.Errorf(vigil.EFULL, "the database's disk is full: nothing was stored; send the readings again later")
		}
		if strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57") || pe.Code == "53300" {
			return vigil.Errorf(vigil.EUNAVAILABLE, "database unavailable: %s", pe.Message)
		}
		return vigil.Errorf(vigil.EINTERNAL, "database: %s (%s)", pe.Message, pe.Code)
	}
	if pgconn.SafeToRetry(err) || errors.Is(err, pgx.ErrTxClosed) {
		return vigil.Errorf(vigil.EUNAVAILABLE, "database unavailable: %v", err)
	}
	return vigil.Errorf(vigil.EUNAVAILABLE, "database: %v", err)
}

// retryable says whether a transaction failed only for contention
// (serialization failure, deadlock) and may simply run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// inTx runs fn in a transaction, again (up to five times) when it fails
// for contention.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return storeErr(retry(func() error { return pgx.BeginFunc(ctx, s.pool, fn) }))
}

// retry runs fn, again (up to five times in all) while it fails for
// contention.
func retry(fn func() error) error {
	var err error
	for range 5 {
		if err = fn(); !retryable(err) {
			return err
		}
	}
	return err
}

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return vigil.Errorf(vigil.EUNAVAILABLE, "%v", err)
	}
	return nil
}

// Generic records: a table with an id and the record's JSON in doc.

// create inserts rec under id unless it exists (ECONFLICT).
func (s *Store) create(ctx context.Context, table, id, what string, rec any, extra ...any) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	doc, err := json.Marshal(rec)
	if err != nil {
		return vigil.Errorf(vigil.EINTERNAL, "encode %s: %v", what, err)
	}
	cols, args := "id, doc", []any{id, doc}
	for i := 0; i+1 < len(extra); i += 2 {
		cols += ", " + extra[i].(string)
		args = append(args, extra[i+1])
	}
	ph := make([]string, len(args))
	for i := range ph {
		ph[i] = "$" + strconv.Itoa(i+1)
	}
	tag, err := s.pool.Exec(ctx, "INSERT INTO "+table+" ("+cols+") VALUES ("+strings.Join(ph, ", ")+") ON CONFLICT (id) DO NOTHING", args...)
	if err != nil {
		return storeErr(err)
	}
	if tag.RowsAffected() == 0 {
		return vigil.Errorf(vigil.ECONFLICT, "%s already exists", what)
	}
	return nil
}

// update reads the record under id into old (FOR UPDATE) and replaces it
// with what next returns, in one transaction.
func (s *Store) update(ctx context.Context, table, id, what string, old any, next func() (any, error), extra ...any) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		var doc []byte
		err := tx.QueryRow(ctx, "SELECT doc FROM "+table+" WHERE id = $1 FOR UPDATE", id).Scan(&doc)
		if errors.Is(err, pgx.ErrNoRows) {
			return vigil.Errorf(vigil.ENOTFOUND, "%s not found", what)
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(doc, old); err != nil {
			return vigil.Errorf(vigil.EINTERNAL, "corrupt %s: %v", what, err)
		}
		rec, err := next()
		if err != nil {
			return err
		}
		if doc, err = json.Marshal(rec); err != nil {
			return err
		}
		set, args := "doc = $2", []any{id, doc}
		for i := 0; i+1 < len(extra); i += 2 {
			args = append(args, extra[i+1])
			set += ", " + extra[i].(string) + " = $" + strconv.Itoa(len(args))
		}
		_, err = tx.Exec(ctx, "UPDATE "+table+" SET "+set+" WHERE id = $1", args...)
		return err
	})
}

// find reads the record under id into v (ENOTFOUND when missing).
func (s *Store) find(ctx context.Context, table, id, what string, v any) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	var doc []byte
	err := s.pool.QueryRow(ctx, "SELECT doc FROM "+table+" WHERE id = $1", id).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return vigil.Errorf(vigil.ENOTFOUND, "%s not found", what)
	}
	if err != nil {
		return storeErr(err)
	}
	if err := json.Unmarshal(doc, v); err != nil {
		return vigil.Errorf(vigil.EINTERNAL, "corrupt %s: %v", what, err)
	}
	return nil
}

// docs runs a query whose one column is a record's JSON and decodes each
// row with add.
func docs[T any](ctx context.Context, s *Store, sql string, args ...any) ([]*T, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	var out []*T
	for rows.Next() {
		var doc []byte
		if err := rows.Scan(&doc); err != nil {
			return nil, storeErr(err)
		}
		v := new(T)
		if err := json.Unmarshal(doc, v); err != nil {
			return nil, vigil.Errorf(vigil.EINTERNAL, "corrupt record: %v", err)
		}
		out = append(out, v)
	}
	return out, storeErr(rows.Err())
}

// deleteByID removes a record (ENOTFOUND when there was none).
func (s *Store) deleteByID(ctx context.Context, table, id, what string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, "DELETE FROM "+table+" WHERE id = $1", id)
	if err != nil {
		return storeErr(err)
	}
	if tag.RowsAffected() == 0 {
		return vigil.Errorf(vigil.ENOTFOUND, "%s not found", what)
	}
	return nil
}

// OnThisMachine reports whether every host of url is this machine (a
// loopback address, localhost or a Unix socket): PostgreSQL then shares
// this machine's cores with Vigil.
func OnThisMachine(url string) bool {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return false
	}
	local := func(host string) bool {
		if strings.HasPrefix(host, "/") || host == "localhost" {
			return true
		}
		ip := net.ParseIP(host)
		return ip != nil && ip.IsLoopback()
	}
	if !local(cfg.Host) {
		return false
	}
	for _, fb := range cfg.Fallbacks {
		if !local(fb.Host) {
			return false
		}
	}
	return true
}
