package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil/internal/pebble"
)

// memStore is an audit store a test can tamper with.
type memStore struct {
	recs map[uint64][]byte
	head []byte
}

func (m *memStore) AppendAudit(_ context.Context, i uint64, rec, head []byte) error {
	if _, ok := m.recs[i]; ok {
		return fmt.Errorf("exists")
	}
	m.recs[i], m.head = rec, head
	return nil
}
func (m *memStore) AuditHead(context.Context) ([]byte, bool, error) {
	return m.head, m.head != nil, nil
}
func (m *memStore) ScanAudit(_ context.Context, from uint64, fn func(uint64, []byte) error) error {
	var ks []uint64
	for k := range m.recs {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	for _, k := range ks {
		if k >= from {
			if err := fn(k, m.recs[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

func filled(t *testing.T, n int) (*memStore, ed25519.PrivateKey) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	s := &memStore{recs: map[uint64][]byte{}}
	l, err := Open(context.Background(), s, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := l.Record(context.Background(), Entry{Actor: "nurse1", Role: "nurse", Action: "GET /fhir/R4/Observation", Patient: fmt.Sprintf("p%d", i%3), Outcome: Success}); err != nil {
			t.Fatal(err)
		}
	}
	return s, key
}

func verify(t *testing.T, s Store, key ed25519.PrivateKey) *Report {
	t.Helper()
	rep, err := Verify(context.Background(), s, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestVerifyFindsTampering(t *testing.T) {
	s, key := filled(t, 10)
	if rep := verify(t, s, key); !rep.OK || rep.Records != 10 || rep.Head.Size != 10 {
		t.Fatalf("clean log: %+v", rep)
	}
	at := func(rep *Report) int64 {
		if rep.At == nil {
			return -1
		}
		return *rep.At
	}
	cases := []struct {
		name   string
		tamper func(m *memStore)
		at     int64
		want   string
	}{
		{"edited", func(m *memStore) {
			m.recs[4] = []byte(strings.Replace(string(m.recs[4]), `"actor":"nurse1"`, `"actor":"nurse2"`, 1))
		}, 4, "record 4 does not match"},
		{"deleted", func(m *memStore) { delete(m.recs, 6) }, 6, "record 6 is missing"},
		{"reordered", func(m *memStore) { m.recs[2], m.recs[3] = m.recs[3], m.recs[2] }, 2, "reordered"},
		{"truncated", func(m *memStore) { delete(m.recs, 9); delete(m.recs, 8) }, 8, "truncated after record 7"},
		{"rewritten with roots", func(m *memStore) {
			// Rewrite record 5 and every root after it consistently: only
			// the signed head can tell.
			var recs []record
			for i := range uint64(10) {
				var r record
				json.Unmarshal(m.recs[i], &r)
				recs = append(recs, r)
			}
			recs[5].Entry = json.RawMessage(strings.Replace(string(recs[5].Entry), `"outcome":"success"`, `"outcome":"denied"`, 1))
			rng := factory().NewEmptyRange(0)
			for i := range recs {
				rng.Append(hasher.HashLeaf(recs[i].Entry), nil)
				root, _ := rng.GetRootHash(nil)
				recs[i].Root = fmt.Sprintf("%x", root)
				m.recs[uint64(i)], _ = json.Marshal(recs[i])
			}
		}, -1, "rewritten"},
		{"forged head", func(m *memStore) {
			var h Head
			json.Unmarshal(m.head, &h)
			h.Size = 12
			m.head, _ = json.Marshal(h)
		}, -1, "signature does not verify"},
	}
	for _, c := range cases {
		s, key := filled(t, 10)
		c.tamper(s)
		rep := verify(t, s, key)
		if rep.OK || !strings.Contains(rep.Problem, c.want) || at(rep) != c.at {
			t.Errorf("%s: %+v (at %d), want %q at %d", c.name, rep, at(rep), c.want, c.at)
		}
	}
}

// On the embedded store: appends survive a restart and the log resumes.
func TestPebbleResume(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key, err := LoadOrCreateKey(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	open := func() *pebble.Store {
		o := pebble.DefaultOptions()
		o.CompactInterval = -1
		s, err := pebble.Open(filepath.Join(dir, "db"), o)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	l, err := Open(ctx, s, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := l.Record(ctx, Entry{Actor: "admin", Action: "login", Outcome: Success, Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = open()
	defer s.Close()
	key2, _ := LoadOrCreateKey(filepath.Join(dir, KeyFile))
	l, err = Open(ctx, s, key2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ctx, Entry{Actor: "x", Action: "login", Outcome: Failure}); err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(filepath.Join(dir, PubKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(ctx, s, pub)
	if err != nil || !rep.OK || rep.Records != 4 {
		t.Fatalf("after restart: %+v %v", rep, err)
	}
	if err := s.AppendAudit(ctx, 2, []byte(`{}`), []byte(`{}`)); err == nil {
		t.Fatal("overwrote record 2")
	}
}
