package mqtt

// Tests of Vigil's patches to mochi (see VIGIL.md).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// The outbound queue is written in order by a goroutine that exists only
// while something waits, holds at most MaximumClientWritesPending packets,
// and is released (nil) once drained.
func TestVigilOutboundQueue(t *testing.T) {
	cl, r, _ := newTestClient()
	defer cl.Stop(errClientStop)
	cl.Properties.ProtocolVersion = 4

	// net.Pipe does not buffer: the writer blocks on the first packet
	// until it is read, so the queue fills up behind it.
	pk := func(id uint16) *packets.Packet {
		return &packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName:   "a/b",
			PacketID:    id,
			Payload:     []byte{byte(id)},
		}
	}
	max := int(cl.ops.options.Capabilities.MaximumClientWritesPending)
	require.True(t, cl.enqueueOutbound(pk(1)))
	require.Eventually(t, func() bool { return cl.outboundWaiting() == 0 }, time.Second, time.Millisecond) // taken by the writer
	for i := 0; i < max; i++ {
		require.True(t, cl.enqueueOutbound(pk(uint16(i+2))))
	}
	require.False(t, cl.enqueueOutbound(pk(99)), "a full queue refuses")

	br := bufio.NewReader(r)
	for want := 1; want <= max+1; want++ {
		var fh packets.FixedHeader
		b, err := br.ReadByte()
		require.NoError(t, err)
		require.NoError(t, fh.Decode(b))
		fh.Remaining, _, err = packets.DecodeLength(br)
		require.NoError(t, err)
		body := make([]byte, fh.Remaining)
		_, err = io.ReadFull(br, body)
		require.NoError(t, err)
		got := packets.Packet{FixedHeader: fh, ProtocolVersion: 4}
		require.NoError(t, got.PublishDecode(body))
		require.Equal(t, uint16(want), got.PacketID, "written in the order queued")
	}

	require.Eventually(t, func() bool {
		cl.State.outMu.Lock()
		defer cl.State.outMu.Unlock()
		return !cl.State.writing && cl.State.outbound == nil
	}, time.Second, time.Millisecond, "the writer ends and the queue is released once drained")
	require.Equal(t, int32(0), cl.State.outboundQty)

	// Another packet starts another writer.
	require.True(t, cl.enqueueOutbound(pk(7)))
	b, err := br.ReadByte()
	require.NoError(t, err)
	require.Equal(t, byte(packets.Publish<<4|1<<1), b)
}

// EstablishConnectionThen returns once the client is connected, reads its
// packets on another goroutine, and reports how the connection ended.
func TestVigilEstablishConnectionThen(t *testing.T) {
	s := newServer()
	defer s.Close()

	r, w := net.Pipe()
	recv := make(chan []byte, 1)
	go func() {
		buf, _ := io.ReadAll(w)
		recv <- buf
	}()
	go func() {
		_, _ = w.Write(packets.TPacketData[packets.Connect].Get(packets.TConnectClean).RawBytes)
	}()

	done := make(chan error, 1)
	s.EstablishConnectionThen("tcp", r, func(err error) { done <- err })
	id := packets.TPacketData[packets.Connect].Get(packets.TConnectClean).Packet.Connect.ClientIdentifier
	_, ok := s.Clients.Get(id)
	require.True(t, ok, "connected when it returns")
	require.Equal(t, int64(1), s.Info.ClientsConnected)
	select {
	case err := <-done:
		t.Fatalf("ended before the client disconnected: %v", err)
	default:
	}

	_, _ = w.Write(packets.TPacketData[packets.Disconnect].Get(packets.TDisconnect).RawBytes)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("done was not called after DISCONNECT")
	}
	_ = w.Close()
	require.Equal(t, packets.TPacketData[packets.Connack].Get(packets.TConnackAcceptedNoSession).RawBytes, <-recv)
	_, ok = s.Clients.Get(id)
	require.False(t, ok, "a clean session is removed")
	require.Equal(t, int64(0), s.Info.ClientsConnected)
}

// A refused connection calls done with the refusal, on the caller's
// goroutine, and leaves nothing behind.
func TestVigilEstablishConnectionThenRefused(t *testing.T) {
	s := newServer()
	defer s.Close()

	r, w := net.Pipe()
	go func() {
		_, _ = w.Write(packets.TPacketData[packets.Publish].Get(packets.TPublishBasic).RawBytes) // not CONNECT
	}()
	var got error
	called := false
	s.EstablishConnectionThen("tcp", r, func(err error) { got, called = err, true })
	require.True(t, called)
	require.ErrorIs(t, got, packets.ErrProtocolViolationRequireFirstConnect)
	require.Equal(t, int64(0), s.Info.ClientsConnected)
	_ = w.Close()
	s.Listeners.ClientsWg.Wait() // released
}

// A client's read buffer is held only while something is buffered: two
// packets arriving together are read through it, and the client waits for
// the next one without it.
func TestVigilReadBufferOnlyWhileReading(t *testing.T) {
	r, w := net.Pipe()
	defer r.Close()
	defer w.Close()
	p := &packetReader{conn: r, pool: readerPool(64)}
	ping := packets.TPacketData[packets.Pingreq].Get(packets.TPingreq).RawBytes
	pub := packets.TPacketData[packets.Publish].Get(packets.TPublishBasic).RawBytes
	more := make(chan struct{})
	go func() {
		_, _ = w.Write(append(append([]byte{}, pub...), ping...)) // together
		<-more
		_, _ = w.Write(ping) // later
	}()

	readPacket := func(wantFirst byte, wantHeld bool) {
		t.Helper()
		b, err := p.first()
		require.NoError(t, err)
		require.Equal(t, wantFirst, b)
		require.Equal(t, wantHeld, p.buf != nil)
		n, _, err := packets.DecodeLength(p)
		require.NoError(t, err)
		body := make([]byte, n)
		_, err = io.ReadFull(p, body)
		require.NoError(t, err)
		require.NotNil(t, p.buf)
	}
	require.Nil(t, p.buf, "a new reader holds no buffer")
	readPacket(pub[0], false) // waited for without a buffer
	readPacket(ping[0], true) // already buffered
	close(more)
	readPacket(ping[0], false) // nothing buffered: released while waiting
	p.release()
	require.Nil(t, p.buf)
}

