// Package bench is Vigil's MQTT load tool: N connections publish QoS 1
// messages, each keeping up to InFlight unacknowledged, and it reports
// acknowledged messages per second and publish→PUBACK latency. The same
// tool, payloads and load shape drive Vigil and a peer broker (Mosquitto)
// in one run, so their figures compare.
//
// It speaks MQTT 3.1.1 itself (CONNECT, PUBLISH QoS 1, PUBACK, DISCONNECT)
// rather than through a client library: general clients serialise
// publishes through queues and per-message goroutines that would be
// measured instead of the broker, while a load tool needs cheap,
// pipelined publishing on each connection.
package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/schollz/progressbar/v3"
)

// Options describe one load run.
type Options struct {
	// Protocol is "mqtt" (the default: QoS 1 publishes to Addr), "http"
	// (Vigil's HTTP ingest at URL, HTTP Basic with Creds) or "mllp" (HL7
	// v2 messages from Payload over MLLP to Addr, ACK AA acknowledges).
	Protocol   string
	URL        string        // HTTP: the server's base URL
	Addr       string        // MQTT: host:port of the broker
	Publishers int           // concurrent connections (default 1)
	InFlight   int           // unacknowledged QoS 1 publishes per connection (default 16)
	Duration   time.Duration // measured duration (default 10 s), after a 1 s warm-up
	Rate       float64       // messages/s per publisher; 0: as fast as acknowledgements allow
	// Creds returns publisher i's username and password; nil: none.
	Creds func(i int) (user, pass string)
	// Topic returns publisher i's topic (required).
	Topic func(i int) string
	// Payload returns message seq of publisher i; reading ids must be
	// unique per (i, seq) (required).
	Payload func(i int, seq uint64) []byte
	// Progress receives a progress bar; nil: none.
	Progress io.Writer
}

// Report is the outcome of a run.
type Report struct {
	Target     string        `json:"target"`
	Publishers int           `json:"publishers"`
	InFlight   int           `json:"inflight"`
	Duration   time.Duration `json:"duration_ns"`
	Sent       uint64        `json:"sent"`
	Acked      uint64        `json:"acked"`
	Errors     uint64        `json:"errors"`
	PerSecond  float64       `json:"per_second"`
	P50        time.Duration `json:"p50_ns"`
	P90        time.Duration `json:"p90_ns"`
	P99        time.Duration `json:"p99_ns"`
	P999       time.Duration `json:"p999_ns"`
	Max        time.Duration `json:"max_ns"`
}

// publisher is one device's connection (MQTT) or client (HTTP).
type publisher interface {
	publish(ctx context.Context, o Options, i int, measuring *atomic.Bool, h *hdrhistogram.Histogram) (sent, acked uint64, err error)
	close()
}

func open(ctx context.Context, o Options, i int) (publisher, error) {
	switch o.Protocol {
	case "http":
		return dialHTTP(o, i)
	case "mllp":
		return dialMLLP(ctx, o)
	}
	return dial(ctx, o, i)
}

func (r Report) String() string {
	return fmt.Sprintf("%-20s %9.0f acked/s  p50 %-9s p90 %-9s p99 %-9s p99.9 %-9s max %-9s (%d publishers x %d in flight, %s; %d sent, %d acked, %d errors)",
		r.Target, r.PerSecond, r.P50.Round(time.Microsecond), r.P90.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.P999.Round(time.Microsecond), r.Max.Round(time.Microsecond),
		r.Publishers, r.InFlight, r.Duration.Round(time.Millisecond), r.Sent, r.Acked, r.Errors)
}

const warmup = time.Second

