package bench

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/vigil-iomt/vigil/internal/hl7"
)

// mllpPub is one HL7 v2 sender (an interface engine or gateway) on one
// MLLP connection, with up to InFlight messages sent before their ACKs
// (which come back in order); an ACK with MSA-1 AA (Vigil sends it after
// the readings are durable) is the acknowledgement.
type mllpPub struct {
	conn net.Conn
}

func dialMLLP(ctx context.Context, o Options) (*mllpPub, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	return &mllpPub{conn: c}, nil
}

func (p *mllpPub) publish(ctx context.Context, o Options, i int, measuring *atomic.Bool, h *hdrhistogram.Histogram) (sent, acked uint64, err error) {
	slots := make(chan struct{}, o.InFlight)
	var mu sync.Mutex
	var times []time.Time // send times of messages awaiting their ACK, in order
	readErr := make(chan error, 1)
	readDone := make(chan struct{})
	var a atomic.Uint64
	// The reader records into h: it must be done before publish returns
	// (the caller then merges the histograms).
	defer func() {
		p.conn.Close()
		<-readDone
	}()
	go func() {
		defer close(readDone)
		fr := hl7.NewFrameReader(p.conn, 1<<20)
		for {
			b, err := fr.Read()
			if err != nil {
				readErr <- err
				return
			}
			mu.Lock()
			t0 := times[0]
			times = times[1:]
			mu.Unlock()
			<-slots
			m, perr := hl7.Parse(b)
			if perr != nil || m.Segment("MSA") == nil || m.Segment("MSA").Value(1) != "AA" {
				continue // refused: not acknowledged
			}
			if measuring.Load() {
				a.Add(1)
				mu.Lock()
				h.RecordValue(int64(time.Since(t0) / time.Microsecond))
				mu.Unlock()
			}
		}
	}()
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	next := time.Now()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return sent, a.Load(), nil
		case err := <-readErr:
			return sent, a.Load(), err
		case slots <- struct{}{}:
		}
		if interval > 0 {
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			next = next.Add(interval)
		}
		seq++
		frame := hl7.AppendFrame(nil, o.Payload(i, seq))
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		p.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := p.conn.Write(frame); err != nil {
			return sent, a.Load(), fmt.Errorf("send: %w", err)
		}
		sent++
	}
}

func (p *mllpPub) close() { p.conn.Close() }
