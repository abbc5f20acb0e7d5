package broker

import (
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// corkConn lets a session write a burst of acknowledgements with one write
// to the connection — one system call, and one TLS record — instead of one
// per PUBACK. While corked, writes (the session's PUBACKs, and anything
// mochi writes meanwhile, in order) collect in a buffer; uncork sends them.
// Uncorked, writes go straight through.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked int
	buf    []byte

	dmu      sync.Mutex
	deadline time.Time
}

// SetDeadline: mochi moves the connection's deadline forward (keep-alive
// × 1.5) for every packet it reads, a timer update each time. Moving it at
// most once a second leaves it at most a second early, which no client
// notices, and spares the update for all the packets in between.
func (c *corkConn) SetDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if !t.IsZero() && !c.deadline.IsZero() && t.After(c.deadline) && t.Sub(c.deadline) < time.Second {
		return nil
	}
	c.deadline = t
	return c.Conn.SetDeadline(t)
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked > 0 {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked++
	c.mu.Unlock()
}

// uncork ends a cork; the outermost one writes what was collected. A
// failed write closes the connection: the client sends its unacknowledged
// messages again after reconnecting.
func (c *corkConn) uncork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked--
	if c.corked > 0 || len(c.buf) == 0 {
		return
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 64<<10 {
		c.buf = nil // do not keep a large burst's buffer for the connection's life
	} else {
		c.buf = c.buf[:0]
	}
	if err != nil {
		c.Conn.Close()
	}
}

// tlsConn returns the TLS connection under conn, if any.
func tlsConn(conn net.Conn) (*tls.Conn, bool) {
	if c, ok := conn.(*corkConn); ok {
		conn = c.Conn
	}
	tc, ok := conn.(*tls.Conn)
	return tc, ok
}
