package backup

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A full backup and an incremental on it restore, in order, to the second
// snapshot exactly: the unchanged files come from the full one, a file
// gone since (a compacted sstable) is not left behind.
func TestChainRoundTrip(t *testing.T) {
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	s1, s2 := t.TempDir(), t.TempDir()
	writeTree(t, s1, map[string]string{"store/000001.sst": "one", "store/000002.sst": "two", "store/MANIFEST-1": "m1", "audit-key": "k"})
	writeTree(t, s2, map[string]string{"store/000001.sst": "one", "store/000003.sst": "three", "store/MANIFEST-1": "m2", "audit-key": "k"})
	var full, inc bytes.Buffer
	m1, err := Write(&full, s1, nil, "b1", "test", now)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Write(&inc, s2, m1, "b2", "test", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	here := 0
	for _, f := range m2.Files {
		if f.In == "" {
			here++
		}
	}
	if here != 2 || m2.Base != "b1" || strings.Join(m2.Chain, ",") != "b1,b2" {
		t.Fatalf("incremental manifest: %+v", m2)
	}
	to := filepath.Join(t.TempDir(), "data")
	if _, err := Restore([]io.Reader{bytes.NewReader(full.Bytes()), bytes.NewReader(inc.Bytes())}, to); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"store/000001.sst": "one", "store/000003.sst": "three", "store/MANIFEST-1": "m2", "audit-key": "k"} {
		if b, err := os.ReadFile(filepath.Join(to, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q %v", name, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(to, "store/000002.sst")); !os.IsNotExist(err) {
		t.Error("a file of the earlier snapshot only was left behind")
	}
	// The incremental alone, or before its base, does not restore.
	if _, err := Restore([]io.Reader{bytes.NewReader(inc.Bytes())}, filepath.Join(t.TempDir(), "x")); err == nil {
		t.Error("an incremental restored without its base")
	}
}

// Damage, a missing manifest, and an entry that would escape the target
// are refused.
func TestReadRefuses(t *testing.T) {
	s := t.TempDir()
	writeTree(t, s, map[string]string{"a": strings.Repeat("x", 4096)})
	var b bytes.Buffer
	if _, err := Write(&b, s, nil, "b1", "", time.Now()); err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Clone(b.Bytes())
	damaged[1024] ^= 1 // inside the file's bytes
	if _, err := Read(bytes.NewReader(damaged), nil); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("damaged: %v", err)
	}
	if _, err := Read(bytes.NewReader(b.Bytes()[:3000]), nil); err == nil {
		t.Error("a truncated backup read")
	}
	var evil bytes.Buffer
	tw := tar.NewWriter(&evil)
	tw.WriteHeader(&tar.Header{Name: "../outside", Mode: 0o600, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	if _, err := Read(&evil, nil); err == nil || !strings.Contains(err.Error(), "not a plain relative file") {
		t.Errorf("path escape: %v", err)
	}
}
