// Package jsqueue puts NATS JetStream between ingest and storage: ingest
// nodes append each validated reading to a stream and acknowledge the
// device once JetStream has it (a PubAck; durable as the stream's
// storage and the servers' sync setting make it — run nats-server with
// jetstream { sync_interval: always } for an fsync before every ack);
// workers consume the stream in order, store the readings (idempotent by
// device and reading id) and hand the new ones to rules and alerts.
//
// Subjects are {prefix}.readings.{partition}, the partition a hash of
// the patient (16 of them); each partition is worked by one worker at a
// time (see Work), so a patient's readings are processed in order.
package jsqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
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
	o  Options
	nc *nats.Conn
	// lastFailover is when the connection last moved away from a server
	// that stopped answering for JetStream (Unix ns).
	lastFailover atomic.Int64
	js           jetstream.JetStream
	stream       jetstream.Stream
	pending      *prometheus.GaugeVec
	stored       *prometheus.CounterVec
	owned        prometheus.Gauge
	failovers    prometheus.Counter
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
	cfg := jetstream.StreamConfig{
		Name:       streamName(o.Prefix),
		Subjects:   []string{o.Prefix + ".readings.>"},
		Storage:    jetstream.FileStorage,
		Replicas:   o.Replicas,
		Duplicates: 2 * time.Minute, // a re-send within it is acknowledged as a duplicate at once
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     7 * 24 * time.Hour, // a worker down longer than this loses readings: alert on lag first
	}
	// A cluster that has just started may not have elected its meta
	// leader yet: JetStream's API times out or answers "temporarily
	// unavailable" for a while. Wait for it (saying so) rather than fail
	// the node; a configuration JetStream refuses fails at once.
	var st jetstream.Stream
	giveUp := time.Now().Add(StartTimeout)
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		st, err = js.CreateOrUpdateStream(ctx, cfg)
		if err == nil {
			break
		}
		if !notReady(err) || ctx.Err() != nil || time.Now().Add(wait).After(giveUp) {
			nc.Close()
			return nil, vigil.Errorf(vigil.EUNAVAILABLE, "JetStream stream %s at %s: %v", cfg.Name, o.URL, err)
		}
		o.Logger.Warn("JetStream is not ready to create the readings stream yet; trying again", "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
	q := &Queue{o: o, nc: nc, js: js, stream: st,
		pending:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vigil_stream_pending", Help: "Readings in a partition of the JetStream stream not yet delivered to its worker, for the partitions this worker owns (alert when it grows)."}, []string{"partition"}),
		owned:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_stream_partitions_owned", Help: "Partitions of the readings stream this worker owns (16 in all, spread over the live workers)."}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_nats_failovers_total", Help: "Times the NATS connection moved to another server because JetStream stopped answering through the one it had."}),
		stored:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_stream_stored_total", Help: "Readings workers took from the stream, by outcome (stored, duplicate)."}, []string{"outcome"}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(q.pending, q.stored, q.owned, q.failovers)
	}
	return q, nil
}

// StartTimeout is how long Open waits for JetStream to become ready.
const StartTimeout = 2 * time.Minute

// notReady tells whether err means JetStream cannot answer yet (a
// cluster electing its leaders, a server still starting) rather than that
// it refused the stream.
func notReady(err error) bool {
	var api *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders):
		return true
	case errors.As(err, &api):
		return api.Code == 503 || api.ErrorCode == jsErrNoSuitablePeers
	}
	return false
}

// jsErrNoSuitablePeers is JetStream's "no suitable peers for placement",
// which a cluster whose servers have not all met yet answers.
const jsErrNoSuitablePeers jetstream.ErrorCode = 10005

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
			q.failover(err)
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
			q.failover(err)
			return nil, vigil.Errorf(vigil.EUNAVAILABLE, "JetStream did not take reading %d: %v", i, err)
		case <-ctx.Done():
			return nil, vigil.Errorf(vigil.EUNAVAILABLE, "%v", ctx.Err())
		case <-late.C:
			q.failover(errors.New("no acknowledgement in time"))
			return nil, vigil.Errorf(vigil.EUNAVAILABLE, "JetStream did not acknowledge reading %d in time", i)
		}
	}
	return res, nil
}

// failover moves the connection to another server of the cluster after
// JetStream failed to answer through this one. A server cut off from the
// others by a network partition keeps its clients connected but has no
// quorum, so without this the connection would stay with it and ingest
// would stop until the partition heals (TestJetStreamClusterPartition).
// nats.go reconnects to the next server of its pool; at most once in
// FailoverEvery, so that a whole cluster briefly electing a leader does
// not make the connection hop around.
func (q *Queue) failover(err error) {
	now := time.Now().UnixNano()
	last := q.lastFailover.Load()
	if now-last < int64(FailoverEvery) || !q.lastFailover.CompareAndSwap(last, now) {
		return
	}
	q.o.Logger.Warn("JetStream did not answer through this NATS server; moving to another", "server", q.nc.ConnectedUrlRedacted(), "err", err)
	q.failovers.Inc()
	q.nc.ForceReconnect()
}

