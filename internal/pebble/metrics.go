package pebble

import (
	"github.com/vigil-iomt/vigil/internal/seal"

	"encoding/json"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
)

type metrics struct {
	readings     prometheus.Counter
	appendErrors prometheus.Counter
	compacted    prometheus.Counter
	removed      *prometheus.CounterVec
}

// retained counts what retention removed, by data class.
func (m *metrics) retained(st RetentionStats) {
	m.removed.WithLabelValues("readings").Add(float64(st.Samples))
	m.removed.WithLabelValues("alerts").Add(float64(st.Alerts))
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
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_retention_removed_total", Help: "Records removed by the retention policies, by data class (readings: raw samples, rolled up first; alerts: resolved alerts; dead letters are in vigil_store_dead_letters).",
		}, []string{"class"}),
	}
	if reg != nil {
		reg.MustRegister(m.readings, m.appendErrors, m.compacted, m.removed,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "vigil_store_disk_bytes", Help: "Bytes the embedded store occupies on disk.",
			}, func() float64 { return float64(s.db.Metrics().DiskSpaceUsage()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "vigil_store_dead_letters", Help: "Dead letters kept (bounded by the dead-letter retention).",
			}, func() float64 { return float64(s.deadLetters.Load()) }))
	}
	return m
}

func (s *Store) unmarshal(b []byte, v any) error {
	if s.opts.Sealer != nil {
		var err error
		if b, err = s.opts.Sealer.Open(b); err != nil {
			return vigil.Errorf(vigil.EINTERNAL, "sealed record does not open: %v", err)
		}
	} else if seal.Sealed(b) {
		return vigil.Errorf(vigil.EINTERNAL, "the record is encrypted and this store has no key (master key missing?)")
	}
	if err := json.Unmarshal(b, v); err != nil {
		return vigil.Errorf(vigil.EINTERNAL, "corrupt record: %v", err)
	}
	return nil
}
