package pebble

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// FormatVersion is the on-disk layout this code writes (docs/formats/
// pebble.md), kept under m/format. A store written before versions were
// recorded is version 1. Open migrates an older store forward, one
// version at a time (migrations[v] takes version v to v+1, in one synced
// batch with the new version number), and refuses a newer one.
//
// Version 2 remembers reading ids ending in a number in runs (j keys)
// instead of a k key each; a version 1 store's k keys are looked up until
// they expire.
const FormatVersion = 2

// migrations[v] upgrades a store of version v to v+1.
var migrations = map[int]func(s *Store, b *pebble.Batch) error{
	1: func(s *Store, b *pebble.Batch) error {
		// Note when the k keys stopped growing, if there are any.
		var any bool
		err := scan(s.db, prefixKey(pDedup), false, func(_, _ []byte) (bool, error) {
			any = true
			return false, nil
		})
		if err != nil || !any {
			return err
		}
		return b.Set(legacyIDsKey, be64(s.opts.Now().UnixMilli()), nil)
	},
}

var (
	formatKey = key(pMeta, "format")
	// legacyIDsKey holds when a store with k keys of ids now kept in runs
	// was upgraded to version 2 (Unix ms).
	legacyIDsKey = key(pMeta, "legacy-ids")
)

// loadLegacyIDs sets s.legacyIDsUntil: the k keys received before the
// upgrade expire DedupRetention after it, rounded up to the next day,
// when Compact runs.
func (s *Store) loadLegacyIDs() error {
	v, ok, err := get(s.db, legacyIDsKey)
	if err != nil || !ok || len(v) != 8 {
		return err
	}
	s.legacyIDsUntil = unbe64(v) + (s.opts.DedupRetention + 48*time.Hour).Milliseconds()
	return nil
}

// checkFormat reads the store's format version, refuses a newer one,
// migrates an older one and records the current one.
func (s *Store) checkFormat() error {
	v, recorded := 1, false
	raw, closer, err := s.db.Get(formatKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return err
	default:
		recorded = true
		text := string(raw)
		closer.Close()
		if v, err = strconv.Atoi(text); err != nil {
			return fmt.Errorf("the store's format version %q is not a number: the store is damaged", text)
		}
	}
	if v > FormatVersion {
		return fmt.Errorf("this data directory was written by a newer Vigil (store format %d; this one reads formats up to %d): run that version, or restore a backup this version made (vigil version shows the formats)", v, FormatVersion)
	}
	for ; v < FormatVersion; v++ {
		b := s.db.NewBatch()
		if err := migrations[v](s, b); err != nil {
			b.Close()
			return fmt.Errorf("upgrade the store from format %d to %d: %w (nothing was changed)", v, v+1, err)
		}
		if err := b.Set(formatKey, []byte(strconv.Itoa(v+1)), nil); err != nil {
			b.Close()
			return err
		}
		if err := b.Commit(pebble.Sync); err != nil {
			return err
		}
		s.log.Info("store upgraded", "from_format", v, "to_format", v+1)
	}
	if !recorded {
		return s.db.Set(formatKey, []byte(strconv.Itoa(FormatVersion)), pebble.Sync)
	}
	return nil
}
