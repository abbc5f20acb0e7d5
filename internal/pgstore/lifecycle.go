package pgstore

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-iomt/vigil"
)

var _ vigil.Lifecycle = (*Store)(nil)

// EnforceRetention applies Options.Retention at now, as the embedded store
// does: samples older than Readings (numeric ones rolled up per minute and
// hour first, merged into what earlier runs rolled up), rollups older than
// Rollups and resolved alerts raised before Alerts are deleted, each class
// in its own transaction. Space returns to the operating system through
// autovacuum (or by dropping emptied monthly partitions).
func (s *Store) EnforceRetention(ctx context.Context, now time.Time) (vigil.RetentionStats, error) {
	var st vigil.RetentionStats
	r := s.opts.Retention
	if r.Readings > 0 {
		cutoff := now.Add(-r.Readings).UnixMilli()
		cutoff -= cutoff % (2 * time.Hour).Milliseconds() // whole 2-hour buckets, as the embedded store
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			for _, res := range []struct {
				code string
				ms   int64
			}{{"m", time.Minute.Milliseconds()}, {"h", time.Hour.Milliseconds()}} {
				tag, err := tx.Exec(ctx, `INSERT INTO rollups (series, res, start, min, max, sum, n)
					SELECT s.series, $2, s.t - s.t % $3, min(s.value), max(s.value), sum(s.value), count(*)
					FROM samples s JOIN series ON series.id = s.series AND series.kind <> 'text'
					WHERE s.t < $1 GROUP BY s.series, s.t - s.t % $3
					ON CONFLICT (series, res, start) DO UPDATE SET min = least(rollups.min, excluded.min),
						max = greatest(rollups.max, excluded.max), sum = rollups.sum + excluded.sum, n = rollups.n + excluded.n`,
					cutoff, res.code, res.ms)
				if err != nil {
					return err
				}
				st.Rollups += int(tag.RowsAffected())
			}
			tag, err := tx.Exec(ctx, `DELETE FROM samples WHERE t < $1`, cutoff)
			st.Samples = int(tag.RowsAffected())
			return err
		})
		if err != nil {
			return st, storeErr(err)
		}
	}
	if r.Rollups > 0 {
		tag, err := s.pool.Exec(ctx, `DELETE FROM rollups WHERE start < $1`, now.Add(-r.Rollups).UnixMilli())
		if err != nil {
			return st, storeErr(err)
		}
		st.Expired = int(tag.RowsAffected())
	}
	if r.Alerts > 0 {
		tag, err := s.pool.Exec(ctx, `DELETE FROM alerts WHERE state = $1 AND raised_ns < $2`, vigil.AlertResolved, now.Add(-r.Alerts).UnixNano())
		if err != nil {
			return st, storeErr(err)
		}
		st.Alerts = int(tag.RowsAffected())
	}
	s.removed.WithLabelValues("readings").Add(float64(st.Samples))
	s.removed.WithLabelValues("alerts").Add(float64(st.Alerts))
	return st, nil
}

// ReadRollups implements vigil.Lifecycle.
func (s *Store) ReadRollups(ctx context.Context, patientID, code string, res time.Duration, from, to time.Time) ([]vigil.RollupSeries, error) {
	rc := map[time.Duration]string{vigil.RollupMinute: "m", vigil.RollupHour: "h"}[res]
	if rc == "" {
		return nil, vigil.FieldErrorf("resolution", "invalid", "rollups are kept per minute (1m) and per hour (1h)")
	}
	rows, err := s.pool.Query(ctx, `SELECT series.device, series.method, series.unit, r.start, r.min, r.max, r.sum, r.n
		FROM rollups r JOIN series ON series.id = r.series
		WHERE series.patient = $1 AND series.code = $2 AND r.res = $3 AND r.start >= $4 AND r.start < $5
		ORDER BY series.device, series.method, r.start`, patientID, code, rc, from.UnixMilli(), to.UnixMilli())
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	var out []vigil.RollupSeries
	for rows.Next() {
		var dev, method, unit string
		var start, n int64
		var lo, hi, sum float64
		if err := rows.Scan(&dev, &method, &unit, &start, &lo, &hi, &sum, &n); err != nil {
			return nil, storeErr(err)
		}
		if k := len(out); k == 0 || out[k-1].Device != dev || out[k-1].Method != method {
			out = append(out, vigil.RollupSeries{Device: dev, Method: method, Unit: unit})
		}
		out[len(out)-1].Rollups = append(out[len(out)-1].Rollups, vigil.Rollup{Start: time.UnixMilli(start).UTC(), Min: lo, Max: hi, Mean: sum / float64(n), Count: int(n)})
	}
	return out, storeErr(rows.Err())
}

// ErasePatient implements vigil.Lifecycle: one transaction deletes the
// patient's samples, series, alerts, events, reviews, assignments, own
// accounts, unsent feed entries and registry entry.
func (s *Store) ErasePatient(ctx context.Context, id string) (*vigil.ErasureReport, error) {
	if _, err := s.FindPatientByID(ctx, id); err != nil {
		return nil, err
	}
	rep := &vigil.ErasureReport{}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, q := range []struct {
			sql string
			n   *int
		}{
			{`DELETE FROM samples WHERE series IN (SELECT id FROM series WHERE patient = $1)`, &rep.Samples},
			{`DELETE FROM rollups WHERE series IN (SELECT id FROM series WHERE patient = $1)`, nil},
			{`DELETE FROM series WHERE patient = $1`, &rep.Series},
			{`DELETE FROM alerts WHERE patient = $1`, &rep.Alerts},
			{`DELETE FROM events WHERE patient = $1`, &rep.Events},
			{`DELETE FROM reviews WHERE patient = $1`, &rep.Reviews},
			{`DELETE FROM assignments WHERE patient = $1`, &rep.Assignments},
			{`DELETE FROM users WHERE doc->>'patient' = $1`, &rep.Users},
			{`DELETE FROM feed WHERE patient = $1`, &rep.Feed},
			{`DELETE FROM patients WHERE id = $1`, nil},
		} {
			tag, err := tx.Exec(ctx, q.sql, id)
			if err != nil {
				return err
			}
			if q.n != nil {
				*q.n = int(tag.RowsAffected())
			}
		}
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	return rep, nil
}
