package broker

import (
	"crypto/tls"
	"net"
	"sync"
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
