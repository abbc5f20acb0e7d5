// Package jsqueue puts NATS JetStream between ingest and storage: ingest
// nodes append each validated reading to a stream and acknowledge the
// device once JetStream has it (a PubAck; durable as the stream's
// storage and the servers' sync setting make it — run nats-server with
// jetstream { sync_interval: always } for an fsync before every ack);
// workers consume the stream in order, store the readings (idempotent by
// device and reading id) and hand the new ones to rules and alerts.
//
// Subjects are {prefix}.readings.{partition}, the partition a hash of
// the patient (16 of them), so that a patient's readings stay in order
// when partitions are later spread over workers.
package jsqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
)

// Partitions is the number of reading subjects.
const Partitions = 16

// PubAckTimeout is how long a reading waits for JetStream's
// acknowledgement before it is refused as unavailable (and re-sent by its
// device): long enough for a stream leader to be elected again after a
// server is lost.
const PubAckTimeout = 10 * time.Second

// Options configure a Queue.
type Options struct {
	URL      string // nats://host:4222 (several, comma-separated, for a cluster)
	Prefix   string // subject prefix and stream name stem; "" means "vigil"
	Replicas int    // stream replicas (3 on a three-node cluster); 0 means 1
	Logger   *slog.Logger
	// Registerer, when set, gets the workers' metrics:
	// vigil_stream_pending (readings in the stream not yet delivered to a
	// worker) and vigil_stream_stored_total{outcome} (stored, duplicate).
	Registerer prometheus.Registerer
}

// Queue is a connection to the readings stream.
type Queue struct {
	o       Options
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  jetstream.Stream
	pending prometheus.Gauge
	stored  *prometheus.CounterVec
}

// Open connects and creates (or updates) the stream.
func Open(ctx context.Context, o Options) (*Queue, error) {
	if o.Prefix == "" {
		o.Prefix = "vigil"
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	nc, err := nats.Connect(o.URL, nats.Name("vigil"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, vigil.Errorf(vigil.EUNAVAILABLE, "NATS at %s: %v", o.URL, err)
	}
	// A PubAck that never comes (its server died with the message) must
	// not hold the ingest pipeline: after PubAckTimeout the readings are
	// refused as unavailable, and devices send them again.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(PubAckTimeout))
	if err != nil {
		nc.Close()
		return nil, err
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       streamName(o.Prefix),
		Subjects:   []string{o.Prefix + ".readings.>"},
		Storage:    jetstream.FileStorage,
		Replicas:   o.Replicas,
		Duplicates: 2 * time.Minute, // a re-send within it is acknowledged as a duplicate at once
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     7 * 24 * time.Hour, // a worker down longer than this loses readings: alert on lag first
	})
	if err != nil {
		nc.Close()
		return nil, vigil.Errorf(vigil.EUNAVAILABLE, "JetStream stream: %v", err)
	}
	q := &Queue{o: o, nc: nc, js: js, stream: st,
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_stream_pending", Help: "Readings in the JetStream stream not yet delivered to a worker (alert when it grows)."}),
		stored:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_stream_stored_total", Help: "Readings workers took from the stream, by outcome (stored, duplicate)."}, []string{"outcome"}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(q.pending, q.stored)
	}
	return q, nil
}

func streamName(prefix string) string {
	b := []byte(prefix)
	for i, c := range b {
		if c == '.' || c == '*' || c == '>' || c == ' ' {
			b[i] = '_'
		}
	}
	return string(b) + "_READINGS"
}

// Close drops the connection.
func (q *Queue) Close() { q.nc.Close() }

func partition(patientID string) int {
	h := fnv.New32a()
	h.Write([]byte(patientID))
	return int(h.Sum32() % Partitions)
}

// AppendReadings publishes the readings and returns once JetStream has
// acknowledged every one (Duplicate: it had that device and reading id
// within its duplicate window). It stands in for the store's
// AppendReadings in the ingest pipeline.
func (q *Queue) AppendReadings(ctx context.Context, rs []*vigil.Reading) ([]vigil.AppendResult, error) {
	futures := make([]jetstream.PubAckFuture, len(rs))
	for i, r := range rs {
		data, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		msg := &nats.Msg{Subject: fmt.Sprintf("%s.readings.%d", q.o.Prefix, partition(r.PatientID)), Data: data, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, r.DeviceID+"/"+r.ID)
		if futures[i], err = q.js.PublishMsgAsync(msg); err != nil {
			return nil, vigil.Errorf(vigil.EUNAVAILABLE, "JetStream publish: %v", err)
		}
	}
	res := make([]vigil.AppendResult, len(rs))
	late := time.NewTimer(PubAckTimeout + time.Second) // the client's own timeout should fire first
	defer late.Stop()
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			res[i].Duplicate = ack.Duplicate
		case err := <-f.Err():
			return nil, vigil.Errorf(vigil.EUNAVAILABLE, "JetStream did not take reading %d: %v", i, err)
		case <-ctx.Done():
			return nil, vigil.Errorf(vigil.EUNAVAILABLE, "%v", ctx.Err())
		case <-late.C:
			return nil, vigil.Errorf(vigil.EUNAVAILABLE, "JetStream did not acknowledge reading %d in time", i)
		}
	}
	return res, nil
}

// Store is where a worker puts the readings.
type Store interface {
	AppendReadings(ctx context.Context, rs []*vigil.Reading) ([]vigil.AppendResult, error)
}

// Work consumes the stream with a durable consumer shared by the
// workers, stores each batch and calls onStored with the readings that
// were new, then acknowledges the batch; it returns when ctx ends. A
// batch that fails to store is not acknowledged and comes again.
func (q *Queue) Work(ctx context.Context, st Store, onStored func(context.Context, []*vigil.Reading)) error {
	c, err := q.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 4096,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return vigil.Errorf(vigil.EUNAVAILABLE, "JetStream consumer: %v", err)
	}
	for ctx.Err() == nil {
		batch, err := c.Fetch(512, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			q.o.Logger.Warn("JetStream fetch failed", "err", err)
			time.Sleep(250 * time.Millisecond)
			continue
		}
		var msgs []jetstream.Msg
		var rs []*vigil.Reading
		for m := range batch.Messages() {
			var r vigil.Reading
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				q.o.Logger.Error("unreadable reading in the stream: dropped", "subject", m.Subject(), "err", err)
				m.Term()
				continue
			}
			msgs, rs = append(msgs, m), append(rs, &r)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			q.o.Logger.Warn("JetStream fetch", "err", err)
		}
		if len(rs) == 0 {
			continue
		}
		res, err := st.AppendReadings(ctx, rs)
		if err != nil {
			q.o.Logger.Warn("storing a batch from the stream failed: it comes again", "readings", len(rs), "err", err)
			for _, m := range msgs {
				m.Nak()
			}
			continue
		}
		var fresh []*vigil.Reading
		for i, r := range rs {
			if !res[i].Duplicate {
				fresh = append(fresh, r)
			}
		}
		q.stored.WithLabelValues("stored").Add(float64(len(fresh)))
		q.stored.WithLabelValues("duplicate").Add(float64(len(rs) - len(fresh)))
		if len(fresh) > 0 && onStored != nil {
			onStored(ctx, fresh)
		}
		for _, m := range msgs {
			m.DoubleAck(ctx)
		}
		if info, err := c.Info(ctx); err == nil {
			q.pending.Set(float64(info.NumPending))
		}
	}
	return nil
}
