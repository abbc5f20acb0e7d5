package pebble

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vigil-iomt/vigil"
)

// SaveAlert creates or replaces an alert. Alerts are indexed by their
// Raised time so that FindAlerts returns the newest first.
func (s *Store) SaveAlert(ctx context.Context, a *vigil.Alert) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if a.ID == "" {
		return vigil.FieldErrorf("id", "required", "an alert needs an id")
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	var old vigil.Alert
	had, err := s.getJSON(s.db, key(pAlert, a.ID), &old)
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	if had && !old.Raised.Equal(a.Raised) {
		b.Delete(alertIndexKey(&old), nil)
	}
	if err := s.setJSON(b, key(pAlert, a.ID), a); err != nil {
		b.Close()
		return err
	}
	if err := b.Set(alertIndexKey(a), nil, nil); err != nil {
		b.Close()
		return err
	}
	if s.opts.ChangeFeed || s.opts.Outbox {
		// An edge gateway's forwarder reconciles its alerts from the feed.
		k, v := s.feedValue(feedRecord{Kind: "a", Alert: a.ID, Patient: a.PatientID})
		if err := b.Set(k, v, nil); err != nil {
			b.Close()
			return err
		}
	}
	return s.commitSync(b)
}

func alertIndexKey(a *vigil.Alert) []byte {
	return append(append([]byte{pAlertRaised, 0}, be64(a.Raised.UnixNano())...), a.ID...)
}

func (s *Store) FindAlertByID(ctx context.Context, id string) (*vigil.Alert, error) {
	var a vigil.Alert
	if err := s.find(ctx, key(pAlert, id), "alert "+id, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// FindAlerts returns matching alerts, newest Raised first.
func (s *Store) FindAlerts(ctx context.Context, f vigil.AlertFilter) ([]*vigil.Alert, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	var out []*vigil.Alert
	err := scan(snap, []byte{pAlertRaised, 0}, true, func(k, _ []byte) (bool, error) {
		if len(k) < 10 {
			return false, vigil.Errorf(vigil.EINTERNAL, "corrupt alert index key")
		}
		var a vigil.Alert
		ok, err := s.getJSON(snap, key(pAlert, string(k[10:])), &a)
		if err != nil || !ok {
			return err == nil, err
		}
		if f.PatientID != "" && a.PatientID != f.PatientID {
			return true, nil
		}
		if len(f.States) > 0 && !slices.Contains(f.States, a.State) {
			return true, nil
		}
		out = append(out, &a)
		return len(out) < limit, nil
	})
	return out, err
}

// AddDeadLetter stores a message that could not be answered on the wire.
// It assigns a time-ordered ID when d.ID is empty.
func (s *Store) AddDeadLetter(ctx context.Context, d *vigil.DeadLetter) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if d.Time.IsZero() {
		d.Time = s.opts.Now().UTC()
	}
	if d.ID == "" {
		d.ID = timeID(d.Time)
	}
	b := s.db.NewBatch()
	if err := s.setJSON(b, key(pDeadLetter, d.ID), d); err != nil {
		b.Close()
		return err
	}
	if err := s.commitSync(b); err != nil {
		return err
	}
	s.deadLetters.Add(1)
	return nil
}

// FindDeadLetterByID returns ENOTFOUND if there is no such dead letter.
func (s *Store) FindDeadLetterByID(ctx context.Context, id string) (*vigil.DeadLetter, error) {
	var d vigil.DeadLetter
	if err := s.find(ctx, key(pDeadLetter, id), "dead letter "+id, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// idSeq orders ids made in the same nanosecond; it starts at a random
// value so that ids of different processes rarely collide.
var idSeq = func() *atomic.Uint32 {
	var b [4]byte
	rand.Read(b[:])
	var s atomic.Uint32
	s.Store(binary.BigEndian.Uint32(b[:]))
	return &s
}()

// timeID returns a 24-character hex id that sorts by t, and by creation
// order for equal t.
func timeID(t time.Time) string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixNano()))
	binary.BigEndian.PutUint32(b[8:], idSeq.Add(1))
	return hex.EncodeToString(b[:])
}

