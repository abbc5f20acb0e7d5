package pgstore

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-iomt/vigil"
)

// The change feed (Options.ChangeFeed) is written in the same transaction
// as the data, so an outbound consumer misses nothing acknowledged. A
// sequence number taken by one transaction may commit after a higher one:
// consumers read from the start each time and delete what they handled.

// FeedAfter returns up to n change-feed entries with a sequence above
// after, oldest first.
func (s *Store) FeedAfter(ctx context.Context, after uint64, n int) ([]vigil.FeedEntry, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if after > math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, "SELECT seq, kind, patient, device, reading, t, received, alert FROM feed WHERE seq > $1 ORDER BY seq LIMIT $2", int64(after), n)
	if err != nil {
		return nil, storeErr(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (vigil.FeedEntry, error) {
		var e vigil.FeedEntry
		var seq, t, recv int64
		var kind string
		if err := row.Scan(&seq, &kind, &e.PatientID, &e.DeviceID, &e.ReadingID, &t, &recv, &e.AlertID); err != nil {
			return e, err
		}
		e.Seq = uint64(seq)
		if kind == "r" {
			e.Kind, e.Time, e.Received = vigil.FeedReading, time.UnixMilli(t).UTC(), time.UnixMilli(recv).UTC()
		} else {
			e.Kind = vigil.FeedAlert
		}
		return e, nil
	})
	return out, storeErr(err)
}

// TrimFeed deletes the given entries (those the consumer handled).
func (s *Store) TrimFeed(ctx context.Context, seqs []uint64) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	ids := make([]int64, 0, len(seqs))
	for _, q := range seqs {
		if q <= math.MaxInt64 {
			ids = append(ids, int64(q))
		}
	}
	_, err := s.pool.Exec(ctx, "DELETE FROM feed WHERE seq = ANY($1)", ids)
	return storeErr(err)
}

// AuditLog is one audit log in the database: each node appends to its
// own (named after its signing key), since a Merkle log has one writer.
type AuditLog struct {
	s    *Store
	name string
}

// AuditLog returns the audit log called name (an audit.Store).
func (s *Store) AuditLog(name string) *AuditLog { return &AuditLog{s, name} }

// AppendAudit stores audit record index and the new tree head in one
// transaction; an index already stored is refused (the log is
// append-only).
func (l *AuditLog) AppendAudit(ctx context.Context, index uint64, rec, head []byte) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if index > math.MaxInt64 {
		return vigil.Errorf(vigil.EINVALID, "audit index %d out of range", index)
	}
	return l.s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "INSERT INTO audit (log, idx, rec) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", l.name, int64(index), rec)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return vigil.Errorf(vigil.ECONFLICT, "audit record %d exists: the log is append-only", index)
		}
		_, err = tx.Exec(ctx, "INSERT INTO audit_head (log, head) VALUES ($1, $2) ON CONFLICT (log) DO UPDATE SET head = EXCLUDED.head", l.name, head)
		return err
	})
}

// AuditHead returns the stored tree head (false when the log is empty).
func (l *AuditLog) AuditHead(ctx context.Context) ([]byte, bool, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, false, err
	}
	var head []byte
	err := l.s.pool.QueryRow(ctx, "SELECT head FROM audit_head WHERE log = $1", l.name).Scan(&head)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	return head, err == nil, storeErr(err)
}

// ScanAudit calls fn with every audit record from index from on, in
// order, a thousand rows per query.
func (l *AuditLog) ScanAudit(ctx context.Context, from uint64, fn func(index uint64, rec []byte) error) error {
	if from > math.MaxInt64 {
		return nil
	}
	next := int64(from)
	for {
		if err := ctxErr(ctx); err != nil {
			return err
		}
		rows, err := l.s.pool.Query(ctx, "SELECT idx, rec FROM audit WHERE log = $1 AND idx >= $2 ORDER BY idx LIMIT 1000", l.name, next)
		if err != nil {
			return storeErr(err)
		}
		type rec struct {
			idx int64
			b   []byte
		}
		recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (rec, error) {
			var r rec
			err := row.Scan(&r.idx, &r.b)
			return r, err
		})
		if err != nil {
			return storeErr(err)
		}
		for _, r := range recs {
			if err := fn(uint64(r.idx), r.b); err != nil {
				return err
			}
		}
		if len(recs) < 1000 {
			return nil
		}
		next = recs[len(recs)-1].idx + 1
	}
}

// ReadingDays returns the UTC days in [from, to) on which the patient has
// stored values (from any device, excluding Vigil's own computed scores),
// in order.
func (s *Store) ReadingDays(ctx context.Context, patientID string, from, to time.Time) ([]time.Time, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT floor(m.t / 86400000.0)::bigint AS day FROM samples m JOIN series se ON se.id = m.series
		WHERE se.patient = $1 AND se.device <> 'vigil-news2' AND m.t >= $2 AND m.t < $3 ORDER BY day`, patientID, from.UnixMilli(), to.UnixMilli())
	if err != nil {
		return nil, storeErr(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (time.Time, error) {
		var d int64
		err := row.Scan(&d)
		return time.UnixMilli(d * 86400000).UTC(), err
	})
	return out, storeErr(err)
}
