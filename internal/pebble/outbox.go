package pebble

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigil-iomt/vigil"
)

// The outbox (Options.Outbox) is an edge gateway's store-and-forward
// buffer: every new reading, whole and normalized, written in the same
// synced batch as the reading itself, so a reading a device was told is
// stored is also one the edge will forward. Keys are f/{sequence, 8 bytes
// big-endian} → the reading's JSON (sealed like the readings). The
// forwarder (internal/edge) deletes entries only once the upstream server
// has acknowledged them. Sequence order is commit order, because the
// ingest pipeline commits one batch at a time; each device's readings
// therefore leave in the order they arrived.

const pOutbox = 'f' // "forward" ('o' holds sample origins)

// outbox counts what the buffer holds.
type outbox struct {
	seq   atomic.Uint64 // next sequence
	count atomic.Int64
	bytes atomic.Int64
}

func outboxKey(seq uint64) []byte {
	k := make([]byte, 10)
	k[0] = pOutbox
	binary.BigEndian.PutUint64(k[2:], seq)
	return k
}

// loadOutbox finds the next sequence number and counts the entries.
func (s *Store) loadOutbox() error {
	s.outbox.seq.Store(1)
	return scan(s.db, prefixKey(pOutbox), false, func(k, v []byte) (bool, error) {
		if len(k) == 10 {
			s.outbox.seq.Store(binary.BigEndian.Uint64(k[2:]) + 1)
			s.outbox.count.Add(1)
			s.outbox.bytes.Add(int64(len(v)))
		}
		return true, nil
	})
}

// outboxValue is the key and sealed value of r's outbox entry.
func (s *Store) outboxValue(r *vigil.Reading) (key, value []byte, err error) {
	v, _ := json.Marshal(r)
	if v, err = s.sealValue(v); err != nil {
		return nil, nil, err
	}
	return outboxKey(s.outbox.seq.Add(1) - 1), v, nil
}

// OutboxEntry is one reading waiting to be forwarded.
type OutboxEntry struct {
	Seq     uint64
	Reading *vigil.Reading
	Size    int // bytes it takes in the buffer
}

// OutboxAfter returns up to n outbox entries with a sequence above after,
// oldest first.
func (s *Store) OutboxAfter(ctx context.Context, after uint64, n int) ([]OutboxEntry, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var out []OutboxEntry
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: outboxKey(after + 1), UpperBound: []byte{pOutbox, 1}})
	if err != nil {
		return nil, storeErr(err)
	}
	defer it.Close()
	for ok := it.First(); ok && len(out) < n; ok = it.Next() {
		k := it.Key()
		if len(k) != 10 {
			continue
		}
		seq := binary.BigEndian.Uint64(k[2:])
		v, err := s.openValue(it.Value())
		if err != nil {
			return nil, err
		}
		var r vigil.Reading
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, vigil.Errorf(vigil.EINTERNAL, "corrupt outbox entry %d: %v", seq, err)
		}
		out = append(out, OutboxEntry{Seq: seq, Reading: &r, Size: len(it.Value())})
	}
	return out, storeErr(it.Error())
}

// OutboxDelete removes forwarded (or evicted) entries, synced. The sizes
// are those OutboxAfter reported, for the buffer's byte count.
func (s *Store) OutboxDelete(ctx context.Context, es []OutboxEntry) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	b := s.db.NewBatch()
	var size int64
	for _, e := range es {
		if err := b.Delete(outboxKey(e.Seq), nil); err != nil {
			b.Close()
			return storeErr(err)
		}
		size += int64(e.Size)
	}
	if err := s.commitSync(b); err != nil {
		return err
	}
	s.outbox.count.Add(-int64(len(es)))
	s.outbox.bytes.Add(-size)
	return nil
}

// OutboxSize is how many readings the outbox holds and their bytes.
func (s *Store) OutboxSize() (count, bytes int64) {
	return s.outbox.count.Load(), s.outbox.bytes.Load()
}
