package pebble

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// A store records its format; a store written before formats were
// recorded opens as format 1, is upgraded and gets the record; a store of
// a newer format is refused with what to do, and left as it was.
func TestFormatVersion(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	o := DefaultOptions()
	o.CompactInterval = -1
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := getFormat(t, s.db); got != "2" {
		t.Fatalf("format %q", got)
	}
	// As a store from before the record.
	if err := s.db.Delete(formatKey, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(dir, o); err != nil {
		t.Fatal(err)
	}
	if got := getFormat(t, s.db); got != "2" {
		t.Fatalf("format after opening an unversioned store %q", got)
	}
	// As a store a newer Vigil wrote.
	if err := s.db.Set(formatKey, []byte("3"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(dir, o)
	if err == nil || !strings.Contains(err.Error(), "newer Vigil (store format 3; this one reads formats up to 2)") {
		t.Fatalf("opening a newer store: %v", err)
	}
}

func getFormat(t *testing.T, db *pebble.DB) string {
	t.Helper()
	v, c, err := db.Get(formatKey)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return string(v)
}
