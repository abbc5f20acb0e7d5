package pgstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/obsquery"
)

type seriesKey struct{ Patient, Code, Device, Method string }

// textValue is a text sample's text_value column.
type textValue struct {
	Text    string         `json:"s,omitempty"`
	Concept *vigil.Concept `json:"c,omitempty"`
}

// staged is one sample on its way in through COPY.
type staged struct {
	ord          int // later wins for one series and time
	sk           seriesKey
	unit, kind   string
	sampling     *vigil.Sampling
	t            int64
	v            float64
	lag          int32
	text, origin []byte
}

// AppendReadings stores readings durably, once per (DeviceID, ID), in one
// transaction: the idempotency keys first (a concurrent writer of the same
// key waits for the other's commit and then sees a duplicate), then the
// samples through COPY into a staging table and one upsert (a value for
// the same series and millisecond replaces the earlier one).
func (s *Store) AppendReadings(ctx context.Context, rs []*vigil.Reading) ([]vigil.AppendResult, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	res := make([]vigil.AppendResult, len(rs))
	first := make(map[[2]string]int, len(rs)) // (device, id) → first index
	var devs, ids []string
	var recv []int64
	for i, r := range rs {
		if r.DeviceID == "" || r.ID == "" || r.PatientID == "" {
			return nil, vigil.Errorf(vigil.EINVALID, "reading %d lacks a device, id or patient", i)
		}
		k := [2]string{r.DeviceID, r.ID}
		if _, dup := first[k]; dup {
			res[i].Duplicate = true
			continue
		}
		first[k] = i
		received := r.Received
		if received.IsZero() {
			received = s.opts.Now()
		}
		devs, ids, recv = append(devs, r.DeviceID), append(ids, r.ID), append(recv, received.UnixMilli())
	}
	// Lock order: keys in order, so concurrent batches cannot deadlock.
	order := make([]int, len(devs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Or(strings.Compare(devs[a], devs[b]), strings.Compare(ids[a], ids[b])) })
	sd, si, sr := make([]string, len(order)), make([]string, len(order)), make([]int64, len(order))
	for j, i := range order {
		sd[j], si[j], sr[j] = devs[i], ids[i], recv[i]
	}
	var samples []staged
	for _, r := range rs {
		t := r.Time.UnixMilli()
		lag := int32(0)
		if !r.Received.IsZero() {
			lag = int32(math.Round(r.Received.Sub(r.Time).Seconds()))
		}
		var origin []byte
		if r.Origin != nil {
			origin, _ = json.Marshal(r.Origin)
		}
		for _, m := range r.Values {
			st := staged{sk: seriesKey{r.PatientID, m.Code, r.DeviceID, m.Method}, unit: m.Unit, sampling: m.Sampling, t: t, v: m.Value, lag: lag, origin: origin}
			if m.Textual() {
				st.kind = "text"
				st.text, _ = json.Marshal(textValue{Text: m.Text, Concept: m.Concept})
			}
			samples = append(samples, st)
		}
	}
	if err := s.ensurePartitions(ctx, samples); err != nil {
		return nil, err
	}
	if ok, err := s.appendKnown(ctx, rs, res, sd, si, sr, samples); ok || err != nil {
		return res, err
	}
	var newSeries map[seriesKey]int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		newSeries = map[seriesKey]int64{}
		rows, err := tx.Query(ctx, `INSERT INTO reading_ids (device, id, received) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
			ON CONFLICT DO NOTHING RETURNING device, id`, sd, si, sr)
		if err != nil {
			return err
		}
		fresh := map[[2]string]bool{}
		for rows.Next() {
			var k [2]string
			if err := rows.Scan(&k[0], &k[1]); err != nil {
				rows.Close()
				return err
			}
			fresh[k] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var rowsIn [][]any
		ord, k := 0, 0
		for i, r := range rs {
			n := len(r.Values)
			if res[i].Duplicate || !fresh[[2]string{r.DeviceID, r.ID}] {
				k += n
				continue
			}
			for _, st := range samples[k : k+n] {
				sid, err := s.seriesID(ctx, tx, st, newSeries)
				if err != nil {
					return err
				}
				ord++
				rowsIn = append(rowsIn, []any{ord, sid, st.t, st.v, st.lag, nullJSON(st.text), nullJSON(st.origin)})
			}
			k += n
		}
		var fd, fp, fi []string
		var ft, fr []int64
		for i, r := range rs {
			if !res[i].Duplicate && !fresh[[2]string{r.DeviceID, r.ID}] {
				res[i].Duplicate = true
			}
			if !res[i].Duplicate && s.opts.ChangeFeed {
				received := r.Received
				if received.IsZero() {
					received = s.opts.Now()
				}
				fd, fp, fi = append(fd, r.DeviceID), append(fp, r.PatientID), append(fi, r.ID)
				ft, fr = append(ft, r.Time.UnixMilli()), append(fr, received.UnixMilli())
			}
		}
		if len(fd) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO feed (kind, device, patient, reading, t, received)
				SELECT 'r', * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])`, fd, fp, fi, ft, fr); err != nil {
				return err
			}
		}
		if len(rowsIn) == 0 {
			return nil
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"stage_samples"}, []string{"ord", "series", "t", "value", "lag", "text_value", "origin"}, pgx.CopyFromRows(rowsIn)); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO samples (series, t, value, lag, text_value, origin)
			SELECT DISTINCT ON (series, t) series, t, value, lag, text_value, origin FROM stage_samples ORDER BY series, t, ord DESC
			ON CONFLICT (series, t) DO UPDATE SET value = EXCLUDED.value, lag = EXCLUDED.lag, text_value = EXCLUDED.text_value, origin = EXCLUDED.origin`)
		return err
	})
	if err != nil {
		return nil, err
	}
	for k, id := range newSeries {
		s.series.Store(k, id)
	}
	return res, nil
}

