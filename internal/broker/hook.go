package broker

import (
	"context"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/certs"
)

// hook plugs device authentication, the topic ACL and ingestion into
// mochi. mochi calls OnConnect, OnPublish and OnSubscribe from the
// connection's read loop, one packet at a time.
type hook struct {
	mqtt.HookBase
	b *Broker
}

func (h *hook) ID() string { return "vigil" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablished,
		mqtt.OnDisconnect, mqtt.OnACLCheck, mqtt.OnSubscribe, mqtt.OnPublish,
		mqtt.OnPacketEncode:
		return true
	}
	return false
}

// OnConnect authenticates the client. It runs before mochi's own
// authentication step so that it can choose the CONNACK code: mochi sends
// no CONNACK when OnConnect fails, so refuse writes it. On success the
// client id becomes "{device}/{client id}", so that two devices using the
// same MQTT client id cannot take over each other's session, and the
// device id can be read back from the client (deviceOf).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	user := string(pk.Connect.Username)
	ctx, cancel := context.WithTimeout(h.b.ctx, h.b.opts.AuthTimeout)
	defer cancel()
	// A client certificate issued by Vigil's CA identifies the device (its
	// CN); the username, if any, must name the same device.
	var dev *vigil.Device
	var err error
	certID, serial, byCert := clientCert(cl)
	switch {
	case byCert && len(pk.Connect.Password) == 0 && (user == "" || user == certID):
		dev, err = h.b.opts.Auth.DeviceByCert(ctx, certID, serial)
	case !pk.Connect.UsernameFlag || user == "":
		return h.refuse(cl, authAnonymous)
	case !vigil.ValidID(user):
		return h.refuse(cl, authBadCreds)
	default:
		dev, err = h.b.opts.Auth.Device(ctx, user, string(pk.Connect.Password))
	}
	switch vigil.ErrorCode(err) {
	case "":
		if dev == nil || !vigil.ValidID(dev.ID) {
			h.b.log.Warn("mqtt auth returned no valid device", "device", user)
			return h.refuse(cl, authUnavailable)
		}
	case vigil.EUNAUTHORIZED, vigil.ENOTFOUND:
		return h.refuse(cl, authBadCreds)
	case vigil.EFORBIDDEN:
		return h.refuse(cl, authForbidden)
	default:
		h.b.log.Warn("mqtt device authentication failed", "device", user, "code", vigil.ErrorCode(err))
		return h.refuse(cl, authUnavailable)
	}
	// mochi does not check a will against the ACL when it publishes it.
	if will := pk.Connect.WillTopic; pk.Connect.WillFlag && (!allowed(dev.ID, will) || will == ReadingsTopic(dev.ID)) {
		h.b.metrics.aclDenied.WithLabelValues("publish").Inc()
		return connack(cl, packets.ErrNotAuthorized, packets.Err3NotAuthorized)
	}
	cl.ID = dev.ID + "/" + cl.ID
	h.b.nurseCall.Store(dev.ID, dev.Kind == vigil.DeviceNurseCall)
	return nil
}

// isNurseCall reports whether the connected device is a nurse-call system.
func (h *hook) isNurseCall(device string) bool {
	v, ok := h.b.nurseCall.Load(device)
	return ok && v.(bool)
}

// refuse counts a refused CONNECT and writes its CONNACK.
func (h *hook) refuse(cl *mqtt.Client, reason string) error {
	h.b.metrics.authFailures.WithLabelValues(reason).Inc()
	var v5, v3 packets.Code
	switch reason {
	case authBadCreds:
		v5, v3 = packets.ErrBadUsernameOrPassword, packets.ErrMalformedUsernameOrPassword // 0x86, 0x04
	case authUnavailable:
		v5, v3 = packets.ErrServerUnavailable, packets.Err3ServerUnavailable // 0x88, 0x03
	default: // anonymous, forbidden
		v5, v3 = packets.ErrNotAuthorized, packets.Err3NotAuthorized // 0x87, 0x05
	}
	return connack(cl, v5, v3)
}