// FindDeadLetters returns matching dead letters, newest first.
func (s *Store) FindDeadLetters(ctx context.Context, f vigil.DeadLetterFilter) ([]*vigil.DeadLetter, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	var out []*vigil.DeadLetter
	err := scan(s.db, prefixKey(pDeadLetter), true, func(_, v []byte) (bool, error) {
		var d vigil.DeadLetter
		if err := s.unmarshal(v, &d); err != nil {
			return false, err
		}
		if (f.DeviceID != "" && d.DeviceID != f.DeviceID) || (f.Reason != "" && d.Reason != f.Reason) {
			return true, nil
		}
		out = append(out, &d)
		return len(out) < limit, nil
	})
	return out, err
}

func (s *Store) DeleteDeadLetter(ctx context.Context, id string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if _, ok, err := get(s.db, key(pDeadLetter, id)); err != nil {
		return err
	} else if !ok {
		return vigil.Errorf(vigil.ENOTFOUND, "dead letter %s not found", id)
	}
	b := s.db.NewBatch()
	b.Delete(key(pDeadLetter, id), nil)
	if err := s.commitSync(b); err != nil {
		return err
	}
	s.deadLetters.Add(-1)
	return nil
}

// Mapping template keys: g/{id}/{be64 version} → mapping JSON.
const pMapping = 'g'

func mappingKey(id string, version int) []byte {
	return append(prefixKey(pMapping, id), be64(int64(version))...)
}

// SaveMapping stores the next version of a mapping.
func (s *Store) SaveMapping(ctx context.Context, m *vigil.Mapping) error {
	if !vigil.ValidID(m.ID) {
		return vigil.FieldErrorf("id", "invalid", "mapping id %q: use letters, digits and '-', up to 48 characters", m.ID)
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	latest := 0
	if err := scan(s.db, prefixKey(pMapping, m.ID), true, func(k, _ []byte) (bool, error) {
		latest = int(unbe64(k[len(k)-8:]))
		return false, nil
	}); err != nil {
		return err
	}
	m.Version = latest + 1
	m.Saved = s.opts.Now().UTC()
	b := s.db.NewBatch()
	if err := s.setJSON(b, mappingKey(m.ID, m.Version), m); err != nil {
		b.Close()
		return err
	}
	return s.commitSync(b)
}

// FindMapping returns version (0: the latest) of a mapping.
func (s *Store) FindMapping(ctx context.Context, id string, version int) (*vigil.Mapping, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var m *vigil.Mapping
	if version > 0 {
		var x vigil.Mapping
		if err := s.find(ctx, mappingKey(id, version), "mapping "+id, &x); err != nil {
			return nil, err
		}
		return &x, nil
	}
	err := scan(s.db, prefixKey(pMapping, id), true, func(_, v []byte) (bool, error) {
		m = &vigil.Mapping{}
		return false, s.unmarshal(v, m)
	})
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "mapping %s not found", id)
	}
	return m, nil
}

// FindMappings returns the latest version of each mapping, by id.
func (s *Store) FindMappings(ctx context.Context) ([]*vigil.Mapping, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	byID := map[string]*vigil.Mapping{}
	var order []string
	err := scan(s.db, prefixKey(pMapping), false, func(_, v []byte) (bool, error) {
		var m vigil.Mapping
		if err := s.unmarshal(v, &m); err != nil {
			return false, err
		}
		if _, ok := byID[m.ID]; !ok {
			order = append(order, m.ID)
		}
		byID[m.ID] = &m // later keys are later versions
		return true, nil
	})
	out := make([]*vigil.Mapping, 0, len(order))
	for _, id := range order {
		out = append(out, byID[id])
	}
	return out, err
}

// Rule keys: r/{id}/{be64 version} → rule JSON.
const pRule = 'r'

func ruleKey(id string, version int) []byte {
	return append(prefixKey(pRule, id), be64(int64(version))...)
}

// SaveRule stores the next version of a rule.
func (s *Store) SaveRule(ctx context.Context, r *vigil.Rule) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if !vigil.ValidID(r.ID) {
		return vigil.FieldErrorf("id", "invalid", "rule id %q: use letters, digits and '-', up to 48 characters", r.ID)
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	latest := 0
	if err := scan(s.db, prefixKey(pRule, r.ID), true, func(k, _ []byte) (bool, error) {
		latest = int(unbe64(k[len(k)-8:]))
		return false, nil
	}); err != nil {
		return err
	}
	r.Version = latest + 1
	r.Saved = s.opts.Now().UTC()
	b := s.db.NewBatch()
	if err := s.setJSON(b, ruleKey(r.ID, r.Version), r); err != nil {
		b.Close()
		return err
	}
	return s.commitSync(b)
}

