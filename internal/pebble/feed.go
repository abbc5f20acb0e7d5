package pebble

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigil-iomt/vigil"
)

// The change feed (Options.ChangeFeed) is a durable, ordered log of what
// was stored — each new reading, each alert saved — written in the same
// batch as the data, so an outbound consumer (the EHR sync) misses
// nothing that was acknowledged, even across a crash. Keys are
// q/{sequence, 8 bytes big-endian} → feedRecord JSON (ids only, no
// values). The consumer deletes what it has handled (TrimFeed); it reads
// from the start each time, since entries can commit out of order.

const pFeed = 'q'

type feedRecord struct {
	Kind     string `json:"k"` // "r" reading, "a" alert
	Device   string `json:"d,omitempty"`
	Reading  string `json:"i,omitempty"`
	Patient  string `json:"p"`
	Time     int64  `json:"t,omitempty"`  // device time, Unix ms
	Received int64  `json:"rv,omitempty"` // Unix ms
	Alert    string `json:"a,omitempty"`
}

func feedKey(seq uint64) []byte {
	k := make([]byte, 10)
	k[0] = pFeed
	binary.BigEndian.PutUint64(k[2:], seq)
	return k
}

// loadFeed finds the next sequence number.
func (s *Store) loadFeed() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pFeed, 0}, UpperBound: []byte{pFeed, 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	if it.Last() && len(it.Key()) == 10 {
		s.feedSeq.Store(binary.BigEndian.Uint64(it.Key()[2:]) + 1)
	} else {
		s.feedSeq.Store(1)
	}
	return nil
}

func (s *Store) feedValue(rec feedRecord) (key, value []byte) {
	v, _ := json.Marshal(rec)
	return feedKey(s.feedSeq.Add(1) - 1), v
}

// FeedAfter returns up to n change-feed entries with a sequence above
// after, oldest first.
func (s *Store) FeedAfter(ctx context.Context, after uint64, n int) ([]vigil.FeedEntry, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var out []vigil.FeedEntry
	err := scan(s.db, []byte{pFeed, 0}, false, func(k, v []byte) (bool, error) {
		seq := binary.BigEndian.Uint64(k[2:])
		if seq <= after {
			return true, nil
		}
		var r feedRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return false, vigil.Errorf(vigil.EINTERNAL, "corrupt change-feed entry %d: %v", seq, err)
		}
		e := vigil.FeedEntry{Seq: seq, PatientID: r.Patient, DeviceID: r.Device, ReadingID: r.Reading, AlertID: r.Alert}
		switch r.Kind {
		case "r":
			e.Kind = vigil.FeedReading
			e.Time, e.Received = time.UnixMilli(r.Time).UTC(), time.UnixMilli(r.Received).UTC()
		case "a":
			e.Kind = vigil.FeedAlert
		}
		out = append(out, e)
		return len(out) < n, nil
	})
	return out, err
}

// TrimFeed deletes the given entries (those the consumer handled). Point
// deletes, not a range: an entry with a lower number may commit after a
// higher one was read, and must survive until it is handled.
func (s *Store) TrimFeed(ctx context.Context, seqs []uint64) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	b := s.db.NewBatch()
	for _, seq := range seqs {
		if err := b.Delete(feedKey(seq), nil); err != nil {
			b.Close()
			return err
		}
	}
	return s.commitSync(b)
}
