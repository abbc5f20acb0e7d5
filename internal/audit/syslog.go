package audit

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-iomt/vigil/internal/pump"
)

// Syslog export: every audit entry, in log order, as an RFC 5424 message
// over TLS (RFC 5425 octet-counted framing) to a SIEM or log collector.
// The index of the next entry to send is kept in a file, so a restart
// resends from there; syslog has no acknowledgements, so after a broken
// connection the last batch written on it is sent again. Entries arrive
// in order, each carrying its log index, and at least once — a collector
// drops repeats by index.

// SyslogOptions configure a Shipper.
type SyslogOptions struct {
	// Addr is host:port of the collector (6514 is syslog over TLS).
	Addr string
	// TLS is the client configuration; nil sends plain TCP, which
	// vigil serve allows only to this machine.
	TLS *tls.Config
	// Store is the audit log's store; CursorFile keeps the next index.
	Store      Store
	CursorFile string
	Hostname   string // RFC 5424 HOSTNAME (default: os.Hostname)
	// Format is "vigil" (structured data, the default) or "atna": the
	// DICOM audit message XML an IHE ATNA audit record repository takes
	// (ITI-20; MSGID IHE+RFC-3881).
	Format  string
	Backoff time.Duration
	Poll    time.Duration
	Logger  *slog.Logger
}

// Shipper sends the audit log to syslog.
type Shipper struct {
	o      SyslogOptions
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	next uint64
	last string // the last error, "" when sending works
	// sentFrom is where the last batch written on the current connection
	// began: a TCP write that succeeded may still be lost when the
	// connection breaks, so a new connection starts again from there.
	sentFrom uint64
	fresh    bool
}

// StartSyslog starts shipping from the saved cursor (0 the first time).
func StartSyslog(o SyslogOptions) (*Shipper, error) {
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Shipper{o: o, kick: make(chan struct{}, 1), done: make(chan struct{})}
	if b, err := os.ReadFile(o.CursorFile); err == nil {
		if s.next, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return nil, fmt.Errorf("syslog cursor %s is corrupt: %v (delete it to resend the whole log)", o.CursorFile, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.loop(ctx)
	return s, nil
}

// Kick wakes the shipper (a new entry).
func (s *Shipper) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Close stops shipping; the cursor stays for the next start.
func (s *Shipper) Close() {
	s.cancel()
	<-s.done
}

// Status returns the next index to send and the last error.
func (s *Shipper) Status() (uint64, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next, s.last
}

func (s *Shipper) loop(ctx context.Context) {
	defer close(s.done)
	var conn net.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	pump.Run(ctx, s.kick, s.o.Poll, s.o.Backoff, time.Minute, func(ctx context.Context) (bool, time.Duration, error) {
		err := s.ship(ctx, &conn)
		s.mu.Lock()
		s.last = ""
		if err != nil {
			s.last = err.Error()
		}
		s.mu.Unlock()
		if err != nil {
			if conn != nil {
				conn.Close()
				conn = nil
			}
			s.o.Logger.Warn("audit syslog export: retrying", "addr", s.o.Addr, "err", err)
		}
		return false, 0, err // ship sends everything there is
	})
}

var errBatch = errors.New("batch full")

// ship sends every entry from the cursor on.
func (s *Shipper) ship(ctx context.Context, conn *net.Conn) error {
	for {
		if *conn != nil && (*conn).(*syslogConn).dead.Load() {
			(*conn).Close() // the collector hung up: reconnect and resend
			*conn = nil
		}
		s.mu.Lock()
		if *conn == nil && s.fresh && s.sentFrom < s.next {
			s.next = s.sentFrom // resend what the broken connection may have lost
		}
		next := s.next
		s.mu.Unlock()
		var msgs [][]byte
		last := next
		err := s.o.Store.ScanAudit(ctx, next, func(index uint64, rec []byte) error {
			var r record
			var e Entry
			if err := json.Unmarshal(rec, &r); err != nil {
				return fmt.Errorf("audit record %d is corrupt: %w", index, err)
			}
			if err := json.Unmarshal(r.Entry, &e); err != nil {
				return fmt.Errorf("audit record %d is corrupt: %w", index, err)
			}
			e.Index = index
			if s.o.Format == "atna" {
				msgs = append(msgs, frame(ATNASyslog(e, s.o.Hostname)))
			} else {
				msgs = append(msgs, frame(RFC5424(e, s.o.Hostname)))
			}
			last = index + 1
			if len(msgs) == 500 {
				return errBatch
			}
			return nil
		})
		if err != nil && err != errBatch {
			return err
		}
		if len(msgs) == 0 {
			return nil
		}
		if *conn == nil {
			c, err := s.dial(ctx)
			if err != nil {
				return err
			}
			*conn = c
		}
		s.mu.Lock()
		s.sentFrom, s.fresh = next, true
		s.mu.Unlock()
		(*conn).SetWriteDeadline(time.Now().Add(30 * time.Second))
		w := bufio.NewWriter(*conn)
		for _, m := range msgs {
			w.Write(m)
		}
		if err := w.Flush(); err != nil {
			return fmt.Errorf("sending to %s: %w", s.o.Addr, err)
		}
		if err := s.save(last); err != nil {
			return err
		}
		if err != errBatch {
			return nil
		}
	}
}

// syslogConn notices when the collector hangs up: it never sends, so a
// read that ends means the connection is gone.
type syslogConn struct {
	net.Conn
	dead atomic.Bool
}

func (s *Shipper) dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	var c net.Conn
	var err error
	if s.o.TLS != nil {
		c, err = (&tls.Dialer{NetDialer: d, Config: s.o.TLS}).DialContext(ctx, "tcp", s.o.Addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", s.o.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("the syslog collector %s could not be reached: %w", s.o.Addr, err)
	}
	sc := &syslogConn{Conn: c}
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				sc.dead.Store(true)
				return
			}
		}
	}()
	return sc, nil
}

