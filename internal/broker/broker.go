// Package broker is Vigil's embedded MQTT 3.1.1 and 5 broker, built on
// mochi-mqtt. It authenticates devices (username = device id, password =
// device secret), confines each device to its own topics
// (vigil/v1/devices/{id}/...), and hands every message published on a
// device's readings topic to a vigil.Ingester.
//
// Acknowledge after durable, without serialising a connection on fsync:
// a QoS 1 readings PUBLISH is submitted to the ingester and the
// connection's read loop moves on to the next packet; its PUBACK is
// written only after the ingester's done callback says the readings are
// durable (or refused), in the order the PUBLISH packets were received.
// A connection can so keep up to ReceiveMaximum messages in flight, all of
// them riding the pipeline's group commits.
//
// Per protocol version and QoS, a readings PUBLISH is answered as follows.
//
//   - QoS 0: submitted; nothing is acknowledged.
//   - QoS 1, MQTT 5: PUBACK with reason code 0x00 when every reading was
//     stored or was a duplicate, otherwise the reason code and reason
//     string of reason.go (0x99, 0x95, 0x87, 0x89, 0x80, or 0x83 for a
//     partly refused message).
//   - QoS 1, MQTT 3.1.1: PUBACK, also for refused payloads (the pipeline
//     dead-letters them with their reason), except when the ingester
//     reports EUNAVAILABLE (nothing durable): then the client is
//     disconnected without an acknowledgement, so it sends the message
//     again after reconnecting.
//   - QoS 2: the read loop waits for the result (QoS 2 is rare for
//     sensors and needs the PUBREC before the flow can go on), then mochi's
//     normal PUBREC/PUBREL/PUBCOMP flow runs; a refusal is a PUBREC with
//     the reason code (MQTT 5) or, for EUNAVAILABLE on MQTT 3.1.1, a
//     disconnection.
//
// Readings are never forwarded to subscribers or retained (they are PHI).
// Publishes to a device's other topics (for example .../status) are
// ordinary MQTT messages.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/ratelimit"
)

// DefaultMaxPayload is the default largest accepted PUBLISH payload, in bytes.
const DefaultMaxPayload = 256 << 10

// ReceiveMaximum is the number of QoS 1 and 2 messages a connection may
// have unacknowledged at once (announced to MQTT 5 clients in CONNACK).
// When a connection reaches it, the broker stops reading from it until an
// acknowledgement has been written.
const ReceiveMaximum = 1024

// MaxClientWritesPending is how many outgoing messages may wait for one
// client's connection; past it mochi drops QoS 0 and keeps QoS 1 in flight
// for resending.
const MaxClientWritesPending = 256

// packetOverhead is the room the broker's maximum packet size leaves for
// the fixed header, topic and properties on top of MaxPayload.
const packetOverhead = 4 << 10

// Authenticator verifies device credentials. Implementations are safe for
// concurrent use.
type Authenticator interface {
	// Device returns the device with the given id if secret is its
	// secret. It returns a *vigil.Error EUNAUTHORIZED (or ENOTFOUND) when
	// the credentials do not match a device and EFORBIDDEN when the
	// device may not connect; any other error is treated as a temporary
	// failure (the client is told the server is unavailable).
	Device(ctx context.Context, deviceID, secret string) (*vigil.Device, error)
	// DeviceByCert returns the device a verified client certificate (CN,
	// serial) belongs to, with the same errors.
	DeviceByCert(ctx context.Context, deviceID, serialHex string) (*vigil.Device, error)
}

// Options configure a Broker.
type Options struct {
	Addr       string                // listen address, e.g. ":1883"; tests use "127.0.0.1:0"
	TLSConfig  *tls.Config           // nil: plaintext
	Auth       Authenticator         // required
	Ingester   vigil.Ingester        // required
	MaxPayload int                   // largest readings payload in bytes; <= 0 means DefaultMaxPayload
	Logger     *slog.Logger          // nil discards; mochi logs through it at warn level and above, payloads redacted
	Registerer prometheus.Registerer // nil: metrics are not registered
	// Now is the clock for Message.Received and ack latency; nil means time.Now.
	Now func() time.Time
	// AuthTimeout bounds one credential check; <= 0 means 10 s.
	AuthTimeout time.Duration
	// RatePerDevice is how many messages per second (in bursts of twice
	// that) each device may publish. Past it the broker reads the device's
	// connection more slowly — TCP back-pressure: nothing is refused or
	// lost, and one flooding device cannot take the ingest capacity of the
	// others. 0 means DefaultRatePerDevice; < 0, no limit.
	RatePerDevice float64
	// WrapListener, if set, wraps the raw TCP listener (connection caps
	// and metrics: internal/netlimit) before TLS.
	WrapListener func(net.Listener) net.Listener
	// OnCommandAck receives what a device publishes on its
	// CommandsTopic + "/ack" (nil: ignored).
	OnCommandAck func(deviceID string, payload []byte)
}

// DefaultRatePerDevice is generous for any bedside or wearable device
// (vitals at 1 Hz, waveform batches at a few per second) and for a
// gateway relaying a ward.
const DefaultRatePerDevice = 1000

