package ingest

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	readings    *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	deadLetters prometheus.Counter
	durable     *countHistogram
	evaluated   *countHistogram
	batch       prometheus.Histogram
	queued      prometheus.Gauge
	clockAhead  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, _ *Pipeline) *metrics {
	lat := []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5}
	m := &metrics{
		readings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_ingest_readings_total", Help: "Readings by source and outcome (accepted, duplicate, rejected).",
		}, []string{"source", "outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_ingest_rejections_total", Help: "Refused messages and readings by source and reason.",
		}, []string{"source", "reason"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_ingest_dead_letters_total", Help: "Refusals kept as dead letters.",
		}),
		durable:   newCountHistogram("vigil_ingest_durable_seconds", "Time from receiving a reading to it being durable.", lat),
		evaluated: newCountHistogram("vigil_ingest_evaluated_seconds", "Time from receiving a reading to the alert rules and live view having processed it.", lat),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_ingest_commit_readings", Help: "Readings per group commit.", Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_ingest_queued_messages", Help: "Messages waiting for a group commit.",
		}),
		clockAhead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_ingest_device_clock_ahead_total", Help: "Readings taken (within the accepted 5 minutes) whose device time was more than 2 s ahead of Vigil's clock at receipt: the device's clock is fast. By source.",
		}, []string{"source"}),
	}
	if reg != nil {
		reg.MustRegister(m.readings, m.rejected, m.deadLetters, m.durable, m.evaluated, m.batch, m.queued, m.clockAhead)
	}
	return m
}

// countHistogram is a Prometheus histogram that takes n equal
// observations at once: a message's readings share their receipt time,
// so the time to durable (or to evaluated) is the same for all of them,
// and a batch of 5,000 costs one bucket search instead of 5,000. It is
// exposed exactly as prometheus.NewHistogram's (_bucket, _sum, _count).
type countHistogram struct {
	name    string
	help    string
	desc    *prometheus.Desc
	mu      sync.Mutex
	upper   []float64
	buckets []uint64 // observations per bucket, not cumulative
	sum     float64
	count   uint64
}

func newCountHistogram(name, help string, buckets []float64) *countHistogram {
	return &countHistogram{
		name:    name,
		help:    help,
		desc:    prometheus.NewDesc(name, help, nil, nil),
		upper:   buckets,
		buckets: make([]uint64, len(buckets)),
	}
}

// ObserveN records n observations of v.
func (h *countHistogram) ObserveN(v float64, n int) {
	if n <= 0 {
		return
	}
	i := sort.SearchFloat64s(h.upper, v) // the first bucket whose upper bound is ≥ v
	h.mu.Lock()
	if i < len(h.buckets) {
		h.buckets[i] += uint64(n)
	}
	for range n { // as n observations add up, to the last bit
		h.sum += v
	}
	h.count += uint64(n)
	h.mu.Unlock()
}

func (h *countHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

func (h *countHistogram) Collect(ch chan<- prometheus.Metric) {
	cum := make(map[float64]uint64, len(h.upper))
	h.mu.Lock()
	var c uint64
	for i, ub := range h.upper {
		c += h.buckets[i]
		cum[ub] = c
	}
	count, sum := h.count, h.sum
	h.mu.Unlock()
	ch <- prometheus.MustNewConstHistogram(h.desc, count, sum, cum)
}
