// Package mllp is Vigil's HL7 v2 listener: MLLP framing over TCP, one
// goroutine per connection, several messages per connection, an ACK per
// message written only after its readings are durable (MSA-1 AA), or AE
// or AR with ERR segments naming what was wrong.
//
// Senders are gateways registered as Vigil devices: MSH-3's universal id
// (EUI-64, component 2) or, without one, its namespace id (component 1) is
// the device id. MLLP carries no credentials, so connections are accepted
// only from the networks in Options.Allow (loopback by default); with
// Options.TLS the listener speaks MLLP inside TLS (as vigil serve does by
// default), so messages never cross the network in the clear.
package mllp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/hl7"
	"github.com/vigil-iomt/vigil/internal/pcd"
)

// Devices finds registered senders.
type Devices interface {
	FindDeviceByID(ctx context.Context, id string) (*vigil.Device, error)
}

// Options configure a Server.
type Options struct {
	Addr string
	// WrapListener, if set, wraps the raw TCP listener (connection caps
	// and metrics: internal/netlimit) before TLS.
	WrapListener func(net.Listener) net.Listener
	Ingester     vigil.Ingester
	Devices      Devices
	// Alarms handles ORU^R40 device alarms (IHE PCD ACM); it returns after
	// they are stored. nil: ORU^R40 is refused.
	Alarms      func(ctx context.Context, sender string, received time.Time, m *hl7.Message) error
	Allow       []*net.IPNet  // nil: loopback only
	TLS         *tls.Config   // nil: plain TCP
	MaxFrame    int           // bytes (default 1 MiB)
	IdleTimeout time.Duration // close connections idle this long (default 5 min)
	Now         func() time.Time
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// Server is a running MLLP listener.
type Server struct {
	o      Options
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	acks   *prometheus.CounterVec
	ctl    uint64
}

// Start listens on o.Addr.
func Start(o Options) (*Server, error) {
	if o.MaxFrame <= 0 {
		o.MaxFrame = 1 << 20
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Allow == nil {
		_, v4, _ := net.ParseCIDR("127.0.0.0/8")
		_, v6, _ := net.ParseCIDR("::1/128")
		o.Allow = []*net.IPNet{v4, v6}
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err == nil && o.WrapListener != nil {
		ln = o.WrapListener(ln)
	}
	if err == nil && o.TLS != nil {
		ln = tls.NewListener(ln, o.TLS)
	}
	if err != nil {
		return nil, fmt.Errorf("listen for MLLP on %s: %w (choose another address with --mllp)", o.Addr, err)
	}
	s := &Server{o: o, ln: ln, conns: make(map[net.Conn]struct{})}
	s.acks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_mllp_acks_total", Help: "HL7 acknowledgements sent, by MSA-1 code (AA, AE, AR).",
	}, []string{"code"})
	if o.Registerer != nil {
		o.Registerer.MustRegister(s.acks)
	}
	s.wg.Add(1)
	go s.accept()
	o.Logger.Info("mllp listening", "addr", ln.Addr().String())
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting, waits for in-flight messages to be acknowledged
// and closes every connection.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		// Stop reading new frames; acknowledgements in flight still go out.
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseRead()
		} else {
			c.SetReadDeadline(time.Now())
		}
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) allowed(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	for _, n := range s.o.Allow {
		if n.Contains(ta.IP) {
			return true
		}
	}
	return false
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.o.Logger.Warn("mllp accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !s.allowed(c.RemoteAddr()) {
			s.o.Logger.Warn("mllp connection refused: source not in the allowed networks (--mllp-allow)", "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

// serve reads frames and answers each in order.
func (s *Server) serve(c net.Conn) {
	defer s.wg.Done()
	var pending sync.WaitGroup
	var wmu sync.Mutex
	var write func(b []byte, code string)
	// Answers go out in the order messages came in: an immediate answer
	// (unparsable, unknown sender) waits for the ACKs still in the pipeline.
	writeNow := func(b []byte, code string) {
		pending.Wait()
		write(b, code)
	}
	write = func(b []byte, code string) {
		wmu.Lock()
		defer wmu.Unlock()
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(hl7.AppendFrame(nil, b)); err == nil {
			s.acks.WithLabelValues(code).Inc()
		}
	}
	defer func() {
		pending.Wait()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	fr := hl7.NewFrameReader(c, s.o.MaxFrame)
	ctx := context.Background()
	for {
		c.SetReadDeadline(time.Now().Add(s.o.IdleTimeout))
		frame, err := fr.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
				s.o.Logger.Warn("mllp connection closed: framing error", "remote", c.RemoteAddr().String(), "err", err)
				if errors.Is(err, hl7.ErrFrameTooLarge) {
					writeNow(hl7.Ack(nil, hl7.AR, "frame too large", s.controlID(), s.o.Now(), []hl7.ErrDetail{{Code: hl7.ErrInternal, Text: "Application internal error", Message: fmt.Sprintf("the message exceeds %d bytes", s.o.MaxFrame)}}), hl7.AR)
				}
			}
			return
		}
		received := s.o.Now().UTC()
		msg, err := hl7.Parse(frame)
		if err != nil {
			writeNow(hl7.Ack(nil, hl7.AR, "unparsable message", s.controlID(), received, []hl7.ErrDetail{{Code: hl7.ErrSegmentSequence, Text: "Segment sequence error", Message: err.Error()}}), hl7.AR)
			continue
		}
		sender := senderID(msg)
		if d, err := s.o.Devices.FindDeviceByID(ctx, sender); err != nil || d == nil {
			text := fmt.Sprintf("sending application %q is not a registered device: register it (vigil device add --id %s --kind gateway)", sender, sender)
			if vigil.ErrorCode(err) != vigil.ENOTFOUND {
				text = "registry unavailable; send again"
			}
			writeNow(hl7.Ack(msg, hl7.AR, text, s.controlID(), received, []hl7.ErrDetail{{Location: "MSH^1^3", Code: hl7.ErrUnknownKey, Text: "Unknown key identifier", Message: text}}), hl7.AR)
			continue
		}
		if msg.MessageType() == "ORU^R40" {
			pending.Wait() // keep answers in order
			if s.o.Alarms == nil {
				writeNow(hl7.Ack(msg, hl7.AR, "ORU^R40 alarms are not enabled", s.controlID(), received, []hl7.ErrDetail{{Location: "MSH^1^9", Code: hl7.ErrUnsupportedType, Text: "Unsupported message type", Message: "this server does not take device alarms"}}), hl7.AR)
				continue
			}
			if err := s.o.Alarms(ctx, sender, received, msg); err != nil {
				if vigil.Retryable(err) {
					c.Close() // nothing stored: no ACK, the sender resends
					continue
				}
				e := errDetail(err)
				writeNow(hl7.Ack(msg, hl7.AE, e.Message, s.controlID(), received, []hl7.ErrDetail{e}), hl7.AE)
				continue
			}
			writeNow(hl7.Ack(msg, hl7.AA, "", s.controlID(), received, nil), hl7.AA)
			continue
		}
		pending.Add(1)
		s.o.Ingester.Submit(ctx, vigil.Message{DeviceID: sender, Source: "mllp", Format: pcd.Format, Topic: "mllp", Payload: frame, Received: received},
			func(r vigil.IngestResult) {
				defer pending.Done()
				if vigil.Retryable(r.Err) {
					// Nothing is durable: no ACK, close, the sender resends.
					c.Close()
					return
				}
				ack, code := s.answer(msg, r)
				write(ack, code)
			})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Server) controlID() string {
	s.mu.Lock()
	s.ctl++
	n := s.ctl
	s.mu.Unlock()
	return "VIGIL" + strconv.FormatInt(s.o.Now().UnixMilli(), 36) + "-" + strconv.FormatUint(n, 36)
}

// senderID is the registered device id of a message's sending application.
func senderID(m *hl7.Message) string {
	msh := m.Segment("MSH")
	if u := msh.Component(3, 2); u != "" {
		return u
	}
	return msh.Component(3, 1)
}

// answer builds the ACK for an ingest result.
func (s *Server) answer(msg *hl7.Message, r vigil.IngestResult) ([]byte, string) {
	now := s.o.Now()
	if r.Err != nil {
		e := errDetail(r.Err)
		return hl7.Ack(msg, hl7.AR, e.Message, s.controlID(), now, []hl7.ErrDetail{e}), hl7.AR
	}
	var errs []hl7.ErrDetail
	for _, o := range r.Readings {
		if o.Err != nil {
			errs = append(errs, errDetail(o.Err))
		}
	}
	if len(errs) == 0 {
		return hl7.Ack(msg, hl7.AA, "", s.controlID(), now, nil), hl7.AA
	}
	text := fmt.Sprintf("%d of %d observations stored; %d refused", len(r.Readings)-len(errs), len(r.Readings), len(errs))
	return hl7.Ack(msg, hl7.AE, text, s.controlID(), now, errs), hl7.AE
}

// errDetail renders a Vigil error as an ERR segment. Fields such as
// "OBX[3].code" become the location OBX^3^3.
func errDetail(err error) hl7.ErrDetail {
	e, _ := err.(*vigil.Error)
	if e == nil {
		e = &vigil.Error{Code: vigil.EINTERNAL, Message: err.Error()}
	}
	d := hl7.ErrDetail{Location: location(e.Field), Message: e.Message, Severity: "E"}
	switch e.Reason {
	case "unknown-code", "unknown-system", "unit-mismatch":
		d.Code, d.Text = hl7.ErrTableValue, "Table value not found"
	case "unknown-patient", "ambiguous-patient":
		d.Code, d.Text = hl7.ErrUnknownKey, "Unknown key identifier"
	case "required":
		d.Code, d.Text = hl7.ErrRequiredMissing, "Required field missing"
	case "unparsable":
		d.Code, d.Text = hl7.ErrSegmentSequence, "Segment sequence error"
	case "unsupported-message":
		d.Code, d.Text = hl7.ErrUnsupportedType, "Unsupported message type"
	case "invalid", "implausible", "future", "too-old", "unit-required", "result-status":
		d.Code, d.Text = hl7.ErrDataType, "Data type error"
	default:
		d.Code, d.Text = hl7.ErrInternal, "Application internal error"
	}
	return d
}

var fieldNo = map[string]string{"code": "3", "value": "5", "unit": "6", "time": "14", "patient": "3"}

// location maps "OBX[3].value" to "OBX^3^5", "PID[1].3" to "PID^1^3".
func location(field string) string {
	seg, rest, ok := strings.Cut(field, "[")
	if !ok {
		return ""
	}
	n, rest, ok := strings.Cut(rest, "]")
	if !ok {
		return ""
	}
	f := strings.TrimPrefix(rest, ".")
	if k, ok := fieldNo[f]; ok {
		if f == "patient" {
			return "PID^1^3"
		}
		f = k
	}
	if f == "" {
		return seg + "^" + n
	}
	return seg + "^" + n + "^" + f
}