// Run drives the broker and measures it. It fails only when no publisher
// can connect; later errors are counted.
func Run(ctx context.Context, o Options) (Report, error) {
	if o.Publishers <= 0 {
		o.Publishers = 1
	}
	if o.InFlight <= 0 {
		o.InFlight = 16
	}
	if o.InFlight > 65535 {
		o.InFlight = 65535
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if (o.Topic == nil && o.Protocol != "http" && o.Protocol != "mllp") || o.Payload == nil {
		return Report{}, errors.New("bench: Topic and Payload are required")
	}
	target := o.Addr
	if o.Protocol == "http" {
		target = o.URL
	}
	rep := Report{Target: target, Publishers: o.Publishers, InFlight: o.InFlight}
	conns := make([]publisher, o.Publishers)
	var connErr error
	for i := range conns {
		c, err := open(ctx, o, i)
		if err != nil {
			connErr = err
			rep.Errors++
			continue
		}
		conns[i] = c
	}
	live := 0
	for _, c := range conns {
		if c != nil {
			live++
		}
	}
	if live == 0 {
		return rep, fmt.Errorf("no publisher could connect to %s: %w", target, connErr)
	}

	var measuring atomic.Bool
	hist := make([]*hdrhistogram.Histogram, len(conns))
	var sent, acked, errs atomic.Uint64
	runCtx, cancel := context.WithTimeout(ctx, warmup+o.Duration)
	defer cancel()
	var bar *progressbar.ProgressBar
	if o.Progress != nil {
		bar = progressbar.NewOptions64(int64((warmup+o.Duration)/(100*time.Millisecond)),
			progressbar.OptionSetWriter(o.Progress), progressbar.OptionSetDescription("bench "+target),
			progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-runCtx.Done():
					bar.Finish()
					return
				case <-t.C:
					bar.Add(1)
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		if c == nil {
			continue
		}
		hist[i] = hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, a, err := c.publish(runCtx, o, i, &measuring, hist[i])
			sent.Add(s)
			acked.Add(a)
			// An MQTT error after the run is the connection closing; an
			// HTTP driver reports only refusals and failed requests.
			if err != nil && (runCtx.Err() == nil || o.Protocol == "http") {
				errs.Add(1)
			}
		}()
	}
	select {
	case <-time.After(warmup):
	case <-ctx.Done():
	}
	measuring.Store(true)
	start := time.Now()
	wg.Wait()
	elapsed := time.Since(start)
	for _, c := range conns {
		if c != nil {
			c.close()
		}
	}
	all := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
	for _, h := range hist {
		if h != nil {
			all.Merge(h)
		}
	}
	us := func(q float64) time.Duration { return time.Duration(all.ValueAtQuantile(q)) * time.Microsecond }
	rep.Duration = elapsed
	rep.Sent, rep.Acked, rep.Errors = sent.Load(), acked.Load(), rep.Errors+errs.Load()
	rep.PerSecond = float64(rep.Acked) / elapsed.Seconds()
	rep.P50, rep.P90, rep.P99, rep.P999 = us(50), us(90), us(99), us(99.9)
	rep.Max = time.Duration(all.Max()) * time.Microsecond
	return rep, ctx.Err()
}

// conn is one MQTT 3.1.1 connection.
type conn struct {
	nc net.Conn
	w  *bufio.Writer
	r  *bufio.Reader
}

func dial(ctx context.Context, o Options, i int) (*conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc, w: bufio.NewWriterSize(nc, 64<<10), r: bufio.NewReaderSize(nc, 64<<10)}
	var user, pass string
	if o.Creds != nil {
		user, pass = o.Creds(i)
	}
	// CONNECT: protocol "MQTT" level 4, clean session, keep-alive 60 s.
	var vh []byte
	vh = appendString(vh, "MQTT")
	flags := byte(0x02)
	if user != "" {
		flags |= 0x80
	}
	if pass != "" {
		flags |= 0x40
	}
	vh = append(vh, 4, flags, 0, 60)
	vh = appendString(vh, fmt.Sprintf("vigil-bench-%d-%d", i, time.Now().UnixNano()%1e9))
	if user != "" {
		vh = appendString(vh, user)
	}
	if pass != "" {
		vh = appendString(vh, pass)
	}
	c.writePacket(0x10, vh)
	nc.SetDeadline(time.Now().Add(15 * time.Second))
	if err := c.w.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	typ, body, err := c.readPacket()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("waiting for CONNACK: %w", err)
	}
	if typ != 0x20 || len(body) != 2 {
		nc.Close()
		return nil, fmt.Errorf("expected CONNACK, got packet type %#x", typ)
	}
	if body[1] != 0 {
		nc.Close()
		return nil, fmt.Errorf("connection refused with CONNACK return code %d", body[1])
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func (c *conn) writePacket(header byte, body []byte) {
	c.writeFixedHeader(header, len(body))
	c.w.Write(body)
}

// writeFixedHeader buffers a packet's first byte and its remaining length n.
func (c *conn) writeFixedHeader(header byte, n int) {
	c.w.WriteByte(header)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		c.w.WriteByte(d)
		if n == 0 {
			break
		}
	}
}

// readFixedHeader reads a packet's first byte and its remaining length.
func (c *conn) readFixedHeader() (byte, int, error) {
	h, err := c.r.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		d, err := c.r.ReadByte()
		if err != nil {
			return 0, 0, err
		}
		n += int(d&0x7f) * mult
		if d&0x80 == 0 {
			return h, n, nil
		}
		if i == 3 {
			return 0, 0, errors.New("malformed remaining length")
		}
		mult *= 128
	}
}

func (c *conn) readPacket() (byte, []byte, error) {
	h, n, err := c.readFixedHeader()
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, err
	}
	return h & 0xf0, body, nil
}

