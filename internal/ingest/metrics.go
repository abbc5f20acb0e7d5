package ingest

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	readings    *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	deadLetters prometheus.Counter
	durable     prometheus.Histogram
	evaluated   prometheus.Histogram
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
		durable: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_ingest_durable_seconds", Help: "Time from receiving a reading to it being durable.", Buckets: lat,
		}),
		evaluated: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_ingest_evaluated_seconds", Help: "Time from receiving a reading to the alert rules and live view having processed it.", Buckets: lat,
		}),
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
