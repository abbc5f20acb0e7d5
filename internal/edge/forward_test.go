package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/edge"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

// openOutbox opens an embedded store with the outbox on.
func openOutbox(t *testing.T) *pebble.Store {
	t.Helper()
	o := pebble.DefaultOptions()
	o.Outbox, o.CompactInterval = true, -1
	st, err := pebble.Open(filepath.Join(t.TempDir(), "store"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// fill appends n heart-rate readings of device d from sequence from.
func fill(t *testing.T, st *pebble.Store, d string, from, n int) {
	t.Helper()
	t0 := time.Now().Add(-time.Hour)
	rs := make([]*vigil.Reading, n)
	for i := range rs {
		rs[i] = &vigil.Reading{DeviceID: d, ID: fmt.Sprint(from + i), PatientID: "p1", Time: t0.Add(time.Duration(from+i) * time.Second), Received: time.Now(),
			Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 70, Unit: "/min"}}}
	}
	if _, err := st.AppendReadings(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
}

// alarms records the forwarder's buffer alarms.
type alarms struct {
	mu     sync.Mutex
	got    []bool // buffer
	uplink []bool
}

func (a *alarms) notify(id string, active bool, _ string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id == "buffer" {
		a.got = append(a.got, active)
	} else {
		a.uplink = append(a.uplink, active)
	}
}

func (a *alarms) last() (bool, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.got) == 0 {
		return false, 0
	}
	return a.got[len(a.got)-1], len(a.got)
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// With the uplink down and policy refuse, the buffer fills to its bound,
// the alarm goes off at 80 %, and then new readings are refused with
// EFULL (devices keep them); nothing in the buffer is removed.
func TestBufferRefusesWhenFull(t *testing.T) {
	st := openOutbox(t)
	var al alarms
	f, err := edge.StartForwarder(edge.ForwarderOptions{Upstream: "https://127.0.0.1:1", ID: "e1", Store: st, MaxBytes: 50_000,
		Poll: 10 * time.Millisecond, Backoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Notify: al.notify, DownNotice: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for f.Admit() == nil {
		fill(t, st, "d1", n, 10)
		n += 10
		if n > 10_000 {
			t.Fatal("the buffer never filled")
		}
	}
	err = f.Admit()
	if vigil.ErrorCode(err) != vigil.EFULL || vigil.Retryable(err) != true {
		t.Fatalf("admit when full: %v", err)
	}
	waitUntil(t, "the buffer alarm", func() bool { a, _ := al.last(); return a })
	count, _ := st.OutboxSize()
	if int(count) != n {
		t.Fatalf("buffer holds %d readings, %d were stored", count, n)
	}
	if s := f.Status(); s.Evicted != 0 || s.Connected {
		t.Fatalf("status: %+v", s)
	}
	// The link has been down long enough for the people at the edge to be told.
	waitUntil(t, "the uplink notice", func() bool {
		al.mu.Lock()
		defer al.mu.Unlock()
		return len(al.uplink) == 1 && al.uplink[0]
	})
}

// With policy drop-oldest the edge keeps taking readings; the oldest
// unforwarded ones go, down to 90 % of the bound, each eviction listed in
// a dead letter with its devices and times.
func TestBufferDropsOldestAndSaysSo(t *testing.T) {
	st := openOutbox(t)
	var al alarms
	f, err := edge.StartForwarder(edge.ForwarderOptions{Upstream: "https://127.0.0.1:1", ID: "e1", Store: st, MaxBytes: 50_000, Policy: edge.PolicyDropOldest,
		Poll: 10 * time.Millisecond, Backoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Notify: al.notify, DownNotice: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fill(t, st, "d1", 0, 400)
	fill(t, st, "d2", 0, 100)
	if err := f.Admit(); err != nil {
		t.Fatalf("drop-oldest refuses: %v", err)
	}
	_, size := st.OutboxSize()
	if size <= 50_000 {
		t.Fatalf("test needs more than the bound in the buffer: %d bytes", size)
	}
	waitUntil(t, "the eviction", func() bool { _, b := st.OutboxSize(); return b <= 45_000 })
	count, _ := st.OutboxSize()
	s := f.Status()
	if s.Evicted == 0 || s.Evicted+count != 500 {
		t.Fatalf("evicted %d, left %d, of 500", s.Evicted, count)
	}
	// The oldest went: what is left is the newest.
	left, err := st.OutboxAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if left[len(left)-1].Reading.DeviceID != "d2" || left[len(left)-1].Reading.ID != "99" {
		t.Fatalf("newest reading evicted: %+v", left[len(left)-1].Reading)
	}
	ds, err := st.FindDeadLetters(context.Background(), vigil.DeadLetterFilter{Reason: "edge-buffer-full"})
	if err != nil {
		t.Fatal(err)
	}
	evicted := 0
	for _, d := range ds {
		var spans []struct {
			Device   string
			Readings int
		}
		if err := json.Unmarshal(d.Payload, &spans); err != nil || d.Source != "edge-evicted" {
			t.Fatalf("dead letter: %+v %v", d, err)
		}
		for _, s := range spans {
			evicted += s.Readings
		}
	}
	if evicted != int(s.Evicted) {
		t.Fatalf("dead letters list %d evicted readings, the forwarder %d", evicted, s.Evicted)
	}
	if a, _ := al.last(); !a {
		t.Fatal("no buffer alarm")
	}
}
