package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-iomt/vigil"
)

// SaveAlert creates or replaces the alert.
func (s *Store) SaveAlert(ctx context.Context, a *vigil.Alert) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if a.ID == "" {
		return vigil.FieldErrorf("id", "required", "an alert needs an id")
	}
	doc, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO alerts (id, patient, state, raised_ns, doc) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (id) DO UPDATE SET patient = EXCLUDED.patient, state = EXCLUDED.state, raised_ns = EXCLUDED.raised_ns, doc = EXCLUDED.doc`,
			a.ID, a.PatientID, a.State, a.Raised.UnixNano(), doc)
		if err == nil && s.opts.ChangeFeed {
			_, err = tx.Exec(ctx, "INSERT INTO feed (kind, patient, alert) VALUES ('a', $1, $2)", a.PatientID, a.ID)
		}
		return err
	})
}

func (s *Store) FindAlertByID(ctx context.Context, id string) (*vigil.Alert, error) {
	var a vigil.Alert
	if err := s.find(ctx, "alerts", id, "alert "+id, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// FindAlerts returns matching alerts, newest Raised first.
func (s *Store) FindAlerts(ctx context.Context, f vigil.AlertFilter) ([]*vigil.Alert, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	states := f.States
	if states == nil {
		states = []string{}
	}
	return docs[vigil.Alert](ctx, s, `SELECT doc FROM alerts WHERE ($1 = '' OR patient = $1) AND (cardinality($2::text[]) = 0 OR state = ANY($2))
		ORDER BY raised_ns DESC, id DESC LIMIT $3`, f.PatientID, states, limit)
}

// timeID is a dead letter id: 24 hex digits that sort by time.
func timeID(t time.Time) string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixNano()))
	rand.Read(b[8:])
	return hex.EncodeToString(b[:])
}

// AddDeadLetter stores d, setting d.ID when it is empty.
func (s *Store) AddDeadLetter(ctx context.Context, d *vigil.DeadLetter) error {
	if d.Time.IsZero() {
		d.Time = s.opts.Now().UTC()
	}
	if d.ID == "" {
		d.ID = timeID(d.Time)
	}
	return s.create(ctx, "dead_letters", d.ID, "dead letter "+d.ID, d, "device", d.DeviceID, "reason", d.Reason)
}

// FindDeadLetters returns matching dead letters, newest first.
func (s *Store) FindDeadLetters(ctx context.Context, f vigil.DeadLetterFilter) ([]*vigil.DeadLetter, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	return docs[vigil.DeadLetter](ctx, s, `SELECT doc FROM dead_letters WHERE ($1 = '' OR device = $1) AND ($2 = '' OR reason = $2)
		ORDER BY id DESC LIMIT $3`, f.DeviceID, f.Reason, limit)
}

func (s *Store) FindDeadLetterByID(ctx context.Context, id string) (*vigil.DeadLetter, error) {
	var d vigil.DeadLetter
	if err := s.find(ctx, "dead_letters", id, "dead letter "+id, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

func (s *Store) DeleteDeadLetter(ctx context.Context, id string) error {
	return s.deleteByID(ctx, "dead_letters", id, "dead letter "+id)
}

// saveVersion stores rec as the next version of id in table (mappings,
// rules), setting it through set.
func (s *Store) saveVersion(ctx context.Context, table, id string, set func(version int) any) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		// One writer per id at a time: the advisory lock ends with the transaction.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", table+"/"+id); err != nil {
			return err
		}
		var v int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+table+" WHERE id = $1", id).Scan(&v); err != nil {
			return err
		}
		doc, err := json.Marshal(set(v + 1))
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO "+table+" (id, version, doc) VALUES ($1, $2, $3)", id, v+1, doc)
		return err
	})
}

// findVersion reads version v of id (0: the latest) into out.
func (s *Store) findVersion(ctx context.Context, table, id string, v int, what string, out any) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	var doc []byte
	err := s.pool.QueryRow(ctx, "SELECT doc FROM "+table+" WHERE id = $1 AND ($2 = 0 OR version = $2) ORDER BY version DESC LIMIT 1", id, v).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return vigil.Errorf(vigil.ENOTFOUND, "%s %s not found", what, id)
	}
	if err != nil {
		return storeErr(err)
	}
	return json.Unmarshal(doc, out)
}

func (s *Store) SaveMapping(ctx context.Context, m *vigil.Mapping) error {
	if !vigil.ValidID(m.ID) {
		return vigil.FieldErrorf("id", "invalid", "mapping id %q: use letters, digits and '-', up to 48 characters", m.ID)
	}
	return s.saveVersion(ctx, "mappings", m.ID, func(v int) any {
		m.Version, m.Saved = v, s.opts.Now().UTC()
		return m
	})
}

func (s *Store) FindMapping(ctx context.Context, id string, version int) (*vigil.Mapping, error) {
	var m vigil.Mapping
	if err := s.findVersion(ctx, "mappings", id, version, "mapping", &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// FindMappings returns the latest version of every mapping, by id.
func (s *Store) FindMappings(ctx context.Context) ([]*vigil.Mapping, error) {
	return docs[vigil.Mapping](ctx, s, "SELECT doc FROM mappings t WHERE version = (SELECT max(version) FROM mappings WHERE id = t.id) ORDER BY id")
}

func (s *Store) SaveRule(ctx context.Context, r *vigil.Rule) error {
	if !vigil.ValidID(r.ID) {
		return vigil.FieldErrorf("id", "invalid", "rule id %q: use letters, digits and '-', up to 48 characters", r.ID)
	}
	return s.saveVersion(ctx, "rules", r.ID, func(v int) any {
		r.Version, r.Saved = v, s.opts.Now().UTC()
		return r
	})
}

func (s *Store) FindRule(ctx context.Context, id string, version int) (*vigil.Rule, error) {
	var r vigil.Rule
	if err := s.findVersion(ctx, "rules", id, version, "rule", &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// FindRules returns the latest version of every rule, by id.
func (s *Store) FindRules(ctx context.Context) ([]*vigil.Rule, error) {
	return docs[vigil.Rule](ctx, s, "SELECT doc FROM rules t WHERE version = (SELECT max(version) FROM rules WHERE id = t.id) ORDER BY id")
}

// RuleHistory returns every version of a rule, oldest first.
func (s *Store) RuleHistory(ctx context.Context, id string) ([]*vigil.Rule, error) {
	rs, err := docs[vigil.Rule](ctx, s, "SELECT doc FROM rules WHERE id = $1 ORDER BY version", id)
	if err == nil && len(rs) == 0 {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "rule %s not found", id)
	}
	return rs, err
}

// AppendEvents stores device events once per (device, id).
func (s *Store) AppendEvents(ctx context.Context, es []*vigil.DeviceEvent) ([]vigil.AppendResult, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	for i, e := range es {
		if e.DeviceID == "" || e.ID == "" || e.PatientID == "" || e.Time.IsZero() {
			return nil, vigil.Errorf(vigil.EINVALID, "event %d lacks a device, id, patient or time", i)
		}
	}
	res := make([]vigil.AppendResult, len(es))
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		for i, e := range es {
			doc, err := json.Marshal(e)
			if err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, "INSERT INTO events (device, id, patient, t_ns, doc) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
				e.DeviceID, e.ID, e.PatientID, e.Time.UnixNano(), doc)
			if err != nil {
				return err
			}
			res[i] = vigil.AppendResult{Duplicate: tag.RowsAffected() == 0}
		}
		return nil
	})
	return res, err
}

// FindEvents returns the patient's events in [from, to), oldest first.
func (s *Store) FindEvents(ctx context.Context, patientID string, from, to time.Time) ([]*vigil.DeviceEvent, error) {
	return docs[vigil.DeviceEvent](ctx, s, "SELECT doc FROM events WHERE patient = $1 AND t_ns >= $2 AND t_ns < $3 ORDER BY t_ns, device, id",
		patientID, from.UnixNano(), to.UnixNano())
}

func (s *Store) AddReview(ctx context.Context, r *vigil.Review) error {
	if r.ID == "" || r.PatientID == "" || r.At.IsZero() {
		return vigil.Errorf(vigil.EINVALID, "a review needs an id, a patient and a time")
	}
	return s.create(ctx, "reviews", r.ID, "review "+r.ID, r, "patient", r.PatientID, "at_ns", r.At.UnixNano())
}

// FindReviews returns the patient's reviews in [from, to), oldest first.
func (s *Store) FindReviews(ctx context.Context, patientID string, from, to time.Time) ([]*vigil.Review, error) {
	return docs[vigil.Review](ctx, s, "SELECT doc FROM reviews WHERE patient = $1 AND at_ns >= $2 AND at_ns < $3 ORDER BY at_ns, id",
		patientID, from.UnixNano(), to.UnixNano())
}

// SaveSubscription creates or replaces a FHIR subscription. (Its
// endpoint and headers may hold secrets: restrict the database's access
// as for the rest of the PHI it holds.)
func (s *Store) SaveSubscription(ctx context.Context, sub *vigil.Subscription) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if !vigil.ValidID(sub.ID) {
		return vigil.FieldErrorf("id", "invalid", "subscription id %q is not valid", sub.ID)
	}
	doc, err := json.Marshal(sub)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, "INSERT INTO subscriptions (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc", sub.ID, doc)
	return storeErr(err)
}

// DeleteSubscription removes one; a missing one is not an error.
func (s *Store) DeleteSubscription(ctx context.Context, id string) error {
	if err := s.deleteByID(ctx, "subscriptions", id, "subscription"); vigil.ErrorCode(err) != vigil.ENOTFOUND {
		return err
	}
	return nil
}

func (s *Store) FindSubscriptions(ctx context.Context) ([]*vigil.Subscription, error) {
	return docs[vigil.Subscription](ctx, s, "SELECT doc FROM subscriptions ORDER BY id")
}