// FindRule returns version (0: the latest) of a rule.
func (s *Store) FindRule(ctx context.Context, id string, version int) (*vigil.Rule, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if version > 0 {
		var x vigil.Rule
		if err := s.find(ctx, ruleKey(id, version), "rule "+id, &x); err != nil {
			return nil, err
		}
		return &x, nil
	}
	var r *vigil.Rule
	err := scan(s.db, prefixKey(pRule, id), true, func(_, v []byte) (bool, error) {
		r = &vigil.Rule{}
		return false, s.unmarshal(v, r)
	})
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "rule %s not found", id)
	}
	return r, nil
}

// FindRules returns the latest version of each rule, by id.
func (s *Store) FindRules(ctx context.Context) ([]*vigil.Rule, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	byID := map[string]*vigil.Rule{}
	var order []string
	err := scan(s.db, prefixKey(pRule), false, func(_, v []byte) (bool, error) {
		var r vigil.Rule
		if err := s.unmarshal(v, &r); err != nil {
			return false, err
		}
		if _, ok := byID[r.ID]; !ok {
			order = append(order, r.ID)
		}
		byID[r.ID] = &r // later keys are later versions
		return true, nil
	})
	out := make([]*vigil.Rule, 0, len(order))
	for _, id := range order {
		out = append(out, byID[id])
	}
	return out, err
}

// RuleHistory returns every version of a rule, oldest first.
func (s *Store) RuleHistory(ctx context.Context, id string) ([]*vigil.Rule, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var out []*vigil.Rule
	err := scan(s.db, prefixKey(pRule, id), false, func(_, v []byte) (bool, error) {
		var r vigil.Rule
		if err := s.unmarshal(v, &r); err != nil {
			return false, err
		}
		out = append(out, &r)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "rule %s not found", id)
	}
	return out, nil
}

// Device event keys: e/{patient}/{be64 time ns}{device}\0{id} → event JSON;
// E/{device}/{id} → the e key (idempotency).
const (
	pEvent    = 'e'
	pEventKey = 'E'
)

func eventKey(ev *vigil.DeviceEvent) []byte {
	k := append(prefixKey(pEvent, ev.PatientID), be64(ev.Time.UnixNano())...)
	return append(append(append(k, ev.DeviceID...), 0), ev.ID...)
}

// AppendEvents stores device events durably, once per (device, id).
func (s *Store) AppendEvents(ctx context.Context, es []*vigil.DeviceEvent) ([]vigil.AppendResult, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	for i, ev := range es {
		if ev.DeviceID == "" || ev.ID == "" || ev.PatientID == "" || ev.Time.IsZero() {
			return nil, vigil.Errorf(vigil.EINVALID, "event %d lacks a device, id, patient or time", i)
		}
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	res := make([]vigil.AppendResult, len(es))
	b := s.db.NewBatch()
	seen := map[string]bool{}
	for i, ev := range es {
		dk := key(pEventKey, ev.DeviceID, ev.ID)
		_, closer, err := s.db.Get(dk)
		if err == nil {
			closer.Close()
		}
		if err == nil || seen[string(dk)] {
			res[i].Duplicate = true
			continue
		}
		seen[string(dk)] = true
		ek := eventKey(ev)
		if err := s.setJSON(b, ek, ev); err != nil {
			b.Close()
			return nil, err
		}
		if err := b.Set(dk, ek, nil); err != nil {
			b.Close()
			return nil, err
		}
	}
	if b.Empty() {
		b.Close()
		return res, nil
	}
	if err := s.commitSync(b); err != nil {
		return nil, err
	}
	return res, nil
}

// FindEvents returns a patient's events in [from, to), oldest first.
func (s *Store) FindEvents(ctx context.Context, patientID string, from, to time.Time) ([]*vigil.DeviceEvent, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var out []*vigil.DeviceEvent
	err := scan(s.db, prefixKey(pEvent, patientID), false, func(k, v []byte) (bool, error) {
		var ev vigil.DeviceEvent
		if err := s.unmarshal(v, &ev); err != nil {
			return false, err
		}
		if !ev.Time.Before(to) {
			return false, nil
		}
		if !ev.Time.Before(from) {
			out = append(out, &ev)
		}
		return true, nil
	})
	return out, err
}

// Review keys: v/{patient}/{be64 at ns}{review id} → review JSON.
const pReview = 'v'

// AddReview stores a clinician's review time.
func (s *Store) AddReview(ctx context.Context, r *vigil.Review) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if r.ID == "" || r.PatientID == "" || r.At.IsZero() {
		return vigil.Errorf(vigil.EINVALID, "a review needs an id, a patient and a time")
	}
	b := s.db.NewBatch()
	k := append(append(prefixKey(pReview, r.PatientID), be64(r.At.UnixNano())...), r.ID...)
	if err := s.setJSON(b, k, r); err != nil {
		b.Close()
		return err
	}
	return s.commitSync(b)
}

