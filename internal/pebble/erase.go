package pebble

import (
	"context"
	"encoding/binary"
	"encoding/json"

	"github.com/vigil-iomt/vigil"
)

// ErasureReport is vigil's.
type ErasureReport = vigil.ErasureReport

// ErasePatient removes everything the store holds about a patient — the
// registry entry, every reading (head samples, chunks, text values,
// origins, series records), alerts, device events, reviews, device
// assignments to them, their own login accounts and unsent change-feed
// entries — in one synced batch, then compacts the ranges so the bytes
// leave the disk too. What stays: devices (they belong to the hospital),
// the idempotency keys of their readings (device and reading ids, no
// values), dead letters (raw messages of a device; they expire after
// DeadLetterRetention) and the audit log (append-only; the caller adds a
// tombstone). ENOTFOUND for an unknown patient.
func (s *Store) ErasePatient(ctx context.Context, id string) (*ErasureReport, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if _, err := s.FindPatientByID(ctx, id); err != nil {
		return nil, err
	}
	rep := &ErasureReport{}
	b := s.db.NewBatch()
	del := func(k []byte) error { return b.Delete(k, nil) }
	delRange := func(prefix []byte) error { return b.DeleteRange(prefix, upperBound(prefix), nil) }
	var compact [][2][]byte
	fail := func(err error) (*ErasureReport, error) {
		b.Close()
		return nil, storeErr(err)
	}
	if err := del(key(pPatient, id)); err != nil {
		return fail(err)
	}
	// Series: their samples in every form, then the index.
	var sids []uint64
	var seriesKeys []seriesKey
	err := scan(s.db, prefixKey(pSeries, id), false, func(k, v []byte) (bool, error) {
		if len(v) == 8 {
			sids = append(sids, binary.BigEndian.Uint64(v))
		}
		return true, del(k)
	})
	if err != nil {
		return fail(err)
	}
	for _, sid := range sids {
		var rec seriesRecord
		if raw, closer, err := s.db.Get(append([]byte{pSeriesByID, 0}, u64(sid)...)); err == nil {
			json.Unmarshal(raw, &rec)
			closer.Close()
			seriesKeys = append(seriesKeys, seriesKey{Patient: rec.Patient, Code: rec.Code, Device: rec.Device, Method: rec.Method})
		}
		if err := del(append([]byte{pSeriesByID, 0}, u64(sid)...)); err != nil {
			return fail(err)
		}
		for _, p := range []byte{pHead, pChunk, pText, pOrigin} {
			prefix := append([]byte{p, 0}, u64(sid)...)
			if err := delRange(prefix); err != nil {
				return fail(err)
			}
			compact = append(compact, [2][]byte{prefix, upperBound(prefix)})
		}
	}
	rep.Series = len(sids)
	// Assignments (both indexes).
	err = scan(s.db, prefixKey(pPatAssign, id), false, func(k, _ []byte) (bool, error) {
		rest := k[len(prefixKey(pPatAssign, id)):] // {device}\0{be64 from}
		if i := len(rest) - 9; i > 0 && rest[i] == 0 {
			if err := del(append(prefixKey(pAssign, string(rest[:i])), rest[i+1:]...)); err != nil {
				return false, err
			}
		}
		rep.Assignments++
		return true, del(k)
	})
	if err != nil {
		return fail(err)
	}
	// Alerts: read each (sealed) to find the patient's.
	err = scan(s.db, []byte{pAlertRaised, 0}, false, func(k, _ []byte) (bool, error) {
		if len(k) < 10 {
			return true, nil
		}
		var a vigil.Alert
		ok, err := s.getJSON(s.db, key(pAlert, string(k[10:])), &a)
		if err != nil || !ok || a.PatientID != id {
			return err == nil, err
		}
		rep.Alerts++
		if err := del(key(pAlert, a.ID)); err != nil {
			return false, err
		}
		return true, del(k)
	})
	if err != nil {
		return fail(err)
	}
	// Device events (and their idempotency index), reviews.
	evPrefix := prefixKey(pEvent, id)
	err = scan(s.db, evPrefix, false, func(k, _ []byte) (bool, error) {
		rep.Events++
		if rest := k[len(evPrefix):]; len(rest) > 8 {
			if err := del(append([]byte{pEventKey, 0}, rest[8:]...)); err != nil {
				return false, err
			}
		}
		return true, del(k)
	})
	if err != nil {
		return fail(err)
	}
	err = scan(s.db, prefixKey(pReview, id), false, func(k, _ []byte) (bool, error) {
		rep.Reviews++
		return true, del(k)
	})
	if err != nil {
		return fail(err)
	}
	// The patient's own accounts.
	users, err := s.FindUsers(ctx)
	if err != nil {
		return fail(err)
	}
	for _, u := range users {
		if u.PatientID == id {
			rep.Users++
			if err := del(key(pUser, u.ID)); err != nil {
				return fail(err)
			}
		}
	}
	// Unsent change-feed entries about them.
	err = scan(s.db, []byte{pFeed, 0}, false, func(k, v []byte) (bool, error) {
		var r feedRecord
		if json.Unmarshal(v, &r) == nil && r.Patient == id {
			rep.Feed++
			return true, del(k)
		}
		return true, nil
	})
	if err != nil {
		return fail(err)
	}
	if err := s.commitSync(b); err != nil {
		return nil, err
	}
	s.mu.Lock()
	for _, k := range seriesKeys {
		delete(s.series, k)
	}
	s.mu.Unlock()
	// Compact what held the samples, so they leave the disk, not just the
	// key space; the rest is small and goes with the next compactions.
	for _, r := range compact {
		if err := s.db.Compact(ctx, r[0], r[1], true); err != nil {
			s.log.Warn("erasure: compaction of the removed samples failed; they go with later compactions", "err", err)
			break
		}
	}
	return rep, nil
}