// connack writes a refusing CONNACK with the code of the client's protocol
// version and returns the v5 code as the error that ends the connection.
func connack(cl *mqtt.Client, v5, v3 packets.Code) error {
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}}
	if cl.Properties.ProtocolVersion == 5 {
		ack.ReasonCode = v5.Code
		ack.Properties.ReasonString = v5.Reason
	} else {
		ack.ReasonCode = v3.Code
	}
	_ = cl.WritePacket(ack) // the connection is closed next either way
	return v5
}

// OnConnectAuthenticate accepts every client that reached it: OnConnect
// has already refused all others.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return deviceOf(cl) != ""
}

func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.b.sessions.Store(cl, newSession(h.b, cl, deviceOf(cl), h.b.inflight))
	h.b.metrics.connections.Inc()
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if _, ok := h.b.sessions.LoadAndDelete(cl); ok {
		h.b.metrics.connections.Dec()
	}
}

// OnPacketEncode announces the maximum packet size in a successful MQTT 5
// CONNACK (mochi enforces it but does not announce it).
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode == 0 && cl.Properties.ProtocolVersion == 5 {
		pk.Properties.MaximumPacketSize = uint32(h.b.opts.MaxPayload + packetOverhead)
	}
	return pk
}

// OnACLCheck allows a device its own topics only. mochi calls it with
// write=true for a PUBLISH and with write=false for each SUBSCRIBE filter
// and for each message about to be delivered. A refused QoS 1 PUBLISH is
// answered by mochi right away (0x87 PUBACK for MQTT 5, a disconnection
// for 3.1.1), so it first waits for the connection's earlier
// acknowledgements to be written.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	dev := deviceOf(cl)
	if write && mayWrite(dev, topic) || !write && mayRead(dev, h.isNurseCall(dev), topic) {
		return true
	}
	if write {
		h.b.metrics.aclDenied.WithLabelValues("publish").Inc()
		if s := h.b.session(cl); s != nil {
			s.barrier()
		}
	}
	return false
}

// OnSubscribe counts the filters the ACL will refuse (OnACLCheck cannot
// tell a subscription from a delivery).
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	dev := deviceOf(cl)
	for _, sub := range pk.Filters {
		if mqtt.IsValidFilter(sub.Filter, false) && !mayRead(dev, h.isNurseCall(dev), sub.Filter) {
			h.b.metrics.aclDenied.WithLabelValues("subscribe").Inc()
		}
	}
	return pk
}

// errRejectPacket is packets.ErrRejectPacket (a struct value) as an error
// once: returning or comparing the value boxes it anew each time, an
// allocation per PUBLISH.
var errRejectPacket error = packets.ErrRejectPacket

// OnPublish ingests readings and lets other (ACL-checked) messages through.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // Vigil's own alert messages (PublishAlert)
	}
	s := h.b.session(cl)
	if s == nil { // not established; cannot happen for a client mochi reads from
		return pk, errRejectPacket
	}
	format, ingest := ingestFormat(s.device, pk.TopicName)
	if sub, _ := deviceSub(s.device, pk.TopicName); sub == "commands/ack" && h.b.opts.OnCommandAck != nil {
		h.b.opts.OnCommandAck(s.device, pk.Payload)
	}
	if !ingest {
		if pk.FixedHeader.Qos > 0 {
			s.barrier() // mochi acknowledges it when we return
		}
		return pk, nil
	}
	if waited, _ := h.b.rates.Wait(h.b.stopping, s.device); waited > 0 {
		// Over its rate: this connection's reads waited (back-pressure).
		h.b.metrics.throttled.Inc()
	}
	m := vigil.Message{
		DeviceID: s.device,
		Source:   "mqtt",
		Format:   format,
		Topic:    pk.TopicName,
		Payload:  pk.Payload, // a fresh slice per packet (mochi copies on read)
		Received: h.b.now().UTC(),
		// Under overload an MQTT 5 device is told (PUBACK 0x89 server
		// busy) and QoS 0 is dropped (counted); an MQTT 3.1.1 device
		// cannot be refused without a disconnect, so its connection waits.
		Shed: s.v5 || pk.FixedHeader.Qos == 0,
	}
	switch pk.FixedHeader.Qos {
	case 0:
		h.b.ingestQoS0(s, m)
	case 1:
		h.b.ingestQoS1(s, pk.PacketID, m)
	default:
		return h.b.ingestQoS2(s, pk, m)
	}
	// Neither forwarded nor retained nor acknowledged by mochi.
	return pk, errRejectPacket
}