// readAck reads the next packet and returns its packet identifier when it
// is a PUBACK, 0 for any other packet. It allocates nothing.
func (c *conn) readAck() (uint16, error) {
	h, n, err := c.readFixedHeader()
	if err != nil {
		return 0, err
	}
	var id uint16
	if h&0xf0 == 0x40 && n >= 2 {
		b, err := c.r.Peek(2)
		if err != nil {
			return 0, err
		}
		id = binary.BigEndian.Uint16(b)
	}
	if _, err := c.r.Discard(n); err != nil {
		return 0, err
	}
	return id, nil
}

// writePublish buffers one QoS 1 PUBLISH.
func (c *conn) writePublish(topic string, id uint16, payload []byte) {
	c.writeFixedHeader(0x32, 2+len(topic)+2+len(payload))
	c.w.WriteByte(byte(len(topic) >> 8))
	c.w.WriteByte(byte(len(topic)))
	c.w.WriteString(topic)
	c.w.WriteByte(byte(id >> 8))
	c.w.WriteByte(byte(id))
	c.w.Write(payload)
}

// publish keeps up to InFlight QoS 1 publishes outstanding until ctx ends.
//
// It costs the machine little per message, since the broker under test
// shares the machine: the writer sends every free packet identifier in one
// write, and the reader hands back all the PUBACKs one read brought with
// one wake-up. Each identifier's send time lives in an array slot, set
// before its PUBLISH is written and taken by its PUBACK.
func (c *conn) publish(ctx context.Context, o Options, i int, measuring *atomic.Bool, h *hdrhistogram.Histogram) (sent, acked uint64, err error) {
	topic := o.Topic(i)
	base := time.Now()
	// sentAt[id]: 0 while id is free; otherwise 1 + nanoseconds since base
	// at its PUBLISH, negated when that was during the warm-up (not counted).
	sentAt := make([]atomic.Int64, o.InFlight+1)
	var mu sync.Mutex
	free := make([]uint16, 0, o.InFlight)
	for id := 1; id <= o.InFlight; id++ {
		free = append(free, uint16(id))
	}
	ready := make(chan struct{}, 1) // a token after identifiers were freed
	readErr := make(chan error, 1)
	readDone := make(chan struct{})
	var ackedN atomic.Uint64
	go func() {
		defer close(readDone)
		var back []uint16
		var now int64
		for {
			if c.r.Buffered() == 0 {
				// Hand back what the last read brought before waiting on the next.
				if len(back) > 0 {
					mu.Lock()
					free = append(free, back...)
					mu.Unlock()
					back = back[:0]
					select {
					case ready <- struct{}{}:
					default:
					}
				}
				if _, err := c.r.Peek(1); err != nil {
					readErr <- err
					return
				}
				now = int64(time.Since(base)) + 1
			}
			id, err := c.readAck()
			if err != nil {
				readErr <- err
				return
			}
			if id == 0 || int(id) > o.InFlight {
				continue
			}
			t0 := sentAt[id].Swap(0)
			if t0 == 0 {
				continue // not outstanding: a duplicate PUBACK
			}
			if t0 > 0 {
				ackedN.Add(1)
				h.RecordValue((now - t0) / int64(time.Microsecond))
			}
			back = append(back, id)
		}
	}()
	var tick <-chan time.Time
	if o.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / o.Rate))
		defer t.Stop()
		tick = t.C
	}
	stop := func() (uint64, uint64, error) {
		c.nc.SetDeadline(time.Now()) // unblock the reader
		<-readDone                   // no more histogram writes after this
		return sent, ackedN.Load(), nil
	}
	var seq uint64
	batch := make([]uint16, 0, o.InFlight)
	for {
		want := o.InFlight
		if tick != nil {
			want = 1 // one publish per tick
			select {
			case <-ctx.Done():
				return stop()
			case <-tick:
			}
		}
		for {
			mu.Lock()
			k := min(want, len(free))
			batch = append(batch[:0], free[len(free)-k:]...)
			free = free[:len(free)-k]
			mu.Unlock()
			if len(batch) > 0 {
				break
			}
			select {
			case <-ctx.Done():
				return stop()
			case err := <-readErr:
				<-readDone
				return sent, ackedN.Load(), err
			case <-ready:
			}
		}
		m := measuring.Load()
		at := int64(time.Since(base)) + 1
		if !m {
			at = -at
		}
		for _, id := range batch {
			seq++
			sentAt[id].Store(at)
			c.writePublish(topic, id, o.Payload(i, seq))
		}
		if err := c.w.Flush(); err != nil {
			c.nc.SetDeadline(time.Now())
			<-readDone
			return sent, ackedN.Load(), err
		}
		if m {
			sent += uint64(len(batch))
		}
	}
}

func (c *conn) close() {
	c.nc.SetDeadline(time.Now().Add(time.Second))
	c.w.Write([]byte{0xe0, 0}) // DISCONNECT
	c.w.Flush()
	c.nc.Close()
}