// DefaultOptions returns Options listening on :1883 with the default
// payload limit and clock; Auth and Ingester must still be set.
func DefaultOptions() Options {
	return Options{
		Addr:        ":1883",
		MaxPayload:  DefaultMaxPayload,
		Now:         time.Now,
		AuthTimeout: 10 * time.Second,
	}
}

// Broker is an embedded MQTT broker. Create it with New, then Start it;
// Close stops it. Its methods are safe for concurrent use.
type Broker struct {
	opts    Options
	log     *slog.Logger
	server  *mqtt.Server
	metrics *metrics
	now     func() time.Time
	ctx     context.Context // passed to Auth and Ingester; cancelled when Close returns
	cancel  context.CancelFunc

	inflight  int              // per-connection in-flight limit: ReceiveMaximum (tests lower it)
	sessions  sync.Map         // *mqtt.Client -> *session
	nurseCall sync.Map         // device id -> bool: a nurse-call system (may read the alert topics)
	closing   chan struct{}    // closed when Close starts
	rates     *ratelimit.Keyed // per device: messages per second
	stopping  context.Context  // done when Close starts
	stop      context.CancelFunc

	mu        sync.RWMutex // guards isClosing and ln; held only briefly
	isClosing bool
	ln        *listener
	pending   sync.WaitGroup // submitted messages not yet acknowledged or failed

	closeOnce sync.Once
	closeErr  error
}

// New returns a broker configured by opts; it does not listen until Start.
// It returns an error when Auth or Ingester is missing or the metrics
// cannot be registered.
func New(opts Options) (*Broker, error) {
	if opts.Auth == nil {
		return nil, errors.New("mqtt broker: Options.Auth is required")
	}
	if opts.Ingester == nil {
		return nil, errors.New("mqtt broker: Options.Ingester is required")
	}
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.AuthTimeout <= 0 {
		opts.AuthTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(opts.MaxPayload + packetOverhead)
	caps.ReceiveMaximum = ReceiveMaximum
	caps.MaximumSessionExpiryInterval = 24 * 60 * 60 // seconds; bounds memory held for absent clients
	// Messages queued to one client (commands to a device, alerts to a
	// nurse-call system): mochi's default of 8,192 is a 64 KB channel per
	// connection, most of an idle connection's memory.
	caps.MaximumClientWritesPending = MaxClientWritesPending
	srv := mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 slog.New(&redactHandler{h: log.Handler(), min: slog.LevelWarn}),
		SysTopicResendInterval: 60,   // seconds; devices cannot read $SYS anyway
		InlineClient:           true, // PublishAlert
	})

	ctx, cancel := context.WithCancel(context.Background())
	stopping, stop := context.WithCancel(context.Background())
	rps := opts.RatePerDevice
	if rps == 0 {
		rps = DefaultRatePerDevice
	}
	b := &Broker{
		rates:    ratelimit.New(rps, max(int(2*rps), 1), opts.Now),
		stopping: stopping,
		stop:     stop,
		opts:     opts,
		log:      log,
		server:   srv,
		metrics:  m,
		now:      opts.Now,
		ctx:      ctx,
		cancel:   cancel,
		closing:  make(chan struct{}),
		inflight: ReceiveMaximum,
	}
	if err := srv.AddHook(&hook{b: b}, nil); err != nil {
		cancel()
		return nil, fmt.Errorf("mqtt broker: add hook: %w", err)
	}
	return b, nil
}

// Start listens on Options.Addr and serves clients in the background. If
// the address is taken, the error names it and the --mqtt flag that
// changes it. Start may be called once.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosing {
		return errors.New("mqtt broker: start after close")
	}
	if b.ln != nil {
		return errors.New("mqtt broker: already started")
	}
	ln, err := net.Listen("tcp", b.opts.Addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("mqtt: address %s is already in use; choose another with --mqtt: %w", b.opts.Addr, err)
	} else if err != nil {
		return fmt.Errorf("mqtt: listen on %s (change it with --mqtt): %w", b.opts.Addr, err)
	}
	if b.opts.WrapListener != nil {
		ln = b.opts.WrapListener(ln)
	}
	proto := "tcp"
	if b.opts.TLSConfig != nil {
		ln = tls.NewListener(ln, b.opts.TLSConfig)
		proto = "tls"
	}
	l := &listener{id: "vigil-" + proto, proto: proto, ln: ln, log: b.log, server: b.server}
	if err := b.server.AddListener(l); err != nil {
		_ = ln.Close()
		return fmt.Errorf("mqtt: add listener %s: %w", b.opts.Addr, err)
	}
	if err := b.server.Serve(); err != nil {
		_ = ln.Close()
		return fmt.Errorf("mqtt: serve on %s: %w", b.opts.Addr, err)
	}
	b.ln = l
	b.log.Info("mqtt broker listening", "addr", ln.Addr().String(), "tls", b.opts.TLSConfig != nil)
	return nil
}

// Addr returns the address the broker listens on, or nil before Start.
func (b *Broker) Addr() net.Addr {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.ln == nil {
		return nil
	}
	return b.ln.ln.Addr()
}

