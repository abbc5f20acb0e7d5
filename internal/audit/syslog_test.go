package audit

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil/internal/certs"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

// collector is a syslog-over-TLS receiver (RFC 5425) that records every
// message and can be stopped and started on the same address.
type collector struct {
	t     *testing.T
	cfg   *tls.Config
	addr  string
	mu    sync.Mutex
	msgs  []string
	ln    net.Listener
	conns []net.Conn
}

func (c *collector) start() {
	ln, err := tls.Listen("tcp", c.addr, c.cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.ln, c.addr = ln, ln.Addr().String()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.conns = append(c.conns, conn)
			c.mu.Unlock()
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					lenStr, err := r.ReadString(' ')
					if err != nil {
						return
					}
					n, err := strconv.Atoi(strings.TrimSpace(lenStr))
					if err != nil {
						c.t.Errorf("bad frame length %q", lenStr)
						return
					}
					buf := make([]byte, n)
					if _, err := io.ReadFull(r, buf); err != nil {
						return
					}
					c.mu.Lock()
					c.msgs = append(c.msgs, string(buf))
					c.mu.Unlock()
				}
			}()
		}
	}()
}

// stop closes the listener and every connection: the collector is gone.
func (c *collector) stop() {
	c.ln.Close()
	c.mu.Lock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
	c.mu.Unlock()
}

func (c *collector) received() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.msgs...)
}

// An RFC 5424 message with Vigil's structured data.
var rfc5424 = regexp.MustCompile(`^<(8[45])>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ward-3 vigil - audit \[vigil@32473 index="(\d+)"(?:[^\]\\]|\\.)*outcome="(\w+)"(?:[^\]\\]|\\.)*\] \x{feff}.+$`)

// The audit log goes to a collector over TLS, each entry once at least and
// in order, across a collector outage and a restart of the shipper.
func TestSyslogExport(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := certs.Init(dir, []string{"127.0.0.1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certs.CertFile), filepath.Join(dir, certs.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, certs.CAFile))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	col := &collector{t: t, cfg: &tls.Config{Certificates: []tls.Certificate{cert}}, addr: "127.0.0.1:0"}
	col.start()

	o := pebble.DefaultOptions()
	o.CompactInterval = -1
	st, err := pebble.Open(filepath.Join(dir, "db"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key, _ := LoadOrCreateKey(filepath.Join(dir, KeyFile))
	l, err := Open(ctx, st, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	record := func(i int, outcome string) {
		if err := l.Record(ctx, Entry{Actor: fmt.Sprint("user-", i), Role: "clinician", Action: "GET /fhir/R4/Observation", Resource: `/fhir/R4/Observation?x="]`, Patient: "p1", Outcome: outcome, Time: time.Now(), Remote: "10.0.0.7"}); err != nil {
			t.Fatal(err)
		}
	}
	opts := SyslogOptions{Addr: col.addr, TLS: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}, Store: st, CursorFile: filepath.Join(dir, "syslog.cursor"), Hostname: "ward-3", Backoff: 10 * time.Millisecond, Poll: 10 * time.Millisecond}
	sh, err := StartSyslog(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		record(i, map[bool]string{true: Success, false: Denied}[i%3 != 0])
	}
	waitFor(t, func() bool { return len(col.received()) >= 10 })
	// The collector goes away; entries made meanwhile arrive once it is back.
	col.stop()
	for i := 10; i < 20; i++ {
		record(i, Success)
	}
	sh.Kick()
	time.Sleep(100 * time.Millisecond)
	col.start()
	waitFor(t, func() bool { n, _ := sh.Status(); return n == 20 }, func() string { n, e := sh.Status(); return fmt.Sprint(n, e, len(col.received())) })
	// A restart resumes from the cursor, not from the start.
	sh.Close()
	for i := 20; i < 25; i++ {
		record(i, Success)
	}
	if sh, err = StartSyslog(opts); err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	waitFor(t, func() bool { n, _ := sh.Status(); return n == 25 })
	waitFor(t, func() bool {
		seen := map[string]bool{}
		for _, m := range col.received() {
			if s := rfc5424.FindStringSubmatch(m); s != nil {
				seen[s[2]] = true
			}
		}
		return len(seen) == 25
	})
	last := -1
	for _, m := range col.received() {
		s := rfc5424.FindStringSubmatch(m)
		if s == nil {
			t.Fatalf("not RFC 5424: %q", m)
		}
		i, _ := strconv.Atoi(s[2])
		if i < last-20 { // resends go back at most to the cursor
			t.Fatalf("entry %d after %d: out of order", i, last)
		}
		last = max(last, i)
		if (s[3] == "success") != (s[1] == "85") {
			t.Fatalf("severity does not follow the outcome: %q", m)
		}
		if !strings.Contains(m, `resource="/fhir/R4/Observation?x=\"\]"`) {
			t.Fatalf("SD-PARAM not escaped: %q", m)
		}
	}
}

func waitFor(t *testing.T, ok func() bool, status ...func() string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			msg := "timed out"
			for _, s := range status {
				msg += ": " + s()
			}
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An ATNA audit message is well-formed DICOM audit XML with the event,
// outcome, user, source and patient.
func TestATNA(t *testing.T) {
	e := Entry{Index: 4, Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Actor: "dr", Role: "clinician", Action: "GET /fhir/R4/Observation",
		Patient: "p1", Outcome: Denied, Detail: "forbidden", Remote: "10.0.0.7"}
	msg := string(ATNASyslog(e, "ward-3"))
	head, body, ok := strings.Cut(msg, " - <?xml")
	if !ok || head != "<84>1 2026-12-01T10:00:00.000000Z ward-3 vigil - IHE+RFC-3881" {
		t.Fatalf("header: %q", msg)
	}
	var m struct {
		Event struct {
			Action  string `xml:"EventActionCode,attr"`
			Outcome string `xml:"EventOutcomeIndicator,attr"`
			ID      struct {
				Code string `xml:"csd-code,attr"`
			} `xml:"EventID"`
		} `xml:"EventIdentification"`
		User struct {
			ID, AP string
		} `xml:"ActiveParticipant"`
		Source struct {
			ID string `xml:"AuditSourceID,attr"`
		} `xml:"AuditSourceIdentification"`
		Object struct {
			ID   string `xml:"ParticipantObjectID,attr"`
			Type string `xml:"ParticipantObjectTypeCode,attr"`
		} `xml:"ParticipantObjectIdentification"`
	}
	if err := xml.Unmarshal([]byte("<?xml"+body), &m); err != nil {
		t.Fatalf("not XML: %v\n%s", err, body)
	}
	if m.Event.Action != "R" || m.Event.Outcome != "4" || m.Event.ID.Code != "110110" || m.Source.ID != "vigil@ward-3" || m.Object.ID != "p1" || m.Object.Type != "1" ||
		!strings.Contains(body, `UserID="dr"`) || !strings.Contains(body, `NetworkAccessPointID="10.0.0.7"`) {
		t.Fatalf("ATNA message: %+v\n%s", m, body)
	}
	if login := string(ATNA(Entry{Action: "login", Actor: "dr", Outcome: Success}, "vigil@x")); !strings.Contains(login, `csd-code="110114"`) || !strings.Contains(login, `EventActionCode="E"`) {
		t.Fatalf("login: %s", login)
	}
}
