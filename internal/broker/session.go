package broker

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigil-iomt/vigil"
)

// session is the broker's state for one authenticated connection: the
// queue of QoS 1 readings awaiting their acknowledgement, in the order the
// PUBLISH packets were received, and the per-connection in-flight limit.
//
// Ordering. The connection's read loop (mochi, one goroutine) calls
// reserve for each QoS 1 readings PUBLISH, so the queue is in receive
// order. The ingester's done callbacks fill the slots (complete); a single
// drainer goroutine at a time writes the acknowledgements of the ready
// slots at the head of the queue, so PUBACKs go out in receive order even
// if results arrived out of order. The drainer, not done, writes to the
// socket so that a client that does not read cannot stall the ingest
// pipeline's commit goroutine. Packets that mochi acknowledges itself
// (other topics, ACL refusals) first wait for the queue to empty
// (barrier), keeping all PUBACKs of the connection in receive order.
//
// Lock: mu guards queue and writing; nothing else is called while it is
// held.
type session struct {
	b      *Broker
	cl     *mqtt.Client
	device string
	v5     bool
	slots  chan struct{} // in-flight limit: one token per unfinished publish

	mu      sync.Mutex
	empty   *sync.Cond // broadcast when queue becomes empty
	queue   []*ackSlot
	writing bool // a drainer goroutine is running
}

// ackSlot is one QoS 1 readings PUBLISH awaiting its acknowledgement.
// Slots are reused (ackSlots) once their acknowledgement is written.
type ackSlot struct {
	s        *session
	done     func(vigil.IngestResult) // s.complete(a, r): the ingester's callback, made once per slot
	packetID uint16
	received time.Time
	counted  bool // holds a token of session.slots and is counted in Broker.pending
	ready    bool // result is set
	result   vigil.IngestResult
}

// ackSlots are acknowledged slots, with their callbacks, for reuse: a
// slot and its callback were two allocations per PUBLISH.
var ackSlots sync.Pool

func newSession(b *Broker, cl *mqtt.Client, device string, inflight int) *session {
	s := &session{
		b:      b,
		cl:     cl,
		device: device,
		v5:     cl.Properties.ProtocolVersion == 5,
		slots:  make(chan struct{}, inflight),
	}
	s.empty = sync.NewCond(&s.mu)
	return s
}

// acquire takes an in-flight token, blocking the connection's read loop
// (TCP back-pressure) while the connection has the maximum in flight. It
// returns false without a token when the broker is closing.
func (s *session) acquire() bool {
	select {
	case s.slots <- struct{}{}:
		return true
	case <-s.b.closing:
		return false
	}
}

func (s *session) release() { <-s.slots }

// reserve appends a slot for a QoS 1 PUBLISH to the acknowledgement queue.
// Called only from the connection's read loop.
func (s *session) reserve(packetID uint16, received time.Time, counted bool) *ackSlot {
	a, _ := ackSlots.Get().(*ackSlot)
	if a == nil {
		a = new(ackSlot)
		a.done = func(r vigil.IngestResult) { a.s.complete(a, r) }
	}
	a.s, a.packetID, a.received, a.counted = s, packetID, received, counted
	s.mu.Lock()
	s.queue = append(s.queue, a)
	s.mu.Unlock()
	return a
}

// complete records the result of a's message and starts a drainer if a's
// acknowledgement can now be written. Safe to call from any goroutine,
// including from inside Ingester.Submit.
func (s *session) complete(a *ackSlot, r vigil.IngestResult) {
	s.mu.Lock()
	a.result = r
	a.ready = true
	start := !s.writing && len(s.queue) > 0 && s.queue[0].ready
	if start {
		s.writing = true
	}
	s.mu.Unlock()
	if start {
		go s.drain()
	}
}

// drain writes the acknowledgements of the ready slots at the head of the
// queue until the head is not ready or the queue is empty.
func (s *session) drain() {
	for {
		s.mu.Lock()
		n := 0
		for n < len(s.queue) && s.queue[n].ready {
			n++
		}
		if n == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		batch := append([]*ackSlot(nil), s.queue[:n]...)
		s.mu.Unlock()

		cc, corked := s.cl.Net.Conn.(*corkConn)
		if corked {
			cc.cork()
		}
		now := s.b.now() // one clock reading for the burst
		for _, a := range batch {
			s.acknowledge(a, now)
		}
		if corked {
			cc.uncork()
		}

		s.mu.Lock()
		clear(s.queue[:n])
		s.queue = s.queue[n:]
		if len(s.queue) == 0 {
			s.queue = nil
			s.empty.Broadcast()
		}
		s.mu.Unlock()
		for _, a := range batch {
			if a.counted {
				s.release()
				s.b.pending.Done()
			}
			// Written and answered: nothing refers to the slot now (the
			// ingester called done once, before the slot was ready).
			*a = ackSlot{done: a.done}
			ackSlots.Put(a)
		}
	}
}

// acknowledge writes a's PUBACK, or disconnects a v3.1.1 client when
// nothing of the message is durable (v3.1.1 has no negative PUBACK; the
// client sends the message again after reconnecting).
func (s *session) acknowledge(a *ackSlot, now time.Time) {
	if !s.v5 && unavailable(a.result) {
		s.cl.Stop(packets.ErrServerBusy)
		return
	}
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Puback},
		PacketID:    a.packetID,
	}
	if s.v5 {
		ack.ReasonCode, ack.Properties.ReasonString = pubackReason(a.result)
	}
	// WritePacket serialises writers with the client's own lock; it
	// returns an error once the connection is closed, which leaves the
	// message unacknowledged (the client sends it again).
	if err := s.cl.WritePacket(ack); err == nil {
		s.b.metrics.ackSeconds.Observe(now.Sub(a.received).Seconds())
	}
}

// barrier blocks until every queued acknowledgement has been written, so
// that an acknowledgement mochi writes next follows them on the wire.
// Called only from the connection's read loop.
func (s *session) barrier() {
	s.mu.Lock()
	for len(s.queue) > 0 {
		s.empty.Wait()
	}
	s.mu.Unlock()
}
