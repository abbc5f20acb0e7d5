// Package netlimit caps the connections a listener holds — in all and
// per client address — and counts those it refuses and the clients too
// slow for their read deadlines, so one misbehaving host can neither
// exhaust a listener nor go unnoticed.
package netlimit

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are shared by the listeners of one process.
type Metrics struct {
	open    *prometheus.GaugeVec
	refused *prometheus.CounterVec
	slow    *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		open:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vigil_connections_open", Help: "Connections open, by listener."}, []string{"listener"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_connections_refused_total", Help: "Connections closed at once because the listener (reason total) or the client's address (reason per-address) was at its limit."}, []string{"listener", "reason"}),
		slow:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_slow_clients_total", Help: "Connections that hit a read deadline (a client too slow to send its request, or silent past its keepalive)."}, []string{"listener"}),
	}
	if reg != nil {
		reg.MustRegister(m.open, m.refused, m.slow)
	}
	return m
}

// Limits are a listener's caps (0: none). PerAddr does not apply to
// loopback clients.
type Limits struct {
	Total   int
	PerAddr int
}

type listener struct {
	net.Listener
	name   string
	lim    Limits
	m      *Metrics
	mu     sync.Mutex
	total  int
	byAddr map[string]int
}

// Wrap caps ln. Refused connections are closed at once, before any byte
// is read (and before a TLS handshake when ln is the raw listener).
func Wrap(ln net.Listener, name string, lim Limits, m *Metrics) net.Listener {
	if m == nil {
		m = NewMetrics(nil)
	}
	return &listener{Listener: ln, name: name, lim: lim, m: m, byAddr: map[string]int{}}
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		if reason := l.admit(addr); reason != "" {
			l.m.refused.WithLabelValues(l.name, reason).Inc()
			c.Close()
			continue
		}
		l.m.open.WithLabelValues(l.name).Inc()
		return &conn{Conn: c, l: l, addr: addr}, nil
	}
}

// admit counts a connection from addr in, or says why not ("total",
// "per-address").
func (l *listener) admit(addr string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.lim.Total > 0 && l.total >= l.lim.Total:
		return "total"
	case l.lim.PerAddr > 0 && l.byAddr[addr] >= l.lim.PerAddr && !loopback(addr):
		return "per-address"
	}
	l.total++
	l.byAddr[addr]++
	return ""
}

type conn struct {
	net.Conn
	l      *listener
	addr   string
	closed atomic.Bool
	slow   atomic.Bool
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && c.slow.CompareAndSwap(false, true) {
		c.l.m.slow.WithLabelValues(c.l.name).Inc()
	}
	return n, err
}

func (c *conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.mu.Lock()
		c.l.total--
		if c.l.byAddr[c.addr]--; c.l.byAddr[c.addr] <= 0 {
			delete(c.l.byAddr, c.addr)
		}
		c.l.mu.Unlock()
		c.l.m.open.WithLabelValues(c.l.name).Dec()
	}
	return c.Conn.Close()
}

// loopback addresses (this machine: tests, a local gateway, the load
// tool) have no per-address cap.
func loopback(addr string) bool {
	ip := net.ParseIP(addr)
	return ip != nil && ip.IsLoopback()
}