// save records the next index to send, atomically.
func (s *Shipper) save(next uint64) error {
	tmp := s.o.CursorFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(next, 10)+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.o.CursorFile); err != nil {
		return err
	}
	s.mu.Lock()
	s.next = next
	s.mu.Unlock()
	return nil
}

// frame is RFC 5425 octet counting: "LEN SP MSG".
func frame(msg []byte) []byte {
	return append([]byte(strconv.Itoa(len(msg))+" "), msg...)
}

// sdEnterprise is the SD-ID's enterprise number: 32473 is IANA's example
// number (RFC 5612) until Vigil has its own.
const sdEnterprise = "32473"

// RFC5424 renders an entry: facility authpriv (10), severity notice for
// success and warning for a denial or failure; structured data
// [vigil@32473 ...] with every field; the message in words. Entries hold
// ids, never PHI.
func RFC5424(e Entry, hostname string) []byte {
	sev := 5
	if e.Outcome != Success {
		sev = 4
	}
	pri := 10*8 + sev
	var sd strings.Builder
	sd.WriteString("[vigil@" + sdEnterprise)
	param := func(k, v string) {
		if v == "" {
			return
		}
		sd.WriteString(" " + k + `="` + sdEscape(v) + `"`)
	}
	param("index", strconv.FormatUint(e.Index, 10))
	param("actor", e.Actor)
	param("role", e.Role)
	param("action", e.Action)
	param("resource", e.Resource)
	param("patient", e.Patient)
	param("outcome", e.Outcome)
	param("detail", e.Detail)
	param("remote", e.Remote)
	sd.WriteString("]")
	actor := e.Actor
	if actor == "" {
		actor = "(unauthenticated)"
	}
	msg := fmt.Sprintf("%s %s: %s", actor, e.Action, e.Outcome)
	return []byte(fmt.Sprintf("<%d>1 %s %s vigil - audit %s \ufeff%s", pri, e.Time.UTC().Format("2006-01-02T15:04:05.000000Z"), header(hostname), sd.String(), msg))
}

// ATNASyslog is an entry as an IHE ATNA syslog message (RFC 5424 with
// MSGID IHE+RFC-3881, no structured data, the DICOM XML as the message).
func ATNASyslog(e Entry, hostname string) []byte {
	pri := 10*8 + 5
	if e.Outcome != Success {
		pri = 10*8 + 4
	}
	head := fmt.Sprintf("<%d>1 %s %s vigil - IHE+RFC-3881 - ", pri, e.Time.UTC().Format("2006-01-02T15:04:05.000000Z"), header(hostname))
	return append([]byte(head), ATNA(e, "vigil@"+header(hostname))...)
}

// header makes an RFC 5424 header field: printable ASCII without spaces,
// "-" when empty.
func header(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 33 || r > 126 {
			return -1
		}
		return r
	}, s)
	if s == "" {
		return "-"
	}
	if len(s) > 255 {
		s = s[:255]
	}
	return s
}

func sdEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(s)
}
