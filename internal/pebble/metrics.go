package pebble

import (
	"encoding/json"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
)

type metrics struct {
	readings     prometheus.Counter
	appendErrors prometheus.Counter
	compacted    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Store) *metrics {
	m := &metrics{
		readings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_store_readings_written_total", Help: "Readings made durable by the embedded store (duplicates excluded).",
		}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_store_append_errors_total", Help: "Failed reading commits.",
		}),
		compacted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_store_samples_compacted_total", Help: "Head samples folded into compressed chunks.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.readings, m.appendErrors, m.compacted,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "vigil_store_disk_bytes", Help: "Bytes the embedded store occupies on disk.",
			}, func() float64 { return float64(s.db.Metrics().DiskSpaceUsage()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "vigil_store_dead_letters", Help: "Dead letters kept (bounded by the dead-letter retention).",
			}, func() float64 { return float64(s.deadLetters.Load()) }))
	}
	return m
}

func unmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return vigil.Errorf(vigil.EINTERNAL, "corrupt record: %v", err)
	}
	return nil
}