// WritePacket's pooled encoding buffers: clients writing at the same time
// each get their own packets, whole and in order (with -race, a buffer
// shared while in use shows), and writing a PUBACK allocates nothing.
func TestVigilWritePacketPooledBuffers(t *testing.T) {
	const clients, acks = 4, 500
	done := make(chan error, clients)
	for c := 0; c < clients; c++ {
		c := c // go 1.21 (this module's go.mod): one variable for the loop
		cl, r, _ := newTestClient()
		defer cl.Stop(errClientStop)
		cl.Properties.ProtocolVersion = 4
		go func() {
			br := bufio.NewReader(r)
			for want := 1; want <= acks; want++ {
				b := make([]byte, 4)
				if _, err := io.ReadFull(br, b); err != nil {
					done <- err
					return
				}
				if b[0] != packets.Puback<<4 || b[1] != 2 || int(b[2])<<8|int(b[3]) != want+c {
					done <- fmt.Errorf("client %d: got % x, want PUBACK %d", c, b, want+c)
					return
				}
			}
			done <- nil
		}()
		go func() {
			for id := 1; id <= acks; id++ {
				require.NoError(t, cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: uint16(id + c)}))
			}
		}()
	}
	for i := 0; i < clients; i++ {
		require.NoError(t, <-done)
	}

	cl, r, _ := newTestClient()
	defer cl.Stop(errClientStop)
	cl.Properties.ProtocolVersion = 4
	go io.Copy(io.Discard, r)
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7}
	allocs := testing.AllocsPerRun(200, func() { cl.WritePacket(ack) })
	if !raceEnabled {
		require.Less(t, allocs, 1.0, "allocations per PUBACK written (a new buffer each: 1)")
	}
}

// Patch 7: a PUBLISH is decoded from the buffer it was read into, without
// a second copy, and its topic and payload stay its own while the
// client reads the next packets.
func TestVigilReadPacketOwnBuffer(t *testing.T) {
	cl, r, _ := newTestClient()
	defer cl.Stop(errClientStop)
	publish := func(topic, payload string) []byte {
		b := []byte{packets.Publish << 4, byte(2 + len(topic) + len(payload)), 0, byte(len(topic))}
		return append(append(b, topic...), payload...)
	}
	go func() {
		var all []byte
		for i := 0; i < 3; i++ {
			all = append(all, publish(fmt.Sprintf("d/%d", i), fmt.Sprintf("payload %d", i))...)
		}
		_, _ = r.Write(all)
	}()
	var got []packets.Packet
	for i := 0; i < 3; i++ {
		fh := new(packets.FixedHeader)
		require.NoError(t, cl.ReadFixedHeader(fh))
		pk, err := cl.ReadPacket(fh)
		require.NoError(t, err)
		got = append(got, pk)
	}
	got[1].Payload[0] = 'X' // a hook may change its packet's payload
	for i, pk := range got {
		want := fmt.Sprintf("payload %d", i)
		if i == 1 {
			want = "Xayload 1"
		}
		require.Equal(t, fmt.Sprintf("d/%d", i), pk.TopicName)
		require.Equal(t, want, string(pk.Payload))
	}
}

// The expiry loops, which run every second, take their snapshot of the
// clients without allocating once it has grown to their number, still
// expire what they should, and keep no client alive between ticks.
func TestVigilExpiryLoopsAllocateNothing(t *testing.T) {
	s := New(nil)
	n := time.Now().Unix()
	for i := 0; i < 1000; i++ {
		cl, _, _ := newTestClient()
		cl.ID = fmt.Sprintf("c%d", i)
		cl.ops.info = s.Info
		s.Clients.Add(cl)
	}
	s.clearExpiredClients(n)
	s.clearExpiredInflights(n)
	if a := testing.AllocsPerRun(20, func() { s.clearExpiredClients(n); s.clearExpiredInflights(n) }); a != 0 {
		t.Fatalf("the expiry loops allocate %v times a tick with 1,000 idle clients; want 0", a)
	}
	for _, cl := range s.loop.clients[:cap(s.loop.clients)] {
		require.Nil(t, cl, "a client kept in the snapshot between ticks")
	}

	// A client disconnected long ago expires; a connected one stays.
	gone, _, _ := newTestClient()
	gone.ID = "gone"
	gone.State.disconnected = n - 100
	gone.State.cancelOpen()
	s.Options.Capabilities.MaximumSessionExpiryInterval = 10
	s.Clients.Add(gone)
	s.clearExpiredClients(n)
	_, ok := s.Clients.Get("gone")
	require.False(t, ok)
	require.Equal(t, 1000, s.Clients.Len())

	// An expired inflight message is dropped.
	cl, _ := s.Clients.Get("c7")
	cl.State.Inflight.Set(packets.Packet{PacketID: 1, Expiry: n - 1})
	s.clearExpiredInflights(n)
	require.Len(t, cl.State.Inflight.GetAll(false), 0)
}