// appendStatement is AppendReadings in one statement, its own
// transaction, for a batch whose series all exist: the reading ids
// ($1–$3: device, id, receive time; sorted) into reading_ids as CTE
// fresh, the samples ($4–$8: series, time, value, lag and ord, the later
// ord winning for one series and millisecond; then, with f.json, each
// sample's text and origin, and in the upserting form each sample's
// device and id) and, with f.feed, the feed rows of the ids (patient,
// device time, batch position) in batch order. Parameters are numbered
// in that order.
//
// The upserting form (f.upsert) inserts the ids ON CONFLICT DO NOTHING
// and writes the samples and feed rows of those that came back, which it
// returns. The plain form is for a batch none of whose ids is stored
// yet — the usual case: a plain INSERT of the ids (ON CONFLICT costs
// PostgreSQL a second index probe and a speculative insertion per row,
// 1.8x the time of a plain INSERT of the same keys here) and no joins; a
// stored id fails it with unique_violation, nothing written, and it
// returns the number of ids. Samples are upserted in both: a value for
// the same series and millisecond is data, not an error. Without f.json
// (no sample of the batch has text or an origin, the usual case) the two
// jsonb columns are written NULL and their arrays are not sent, nor in
// the plain form each sample's device and id, which only the joins use:
// PostgreSQL parses every array it is sent.
func appendStatement(f appendForm) string {
	n := 8
	param := func(typ string) string { n++; return "$" + strconv.Itoa(n) + "::" + typ }
	cols := "$4::bigint[], $5::bigint[], $6::float8[], $7::int[], $8::int[]"
	names := "series, t, value, lag, ord"
	text, origin := "NULL::jsonb", "NULL::jsonb"
	if f.json {
		cols += ", " + param("jsonb[]") + ", " + param("jsonb[]")
		names += ", text_value, origin"
		text, origin = "u.text_value", "u.origin"
	}
	conflict, tail, join := "", "SELECT count(*) FROM fresh", func(string) string { return "" }
	if f.upsert {
		cols += ", " + param("text[]") + ", " + param("text[]")
		names += ", device, id"
		conflict, tail = " ON CONFLICT DO NOTHING", "SELECT device, id FROM fresh"
		// join keeps the rows of alias whose id came back.
		join = func(alias string) string {
			return "\n\tJOIN fresh ON fresh.device = " + alias + ".device AND fresh.id = " + alias + ".id"
		}
	}
	sql := `WITH fresh AS (
	INSERT INTO reading_ids (device, id, received) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])` + conflict + ` RETURNING device, id
), stored AS (
	INSERT INTO samples (series, t, value, lag, text_value, origin)
	SELECT DISTINCT ON (u.series, u.t) u.series, u.t, u.value, u.lag, ` + text + `, ` + origin + `
	FROM unnest(` + cols + `)
		AS u(` + names + `)` + join("u") + `
	ORDER BY u.series, u.t, u.ord DESC
	ON CONFLICT (series, t) DO UPDATE SET value = EXCLUDED.value, lag = EXCLUDED.lag, text_value = EXCLUDED.text_value, origin = EXCLUDED.origin
)`
	if f.feed {
		sql += `, fed AS (
	INSERT INTO feed (kind, device, patient, reading, t, received)
	SELECT 'r', f.device, f.patient, f.id, f.t, f.received
	FROM unnest($1::text[], $2::text[], $3::bigint[], ` + param("text[]") + `, ` + param("bigint[]") + `, ` + param("int[]") + `) AS f(device, id, received, patient, t, n)` + join("f") + `
	ORDER BY f.n
)`
	}
	return sql + "\n" + tail
}

