package seal

import (
	"bytes"
	"strings"
	"testing"
)

func TestSealOpenRotate(t *testing.T) {
	dir := t.TempDir()
	mk, err := MasterKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := NewLocalKey(mk)
	s, err := Open(dir, w)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Seal([]byte(`{"family":"Doe"}`))
	if err != nil || !Sealed(a) || bytes.Contains(a, []byte("Doe")) {
		t.Fatalf("sealed: %q %v", a, err)
	}
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	b, _ := s.Seal([]byte(`{"family":"Roe"}`))
	s2, err := Open(dir, w) // a restart
	if err != nil {
		t.Fatal(err)
	}
	for sealed, want := range map[string]string{string(a): "Doe", string(b): "Roe"} {
		got, err := s2.Open([]byte(sealed))
		if err != nil || !strings.Contains(string(got), want) {
			t.Fatalf("open: %q %v", got, err)
		}
	}
	if got, err := s2.Open([]byte(`{"plain":true}`)); err != nil || string(got) != `{"plain":true}` {
		t.Fatalf("plain value: %q %v", got, err)
	}
	tampered := append([]byte(nil), a...)
	tampered[len(tampered)-1] ^= 1
	if _, err := s2.Open(tampered); err == nil {
		t.Fatal("a tampered value opened")
	}
	// A sealed value is one allocation (every stored sample is sealed).
	hr := []byte("72 /min")
	if n := testing.AllocsPerRun(100, func() { s2.Seal(hr) }); n > 1 {
		t.Errorf("Seal: %v allocations, want 1", n)
	}
	other, _ := NewLocalKey(bytes.Repeat([]byte{7}, 32))
	if _, err := Open(dir, other); err == nil {
		t.Fatal("data keys opened with another master key")
	}
}