// FindReviews returns a patient's reviews in [from, to), oldest first.
func (s *Store) FindReviews(ctx context.Context, patientID string, from, to time.Time) ([]*vigil.Review, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var out []*vigil.Review
	err := scan(s.db, prefixKey(pReview, patientID), false, func(_, v []byte) (bool, error) {
		var r vigil.Review
		if err := s.unmarshal(v, &r); err != nil {
			return false, err
		}
		if !r.At.Before(to) {
			return false, nil
		}
		if !r.At.Before(from) {
			out = append(out, &r)
		}
		return true, nil
	})
	return out, err
}

// Audit keys: z/{be64 index} → audit record; Z/head → the signed tree head.
const (
	pAudit     = 'z'
	pAuditHead = 'Z'
)

func auditKey(i uint64) []byte { return append([]byte{pAudit, 0}, u64(i)...) }

// AppendAudit stores audit record index and the new tree head in one
// synced batch. It refuses an index that is already stored (the log is
// append-only).
func (s *Store) AppendAudit(ctx context.Context, index uint64, rec, head []byte) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if _, ok, err := get(s.db, auditKey(index)); err != nil {
		return storeErr(err)
	} else if ok {
		return vigil.Errorf(vigil.ECONFLICT, "audit record %d exists: the log is append-only", index)
	}
	b := s.db.NewBatch()
	if err := b.Set(auditKey(index), rec, nil); err != nil {
		b.Close()
		return err
	}
	if err := b.Set(key(pAuditHead, "head"), head, nil); err != nil {
		b.Close()
		return err
	}
	return s.commitSync(b)
}

// AuditHead returns the stored tree head (false when the log is empty).
func (s *Store) AuditHead(ctx context.Context) ([]byte, bool, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, false, err
	}
	b, ok, err := get(s.db, key(pAuditHead, "head"))
	return b, ok, storeErr(err)
}

// ScanAudit calls fn with every audit record from index from on, in key
// order, with the index its key holds.
func (s *Store) ScanAudit(ctx context.Context, from uint64, fn func(index uint64, rec []byte) error) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	return scan(s.db, []byte{pAudit, 0}, false, func(k, v []byte) (bool, error) {
		if len(k) != 10 {
			return false, vigil.Errorf(vigil.EINTERNAL, "corrupt audit key")
		}
		i := binary.BigEndian.Uint64(k[2:])
		if i < from {
			return true, nil
		}
		return true, fn(i, append([]byte(nil), v...))
	})
}

// pSubscription keys FHIR subscriptions: b/id → subscription JSON
// (sealed: endpoints and headers may hold secrets).
const pSubscription = 'b'

// SaveSubscription implements vigil.SubscriptionStore.
func (s *Store) SaveSubscription(ctx context.Context, sub *vigil.Subscription) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if !vigil.ValidID(sub.ID) {
		return vigil.FieldErrorf("id", "invalid", "subscription id %q is not valid", sub.ID)
	}
	b := s.db.NewBatch()
	if err := s.setJSON(b, key(pSubscription, sub.ID), sub); err != nil {
		b.Close()
		return err
	}
	return s.commitSync(b)
}

// DeleteSubscription implements vigil.SubscriptionStore.
func (s *Store) DeleteSubscription(ctx context.Context, id string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	b := s.db.NewBatch()
	if err := b.Delete(key(pSubscription, id), nil); err != nil {
		b.Close()
		return err
	}
	return s.commitSync(b)
}

// FindSubscriptions implements vigil.SubscriptionStore.
func (s *Store) FindSubscriptions(ctx context.Context) ([]*vigil.Subscription, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var out []*vigil.Subscription
	err := scan(s.db, prefixKey(pSubscription), false, func(_, v []byte) (bool, error) {
		var sub vigil.Subscription
		if err := s.unmarshal(v, &sub); err != nil {
			return false, err
		}
		out = append(out, &sub)
		return true, nil
	})
	return out, err
}