// An appendForm is one of appendStatement's forms.
type appendForm struct{ upsert, feed, json bool }

// appendSQL holds appendStatement's forms.
var appendSQL = func() map[appendForm]string {
	out := map[appendForm]string{}
	for _, upsert := range []bool{false, true} {
		for _, feed := range []bool{false, true} {
			for _, json := range []bool{false, true} {
				f := appendForm{upsert, feed, json}
				out[f] = appendStatement(f)
			}
		}
	}
	return out
}()

// plainPauseBatches is how many batches skip the plain form after it met
// a stored key: a device or edge resending a backlog would otherwise make
// every batch run twice.
const plainPauseBatches = 100

// appendKnown stores the batch in one statement (appendStatement: the
// plain form unless it recently met a stored id, then the upserting one)
// when every series it writes has a known id — one round trip to
// PostgreSQL instead of a transaction of five statements and a COPY — and
// fills in res. It returns
// false, having done nothing, when a series is new (AppendReadings'
// transaction creates it). sd, si, sr are the sorted first occurrences of
// the batch's (device, id) and their receive times.
func (s *Store) appendKnown(ctx context.Context, rs []*vigil.Reading, res []vigil.AppendResult, sd, si []string, sr []int64, samples []staged) (bool, error) {
	n := len(samples)
	ud, ui := make([]string, 0, n), make([]string, 0, n)
	uo, ulag := make([]int32, 0, n), make([]int32, 0, n)
	useries, ut := make([]int64, 0, n), make([]int64, 0, n)
	uv := make([]float64, 0, n)
	utext, uorigin := make([]*string, 0, n), make([]*string, 0, n)
	var f appendForm
	k := 0
	for i, r := range rs {
		m := len(r.Values)
		if res[i].Duplicate {
			k += m
			continue
		}
		for _, st := range samples[k : k+m] {
			id, ok := s.series.Load(st.sk)
			if !ok {
				return false, nil
			}
			ud, ui, uo = append(ud, r.DeviceID), append(ui, r.ID), append(uo, int32(len(uo)+1))
			useries, ut, uv, ulag = append(useries, id.(int64)), append(ut, st.t), append(uv, st.v), append(ulag, st.lag)
			utext, uorigin = append(utext, jsonText(st.text)), append(uorigin, jsonText(st.origin))
			f.json = f.json || st.text != nil || st.origin != nil
		}
		k += m
	}
	var feedArgs []any
	if s.opts.ChangeFeed {
		// The feed's patient, device time and batch position of each of
		// sd/si, found through the first occurrence of each key.
		at := make(map[[2]string]int, len(rs))
		for i, r := range rs {
			if !res[i].Duplicate {
				at[[2]string{r.DeviceID, r.ID}] = i
			}
		}
		fp, ft, fn := make([]string, len(sd)), make([]int64, len(sd)), make([]int32, len(sd))
		for j := range sd {
			i := at[[2]string{sd[j], si[j]}]
			fp[j], ft[j], fn[j] = rs[i].PatientID, rs[i].Time.UnixMilli(), int32(i)
		}
		f.feed = true
		feedArgs = []any{fp, ft, fn}
	}
	// args returns the parameters of form f, in appendStatement's order.
	args := func(f appendForm) []any {
		a := []any{sd, si, sr, useries, ut, uv, ulag, uo}
		if f.json {
			a = append(a, utext, uorigin)
		}
		if f.upsert {
			a = append(a, ud, ui)
		}
		return append(a, feedArgs...)
	}

	if s.plainPause.Load() <= 0 {
		err := retry(func() error { _, err := s.pool.Exec(ctx, appendSQL[f], args(f)...); return err })
		if err == nil {
			s.plain.Add(1)
			return true, nil // every reading new
		}
		if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "23505" {
			return true, storeErr(err)
		}
		s.plainPause.Store(plainPauseBatches) // a reading id is stored: the upserting form sorts it out
	} else {
		s.plainPause.Add(-1)
	}

	f.upsert = true
	fresh := map[[2]string]bool{}
	err := retry(func() error {
		clear(fresh)
		rows, err := s.pool.Query(ctx, appendSQL[f], args(f)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k [2]string
			if err := rows.Scan(&k[0], &k[1]); err != nil {
				return err
			}
			fresh[k] = true
		}
		return rows.Err()
	})
	if err != nil {
		return true, storeErr(err)
	}
	s.oneStatement.Add(1)
	for i, r := range rs {
		if !res[i].Duplicate && !fresh[[2]string{r.DeviceID, r.ID}] {
			res[i].Duplicate = true
		}
	}
	return true, nil
}

