package pebble

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/storetest"
)

// crashCopy writes 200 readings in 200 synced commits to a store, then
// copies its files while it is still open (what a power cut leaves: every
// synced write) and returns the copy and the newest log's path in it.
func crashCopy(t *testing.T) (dir, wal string) {
	t.Helper()
	src := t.TempDir()
	o := DefaultOptions()
	o.CompactInterval = -1
	s, err := Open(src, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 200 {
		if _, err := s.AppendReadings(ctx, []*vigil.Reading{hrReading("d1", fmt.Sprint(i), storetest.T0.Add(time.Duration(i)*time.Second), 60)}); err != nil {
			t.Fatal(err)
		}
	}
	dir = t.TempDir()
	entries, _ := os.ReadDir(src)
	for _, e := range entries {
		if e.IsDir() || e.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600)
	}
	tail, err := checkWAL(dir)
	if err != nil || tail == nil || tail.corrupt || tail.ignored != 0 {
		t.Fatalf("WAL of the crashed copy: %+v %v", tail, err)
	}
	return dir, filepath.Join(dir, tail.file)
}

func countReadings(t *testing.T, s *Store) int {
	t.Helper()
	obs, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(obs)
}

// A write torn by the crash (a partial record after the last whole one)
// is dropped on recovery, every synced reading is there, and the store
// says what it did.
func TestTornWALTail(t *testing.T) {
	dir, wal := crashCopy(t)
	f, err := os.OpenFile(wal, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := make([]byte, 300)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range torn {
		torn[i] = byte(rng.Uint32())
	}
	f.Write(torn)
	f.Close()

	var logs bytes.Buffer
	o := DefaultOptions()
	o.CompactInterval = -1
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("a torn tail must recover: %v", err)
	}
	defer s.Close()
	if n := countReadings(t, s); n != 200 {
		t.Fatalf("%d readings after recovery, want all 200", n)
	}
	if !strings.Contains(logs.String(), "incomplete record") || !strings.Contains(logs.String(), "ignored_bytes=") {
		t.Fatalf("recovery not reported: %s", logs.String())
	}
	// And the store takes writes again.
	if _, err := s.AppendReadings(ctx, []*vigil.Reading{hrReading("d1", "after", storetest.T0.Add(time.Hour), 61)}); err != nil {
		t.Fatal(err)
	}
}

// Damage in the middle of the log, with whole records after it, is not a
// torn write: the store refuses to open and says what to do.
func TestCorruptWALMiddle(t *testing.T) {
	dir, wal := crashCopy(t)
	b, err := os.ReadFile(wal)
	if err != nil {
		t.Fatal(err)
	}
	tail, _ := checkWAL(dir)
	mid := tail.good / 2
	for i := mid; i < mid+16; i++ {
		b[i] ^= 0xff
	}
	os.WriteFile(wal, b, 0o600)
	o := DefaultOptions()
	o.CompactInterval = -1
	s, err := Open(dir, o)
	if err == nil {
		s.Close()
		t.Fatal("a store with a damaged log opened: it would silently drop acknowledged readings")
	}
	if !strings.Contains(err.Error(), "disk damage") || !strings.Contains(err.Error(), "backup") || !strings.Contains(err.Error(), "vigil store salvage") {
		t.Fatalf("error does not explain: %v", err)
	}

	// Salvage keeps what precedes the damage (after copying the log).
	sv, err := SalvageWAL(dir, time.Now())
	if err != nil || sv == nil || sv.Kept >= int64(len(b)) || sv.Kept+sv.Dropped != int64(len(b)) {
		t.Fatalf("salvage: %+v %v", sv, err)
	}
	if c, err := os.ReadFile(sv.Copy); err != nil || !bytes.Equal(c, b) {
		t.Fatalf("the damaged log was not copied whole: %v", err)
	}
	s, err = Open(dir, o)
	if err != nil {
		t.Fatalf("after salvage: %v", err)
	}
	defer s.Close()
	if n := countReadings(t, s); n == 0 || n >= 200 {
		t.Fatalf("%d readings after salvage: want those before the damage", n)
	}
	if again, err := SalvageWAL(dir, time.Now()); again != nil || err != nil {
		t.Fatalf("salvage of a sound store: %+v %v", again, err)
	}
}