// deviceOf returns the id of the device a client authenticated as (see
// OnConnect), or "" for a client that has not. mochi handles no packet of
// a client before OnConnect has accepted it (and rewritten its id), so
// the prefix is always a verified device id. Device ids cannot contain
// '/' (vigil.ValidID).
func deviceOf(cl *mqtt.Client) string {
	i := strings.IndexByte(cl.ID, '/')
	if i <= 0 {
		return ""
	}
	return cl.ID[:i]
}

var (
	errClosing  = vigil.Errorf(vigil.EUNAVAILABLE, "the broker is shutting down; send again later")
	errTooLarge = vigil.Errorf(vigil.ETOOLARGE, "payload exceeds the broker's limit")
)

// ingestQoS0 submits m; nothing is acknowledged, so failures are only
// visible in the pipeline's metrics and dead letters.
func (b *Broker) ingestQoS0(s *session, m vigil.Message) {
	if !s.acquire() {
		return
	}
	if len(m.Payload) > b.opts.MaxPayload || !b.begin() {
		s.release()
		return
	}
	b.opts.Ingester.Submit(b.ctx, m, func(vigil.IngestResult) {
		s.release()
		b.pending.Done()
	})
}

// ingestQoS1 reserves the message's place in the connection's
// acknowledgement order and submits it; done fills the place.
func (b *Broker) ingestQoS1(s *session, packetID uint16, m vigil.Message) {
	counted := s.acquire()
	if counted && !b.begin() {
		s.release()
		counted = false
	}
	a := s.reserve(packetID, m.Received, counted)
	switch {
	case !counted:
		s.complete(a, vigil.IngestResult{Err: errClosing})
	case len(m.Payload) > b.opts.MaxPayload:
		s.complete(a, vigil.IngestResult{Err: errTooLarge})
	default:
		b.opts.Ingester.Submit(b.ctx, m, a.done)
	}
}

// ingestQoS2 submits m and waits for its result, then answers it (see the
// package documentation).
func (b *Broker) ingestQoS2(s *session, pk packets.Packet, m vigil.Message) (packets.Packet, error) {
	var r vigil.IngestResult
	switch {
	case !b.begin():
		r.Err = errClosing
	case len(m.Payload) > b.opts.MaxPayload:
		b.pending.Done()
		r.Err = errTooLarge
	default:
		ch := make(chan vigil.IngestResult, 1)
		b.opts.Ingester.Submit(b.ctx, m, func(r vigil.IngestResult) { ch <- r })
		r = <-ch
		b.pending.Done()
	}
	s.barrier()
	if !s.v5 {
		if unavailable(r) {
			s.cl.Stop(packets.ErrServerBusy) // not durable: the client must send it again
			return pk, errRejectPacket
		}
		return pk, packets.CodeSuccessIgnore // PUBREC; refusals are dead-lettered
	}
	code, reason := pubackReason(r)
	if code == packets.CodeSuccess.Code {
		return pk, packets.CodeSuccessIgnore // mochi's QoS 2 flow, without forwarding
	}
	rec := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
		PacketID:    pk.PacketID,
		ReasonCode:  code,
		Properties:  packets.Properties{ReasonString: reason},
	}
	_ = s.cl.WritePacket(rec) // an error PUBREC ends the QoS 2 flow
	return pk, errRejectPacket
}

// clientCert returns the device id and serial of the verified client
// certificate the connection was made with, if any.
func clientCert(cl *mqtt.Client) (id, serial string, ok bool) {
	tc, isTLS := tlsConn(cl.Net.Conn)
	if !isTLS {
		return "", "", false
	}
	cs := tc.ConnectionState()
	return certs.ClientIdentity(&cs)
}