// jsonText is b as a nullable jsonb array element.
func jsonText(b []byte) *string {
	if b == nil {
		return nil
	}
	t := string(b)
	return &t
}

func nullJSON(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// seriesID returns the series' id, creating the series in tx when it is
// new (known ids are cached once committed).
func (s *Store) seriesID(ctx context.Context, tx pgx.Tx, st staged, created map[seriesKey]int64) (int64, error) {
	if id, ok := s.series.Load(st.sk); ok {
		return id.(int64), nil
	}
	if id, ok := created[st.sk]; ok {
		return id, nil
	}
	var sampling []byte
	if st.sampling != nil {
		sampling, _ = json.Marshal(st.sampling)
	}
	var id int64
	err := tx.QueryRow(ctx, `INSERT INTO series (patient, code, device, method, unit, kind, sampling) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (patient, code, device, method) DO UPDATE SET unit = series.unit RETURNING id`,
		st.sk.Patient, st.sk.Code, st.sk.Device, st.sk.Method, st.unit, st.kind, nullJSON(sampling)).Scan(&id)
	if err != nil {
		return 0, err
	}
	created[st.sk] = id
	return id, nil
}

// month returns the UTC month holding t (Unix ms): its start and the next.
func month(t int64) (int64, int64) {
	d := time.UnixMilli(t).UTC()
	m := time.Date(d.Year(), d.Month(), 1, 0, 0, 0, 0, time.UTC)
	return m.UnixMilli(), m.AddDate(0, 1, 0).UnixMilli()
}

// ensurePartitions creates the monthly partitions of samples the batch
// needs (samples_y2026m11), outside the data's transaction.
func (s *Store) ensurePartitions(ctx context.Context, samples []staged) error {
	done := int64(math.MinInt64) // a batch's samples are mostly in one month
	for _, st := range samples {
		lo, hi := month(st.t)
		if lo == done {
			continue
		}
		done = lo
		if _, ok := s.parts.Load(lo); ok {
			continue
		}
		d := time.UnixMilli(lo).UTC()
		name := fmt.Sprintf("samples_y%04dm%02d", d.Year(), d.Month())
		if d.Year() < 0 {
			name = fmt.Sprintf("samples_bc%dm%02d", -d.Year(), d.Month())
		}
		sql := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s PARTITION OF samples FOR VALUES FROM (%d) TO (%d)", pgx.Identifier{name}.Sanitize(), lo, hi)
		var err error
		for range 3 { // two nodes creating it at once: the loser retries
			if _, err = s.pool.Exec(ctx, sql); err == nil {
				break
			}
		}
		if err != nil {
			return storeErr(err)
		}
		s.parts.Store(lo, true)
	}
	return nil
}

// source is a read-only, repeatable-read transaction as obsquery sees it.
type source struct {
	ctx context.Context
	tx  pgx.Tx
}

const seriesCols = "id, patient, code, device, method, unit, kind, sampling"

func scanSeries(row pgx.Row) (obsquery.Series, error) {
	var se obsquery.Series
	var id int64
	var kind string
	var sampling []byte
	if err := row.Scan(&id, &se.Patient, &se.Code, &se.Device, &se.Method, &se.Unit, &kind, &sampling); err != nil {
		return se, err
	}
	se.ID, se.Text = uint64(id), kind == "text"
	if sampling != nil {
		se.Sampling = new(vigil.Sampling)
		if err := json.Unmarshal(sampling, se.Sampling); err != nil {
			return se, err
		}
	}
	return se, nil
}

func (q source) PatientSeries(patientID string) ([]obsquery.Series, error) {
	rows, err := q.tx.Query(q.ctx, "SELECT "+seriesCols+" FROM series WHERE patient = $1 ORDER BY id", patientID)
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	var out []obsquery.Series
	for rows.Next() {
		se, err := scanSeries(rows)
		if err != nil {
			return nil, storeErr(err)
		}
		out = append(out, se)
	}
	return out, storeErr(rows.Err())
}

func (q source) SeriesByID(id uint64) (obsquery.Series, bool, error) {
	if id > math.MaxInt64 {
		return obsquery.Series{}, false, nil
	}
	se, err := scanSeries(q.tx.QueryRow(q.ctx, "SELECT "+seriesCols+" FROM series WHERE id = $1", int64(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return se, false, nil
	}
	return se, err == nil, storeErr(err)
}

func (q source) Samples(se obsquery.Series, from, to int64, desc bool) (obsquery.Samples, error) {
	return &sampleRows{q: q, sid: int64(se.ID), from: from, to: to, desc: desc}, nil
}

// sampleRows reads one series' samples a chunk at a time (keyset: after
// the last time read), so that many series can be merged on one
// connection without holding a result open.
type sampleRows struct {
	q        source
	sid      int64
	from, to int64
	desc     bool
	buf      []obsquery.Sample
	pos      int
	done     bool
}

const chunk = 1000

func (r *sampleRows) Next() (obsquery.Sample, bool, error) {
	if r.pos == len(r.buf) {
		if r.done {
			return obsquery.Sample{}, false, nil
		}
		if err := r.fill(); err != nil {
			return obsquery.Sample{}, false, err
		}
		if len(r.buf) == 0 {
			return obsquery.Sample{}, false, nil
		}
	}
	smp := r.buf[r.pos]
	r.pos++
	return smp, true, nil
}

func (r *sampleRows) fill() error {
	dir := "ASC"
	if r.desc {
		dir = "DESC"
	}
	rows, err := r.q.tx.Query(r.q.ctx, "SELECT t, value, lag, text_value FROM samples WHERE series = $1 AND t >= $2 AND t < $3 ORDER BY t "+dir+" LIMIT $4",
		r.sid, r.from, r.to, chunk)
	if err != nil {
		return storeErr(err)
	}
	defer rows.Close()
	r.buf, r.pos = r.buf[:0], 0
	for rows.Next() {
		var smp obsquery.Sample
		var lag int32
		var text []byte
		if err := rows.Scan(&smp.T, &smp.V, &lag, &text); err != nil {
			return storeErr(err)
		}
		smp.Lag = int64(lag)
		if text != nil {
			var tv textValue
			if err := json.Unmarshal(text, &tv); err != nil {
				return vigil.Errorf(vigil.EINTERNAL, "corrupt text sample: %v", err)
			}
			smp.Text, smp.Concept = tv.Text, tv.Concept
		}
		r.buf = append(r.buf, smp)
	}
	if err := rows.Err(); err != nil {
		return storeErr(err)
	}
	if len(r.buf) < chunk {
		r.done = true
	} else if last := r.buf[len(r.buf)-1].T; r.desc {
		r.to = last
	} else {
		r.from = last + 1
	}
	return nil
}

func (r *sampleRows) Close() {}

// read runs fn on a consistent snapshot (a read-only repeatable-read
// transaction).
func (s *Store) read(ctx context.Context, fn func(source) error) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return storeErr(err)
	}
	defer tx.Rollback(context.Background())
	return fn(source{ctx, tx})
}

// FindObservations implements vigil.ObservationStore.
func (s *Store) FindObservations(ctx context.Context, f vigil.ObservationFilter) (obs []*vigil.Observation, cursor string, err error) {
	err = s.read(ctx, func(q source) error {
		obs, cursor, err = obsquery.Find(q, f)
		return err
	})
	return obs, cursor, err
}

// FindObservationByID implements vigil.ObservationStore.
func (s *Store) FindObservationByID(ctx context.Context, id string) (o *vigil.Observation, err error) {
	err = s.read(ctx, func(q source) error {
		o, err = obsquery.FindByID(q, id)
		return err
	})
	return o, err
}

// LatestObservations implements vigil.ObservationStore.
func (s *Store) LatestObservations(ctx context.Context, patientID string, codes []string, max int) (out map[string][]*vigil.Observation, err error) {
	err = s.read(ctx, func(q source) error {
		out, err = obsquery.Latest(q, patientID, codes, max)
		return err
	})
	return out, err
}

// ReadSeries returns the patient's numeric values of code in [from, to)
// per device (and method), at most max in all (more is EINVALID).
func (s *Store) ReadSeries(ctx context.Context, patientID, code, deviceID string, from, to time.Time, max int) (out []vigil.SeriesData, err error) {
	err = s.read(ctx, func(q source) error {
		all, err := q.PatientSeries(patientID)
		if err != nil {
			return err
		}
		n := 0
		for _, se := range all {
			if se.Code != code || se.Text || (deviceID != "" && se.Device != deviceID) {
				continue
			}
			rows, err := q.tx.Query(ctx, "SELECT t, value FROM samples WHERE series = $1 AND t >= $2 AND t < $3 ORDER BY t LIMIT $4",
				int64(se.ID), from.UnixMilli(), to.UnixMilli(), max-n+1)
			if err != nil {
				return err
			}
			sd := vigil.SeriesData{Device: se.Device, Method: se.Method, Unit: se.Unit}
			for rows.Next() {
				var t int64
				var v float64
				if err := rows.Scan(&t, &v); err != nil {
					rows.Close()
					return err
				}
				sd.T, sd.V = append(sd.T, t), append(sd.V, v)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if n += len(sd.T); n > max {
				return vigil.FieldErrorf("to", "too-many", "more than %d values in this range: ask for a shorter one", max)
			}
			if len(sd.T) > 0 {
				out = append(out, sd)
			}
		}
		return nil
	})
	return out, storeErr(err)
}

// DeviceChannels returns the codes a device has reported (every device's
// when deviceID is ""), by device and code (FHIR DeviceMetric).
func (s *Store) DeviceChannels(ctx context.Context, deviceID string) ([]vigil.Channel, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, "SELECT DISTINCT device, code, unit FROM series WHERE $1 = '' OR device = $1 ORDER BY device, code", deviceID)
	if err != nil {
		return nil, storeErr(err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (vigil.Channel, error) {
		var c vigil.Channel
		err := row.Scan(&c.Device, &c.Code, &c.Unit)
		return c, err
	})
}

// FillOrigins sets the Origin of each observation that has one stored
// (a panel takes its systolic value's, a period the value at its start),
// in one query.
func (s *Store) FillOrigins(ctx context.Context, obs []*vigil.Observation) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	var sids, ts []int64
	at := map[[2]int64][]*vigil.Observation{}
	for _, o := range obs {
		_, sid, t, err := obsquery.ParseID(o.ID)
		if err != nil || sid > math.MaxInt64 {
			continue
		}
		k := [2]int64{int64(sid), t}
		if at[k] == nil {
			sids, ts = append(sids, k[0]), append(ts, t)
		}
		at[k] = append(at[k], o)
	}
	if len(sids) == 0 {
		return nil
	}
	rows, err := s.pool.Query(ctx, `SELECT m.series, m.t, m.origin FROM samples m
		JOIN unnest($1::bigint[], $2::bigint[]) AS k(series, t) ON m.series = k.series AND m.t = k.t
		WHERE m.origin IS NOT NULL`, sids, ts)
	if err != nil {
		return storeErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var k [2]int64
		var b []byte
		if err := rows.Scan(&k[0], &k[1], &b); err != nil {
			return storeErr(err)
		}
		var or vigil.Origin
		if json.Unmarshal(b, &or) == nil {
			for _, o := range at[k] {
				o.Origin = &or
			}
		}
	}
	return storeErr(rows.Err())
}