// FailoverEvery is the least time between two failovers.
const FailoverEvery = 5 * time.Second

// Partition ownership. Each partition has its own durable consumer and is
// worked by one worker at a time, its owner, so a patient's readings are
// stored and evaluated in the order they were acknowledged. Owners hold a
// lease, a key in the KV bucket {stream}_LEASES that expires LeaseTTL
// after its last refresh; workers announce themselves in {stream}_WORKERS
// and each claims its fair share (16 ÷ live workers, rounded up), giving
// back what exceeds it, so partitions spread over the workers and move to
// the others when one stops (at once) or dies (after LeaseTTL).
//
// Order across an owner's death: a message it fetched but did not
// acknowledge comes again AckWait after delivery, and JetStream delivers
// those before newer ones. AckWait is shorter than the time a dead
// owner's lease takes to expire (LeaseTTL − LeaseRefresh), so the next
// owner starts with them.
const (
	LeaseTTL     = 15 * time.Second
	LeaseRefresh = 3 * time.Second
	AckWait      = 10 * time.Second
)

// Store is where a worker puts the readings.
type Store interface {
	AppendReadings(ctx context.Context, rs []*vigil.Reading) ([]vigil.AppendResult, error)
}

// Work takes part in working the stream until ctx ends: it claims its
// share of partitions and, for each, stores batches in order, calls
// onStored with the readings that were new, then acknowledges the batch.
// A batch that fails to store is not acknowledged and comes again. When
// ctx ends it finishes the batches under way and gives its partitions
// back.
//
// Setting up (the KV buckets, a migration) is retried until it succeeds:
// a cluster still electing leaders, or a NATS server away for a while,
// delays the worker but never leaves the stream unworked.
func (q *Queue) Work(ctx context.Context, st Store, onStored func(context.Context, []*vigil.Reading)) error {
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		w, err := q.newWorker(ctx, st, onStored)
		if err == nil {
			w.run(ctx)
			return nil
		}
		q.o.Logger.Warn("JetStream worker cannot start yet; trying again", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

type worker struct {
	q        *Queue
	id       string
	st       Store
	onStored func(context.Context, []*vigil.Reading)
	members  jetstream.KeyValue
	leases   jetstream.KeyValue
	owned    map[int]*lease
}

// lease is one claimed partition: its lease and consumer loop.
type lease struct {
	n      int
	rev    uint64       // the lease key's revision
	valid  atomic.Int64 // the lease is ours until then (Unix ns)
	cancel context.CancelFunc
	done   chan struct{}
}

func (q *Queue) newWorker(ctx context.Context, st Store, onStored func(context.Context, []*vigil.Reading)) (*worker, error) {
	name := streamName(q.o.Prefix)
	kv := func(bucket string) (jetstream.KeyValue, error) {
		b, err := q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name + "_" + bucket, TTL: LeaseTTL, Replicas: q.o.Replicas, Storage: jetstream.FileStorage})
		if err != nil {
			return nil, vigil.Errorf(vigil.EUNAVAILABLE, "JetStream key-value bucket %s: %v", bucket, err)
		}
		return b, nil
	}
	w := &worker{q: q, st: st, onStored: onStored, owned: map[int]*lease{}}
	var err error
	if w.members, err = kv("WORKERS"); err != nil {
		return nil, err
	}
	if w.leases, err = kv("LEASES"); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	w.id = fmt.Sprintf("%s-%d-%s", strings.NewReplacer(".", "_", " ", "_").Replace(host), os.Getpid(), nuid.Next())
	if err := q.migrateShared(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// migrateShared replaces the single consumer earlier versions shared
// among workers ("workers") by the partition consumers, starting them
// where it had acknowledged everything.
func (q *Queue) migrateShared(ctx context.Context) error {
	c, err := q.stream.Consumer(ctx, "workers")
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil
	} else if err != nil {
		return vigil.Errorf(vigil.EUNAVAILABLE, "JetStream consumer: %v", err)
	}
	info := c.CachedInfo()
	for n := range Partitions {
		if _, err := q.stream.CreateConsumer(ctx, q.consumerConfig(n, info.AckFloor.Stream+1)); err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
			return vigil.Errorf(vigil.EUNAVAILABLE, "JetStream consumer: %v", err)
		}
	}
	q.o.Logger.Info("moved from the shared workers consumer to one per partition", "from_sequence", info.AckFloor.Stream+1)
	return q.stream.DeleteConsumer(ctx, "workers")
}

func (q *Queue) consumerConfig(n int, startSeq uint64) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:       fmt.Sprintf("workers-p%02d", n),
		FilterSubject: fmt.Sprintf("%s.readings.%d", q.o.Prefix, n),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       AckWait,
		MaxAckPending: 4096,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if startSeq > 1 {
		c.DeliverPolicy, c.OptStartSeq = jetstream.DeliverByStartSequencePolicy, startSeq
	}
	return c
}

func (w *worker) run(ctx context.Context) {
	t := time.NewTicker(LeaseRefresh)
	defer t.Stop()
	for {
		w.balance(ctx)
		select {
		case <-ctx.Done():
			for n := range w.owned {
				w.release(n)
			}
			w.members.Delete(context.Background(), w.id)
			w.q.owned.Set(0)
			return
		case <-t.C:
		}
	}
}