// Close stops accepting connections and new messages (readings arriving
// from now on are answered as EUNAVAILABLE: 0x89 for MQTT 5, a
// disconnection for 3.1.1), waits until every message already submitted
// to the ingester has been acknowledged or failed, then disconnects all
// clients. It blocks as long as the ingester has done callbacks
// outstanding, so close the broker before the ingest pipeline. Close is
// idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.isClosing = true
		close(b.closing)
		b.stop() // ends throttled reads
		l := b.ln
		b.mu.Unlock()
		if l != nil {
			l.stop()
		}
		b.pending.Wait()
		b.closeErr = b.server.Close()
		b.cancel()
	})
	return b.closeErr
}

// Disconnect closes every connection of the device (MQTT 5 clients get a
// DISCONNECT with reason 0x98, administrative action). Use it after
// revoking the device's credentials; acknowledgements still in flight on
// those connections are lost, so the device sends those messages again.
func (b *Broker) Disconnect(deviceID string) {
	// mochi's client list, not b.sessions: it holds a client from just
	// before its CONNACK, so a client that has just been told it is
	// connected is not missed.
	for _, cl := range b.server.Clients.GetAll() {
		if deviceOf(cl) != deviceID || cl.Closed() {
			continue
		}
		if cl.Properties.ProtocolVersion == 5 {
			_ = b.server.DisconnectClient(cl, packets.ErrAdministrativeAction)
		} else {
			cl.Stop(packets.ErrAdministrativeAction) // v3.1.1 has no server DISCONNECT
		}
	}
}

// Connected reports the devices with an open MQTT connection now.
func (b *Broker) Connected() map[string]bool {
	out := make(map[string]bool)
	for _, cl := range b.server.Clients.GetAll() {
		if id := deviceOf(cl); id != "" && !cl.Closed() {
			out[id] = true
		}
	}
	return out
}

// begin counts a message about to be submitted, so Close waits for it. It
// returns false once Close has started.
func (b *Broker) begin() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.isClosing {
		return false
	}
	b.pending.Add(1)
	return true
}

// session returns the state of an established connection, or nil.
func (b *Broker) session(cl *mqtt.Client) *session {
	v, ok := b.sessions.Load(cl)
	if !ok {
		return nil
	}
	return v.(*session)
}

// listener is mochi's view of the broker's network listener. Unlike
// mochi's TCP listener it can stop accepting without closing the
// established clients (Close waits for their acknowledgements first).
type listener struct {
	id, proto string
	ln        net.Listener
	server    *mqtt.Server
	log       *slog.Logger
	once      sync.Once
	stopped   atomic.Bool
}

var _ listeners.Listener = (*listener)(nil)

func (l *listener) ID() string              { return l.id }
func (l *listener) Address() string         { return l.ln.Addr().String() }
func (l *listener) Protocol() string        { return l.proto }
func (l *listener) Init(*slog.Logger) error { return nil }

// Close stops accepting and disconnects the listener's clients. It does
// not use mochi's CloseFn: that walks the clients through
// Clients.GetByListener, which takes the clients' read lock twice and
// deadlocks when a connection being established waits for the write lock
// in between (mochi v2.7.9).
func (l *listener) Close(listeners.CloseFn) {
	l.stop()
	for _, cl := range l.server.Clients.GetAll() {
		if cl.Net.Listener == l.id && !cl.Closed() {
			_ = l.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// stop closes the network listener; established connections stay open.
func (l *listener) stop() {
	l.once.Do(func() {
		l.stopped.Store(true)
		_ = l.ln.Close()
	})
}

// Serve accepts connections until stop and hands each to mochi.
func (l *listener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.stopped.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("mqtt accept failed", "error", err)
			time.Sleep(50 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		conn = &corkConn{Conn: conn}
		// The handshake runs on this goroutine; a connected client's
		// packets are then read on a new one that holds only the reading
		// frames, which is what an idle connection keeps (the patched
		// mochi in third_party/mochi; establish is the same handshake
		// without that split).
		go l.server.EstablishConnectionThen(l.id, conn, func(err error) {
			// Refused logins, client disconnects and protocol errors all
			// end here; they are routine for a broker.
			if err != nil {
				l.log.Debug("mqtt connection ended", "remote", conn.RemoteAddr().String(), "error", err)
			}
		})
	}
}

// PublishCommand sends a (signed) command to a device on its commands
// topic at QoS 1; it reaches the device if it is subscribed.
func (b *Broker) PublishCommand(deviceID string, payload []byte) error {
	return b.server.Publish(CommandsTopic(deviceID), payload, false, 1)
}

// PublishAlert publishes payload on topic (under AlertsRoot) to the
// nurse-call systems subscribed, at QoS 1; retain keeps it for systems
// that subscribe later, and an empty retained payload removes what was
// kept.
func (b *Broker) PublishAlert(topic string, payload []byte, retain bool) error {
	if !strings.HasPrefix(topic, AlertsRoot) {
		return fmt.Errorf("mqtt broker: alert topic %q is not under %s", topic, AlertsRoot)
	}
	return b.server.Publish(topic, payload, retain, 1)
}
