package netlimit

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLimitsAndSlowClients(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Wrap(raw, "test", Limits{Total: 2, PerAddr: 1}, m) // loopback: only the total applies
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Two are held (the per-address cap does not apply to loopback); the
	// third is past the total and closed at once.
	c1, c2, c3 := dial(), dial(), dial()
	s1, s2 := <-accepted, <-accepted
	c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c3.Read(make([]byte, 1)); err != io.EOF && !strings.Contains(errString(err), "reset") {
		t.Fatalf("third connection from one address: %v, want closed", err)
	}
	if v := testutil.ToFloat64(m.refused.WithLabelValues("test", "total")); v != 1 {
		t.Fatalf("refused over the total: %v", v)
	}
	if v := testutil.ToFloat64(m.open.WithLabelValues("test")); v != 2 {
		t.Fatalf("open: %v", v)
	}
	// Closing one makes room again.
	s1.Close()
	c1.Close()
	c4 := dial()
	s4 := <-accepted
	// A client silent past its read deadline is counted as slow, once.
	s4.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	s4.Read(make([]byte, 1))
	s4.Read(make([]byte, 1))
	if v := testutil.ToFloat64(m.slow.WithLabelValues("test")); v != 1 {
		t.Fatalf("slow clients: %v", v)
	}
	for _, c := range []net.Conn{c2, c4, s2, s4} {
		c.Close()
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestPerAddress(t *testing.T) {
	l := &listener{lim: Limits{Total: 100, PerAddr: 2}, byAddr: map[string]int{}}
	for i, want := range []string{"", "", "per-address"} {
		if got := l.admit("10.0.0.7"); got != want {
			t.Fatalf("connection %d from 10.0.0.7: %q, want %q", i+1, got, want)
		}
	}
	if got := l.admit("10.0.0.8"); got != "" {
		t.Fatalf("another address: %q", got)
	}
	for range 5 {
		if got := l.admit("::1"); got != "" {
			t.Fatalf("loopback is not capped per address: %q", got)
		}
	}
}

// ReadBody reads a body whole in one buffer, and one byte past the limit.
func TestReadBody(t *testing.T) {
	body := strings.Repeat("x", 10_000)
	for _, c := range []struct {
		length int64
		limit  int
		want   int
	}{
		{10_000, 20_000, 10_000},
		{-1, 20_000, 10_000},     // length unknown
		{10_000, 5_000, 5_001},   // over the limit: limit+1 bytes
		{20_000, 30_000, 10_000}, // a declared length larger than the body
		{100, 30_000, 10_000},    // or smaller
	} {
		got, err := ReadBody(strings.NewReader(body), c.length, c.limit)
		if err != nil || len(got) != c.want || string(got) != body[:c.want] {
			t.Errorf("length %d, limit %d: %d bytes, %v; want %d", c.length, c.limit, len(got), err, c.want)
		}
	}
	// One buffer, where io.ReadAll grows one several times.
	allocs := testing.AllocsPerRun(20, func() { ReadBody(strings.NewReader(body), int64(len(body)), 1<<20) })
	readAll := testing.AllocsPerRun(20, func() { io.ReadAll(io.LimitReader(strings.NewReader(body), 1<<20)) })
	if allocs > readAll-4 {
		t.Errorf("%v allocations for a body of declared length; io.ReadAll makes %v", allocs, readAll)
	}
}