// balance refreshes this worker's membership and leases, gives back
// partitions beyond its share and claims free ones up to it.
func (w *worker) balance(ctx context.Context) {
	if _, err := w.members.Put(ctx, w.id, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		w.q.o.Logger.Warn("JetStream: cannot announce this worker", "err", err)
	}
	for n, p := range w.owned {
		rev, err := w.leases.Update(ctx, leaseKey(n), []byte(w.id), p.rev)
		if err != nil {
			// Expired and taken, or NATS unreachable for too long: stop
			// before another owner works it too.
			w.q.o.Logger.Warn("JetStream: lost the lease of a partition; stopping work on it", "partition", n, "err", err)
			w.stop(n)
			continue
		}
		p.rev = rev
		p.valid.Store(time.Now().Add(LeaseTTL - LeaseRefresh).UnixNano())
	}
	live := 1
	if keys, err := w.members.ListKeys(ctx); err == nil {
		live = 0
		for range keys.Keys() {
			live++
		}
		keys.Stop()
		live = max(live, 1)
	}
	share := (Partitions + live - 1) / live
	w.q.o.Logger.Debug("JetStream: balancing partitions", "worker", w.id, "live", live, "share", share, "owned", len(w.owned))
	for n := range w.owned {
		if len(w.owned) <= share {
			break
		}
		w.release(n)
	}
	for n := 0; n < Partitions && len(w.owned) < share; n++ {
		if _, mine := w.owned[n]; mine {
			continue
		}
		rev, err := w.leases.Create(ctx, leaseKey(n), []byte(w.id))
		if err != nil {
			continue // held by another worker (or NATS is away: next time)
		}
		w.start(ctx, n, rev)
	}
	w.q.owned.Set(float64(len(w.owned)))
}

func leaseKey(n int) string { return fmt.Sprintf("p%02d", n) }

func (w *worker) start(ctx context.Context, n int, rev uint64) {
	pctx, cancel := context.WithCancel(ctx)
	p := &lease{n: n, rev: rev, cancel: cancel, done: make(chan struct{})}
	p.valid.Store(time.Now().Add(LeaseTTL - LeaseRefresh).UnixNano())
	w.owned[n] = p
	go func() {
		defer close(p.done)
		w.consume(pctx, p)
	}()
}

// stop ends work on partition n (after its batch under way).
func (w *worker) stop(n int) {
	p := w.owned[n]
	p.cancel()
	<-p.done
	delete(w.owned, n)
}

// release stops work on partition n and gives its lease back.
func (w *worker) release(n int) {
	rev := w.owned[n].rev
	w.stop(n)
	if err := w.leases.Delete(context.Background(), leaseKey(n), jetstream.LastRevision(rev)); err != nil {
		w.q.o.Logger.Warn("JetStream: could not give a partition back; it frees itself when its lease expires", "partition", n, "err", err)
	}
}

// consume works partition p in order until ctx ends or its lease lapses.
func (w *worker) consume(ctx context.Context, p *lease) {
	q := w.q
	var c jetstream.Consumer
	for wait := 250 * time.Millisecond; c == nil; wait = min(2*wait, 10*time.Second) {
		var err error
		c, err = q.stream.CreateOrUpdateConsumer(ctx, q.consumerConfig(p.n, 0))
		if err != nil {
			if made, ierr := q.stream.Consumer(ctx, q.consumerConfig(p.n, 0).Durable); ierr == nil {
				c, err = made, nil // made by a migration, with its own start
			}
		}
		if err == nil {
			break
		}
		c = nil
		q.o.Logger.Warn("JetStream consumer not ready; trying again", "partition", p.n, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	for ctx.Err() == nil {
		batch, err := c.Fetch(512, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			q.o.Logger.Warn("JetStream fetch failed", "partition", p.n, "err", err)
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
			q.o.Logger.Warn("JetStream fetch", "partition", p.n, "err", err)
		}
		if len(rs) == 0 {
			continue
		}
		// Store only while the lease is surely ours. If a refresh is late
		// (NATS unreachable), wait: a refresh revives the partition; a
		// lost lease stops it, and the batch, unacknowledged, comes again
		// to the next owner, in order.
		for time.Now().UnixNano() > p.valid.Load() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		res, err := w.st.AppendReadings(ctx, rs)
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
		if len(fresh) > 0 && w.onStored != nil {
			w.onStored(ctx, fresh)
		}
		for _, m := range msgs {
			m.DoubleAck(context.Background())
		}
		// The last message says how many wait behind it: no extra request.
		if md, err := msgs[len(msgs)-1].Metadata(); err == nil {
			q.pending.With(prometheus.Labels{"partition": strconv.Itoa(p.n)}).Set(float64(md.NumPending))
		}
	}
}

// Conn is the queue's NATS connection (for other subjects under Prefix).
func (q *Queue) Conn() *nats.Conn { return q.nc }

// Prefix is the subject prefix.
func (q *Queue) Prefix() string { return q.o.Prefix }
