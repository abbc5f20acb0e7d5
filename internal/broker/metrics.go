package broker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the broker's Prometheus collectors.
type metrics struct {
	connections  prometheus.Gauge
	authFailures *prometheus.CounterVec // label reason: anonymous, bad_credentials, unavailable
	aclDenied    *prometheus.CounterVec // label action: publish, subscribe
	ackSeconds   prometheus.Histogram
	throttled    prometheus.Counter
}

// Auth failure reasons (label values of vigil_mqtt_auth_failures_total).
const (
	authAnonymous   = "anonymous"
	authBadCreds    = "bad_credentials"
	authForbidden   = "forbidden"
	authUnavailable = "unavailable"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_mqtt_connections",
			Help: "MQTT connections currently established (authenticated).",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_mqtt_auth_failures_total",
			Help: "MQTT CONNECTs refused, by reason.",
		}, []string{"reason"}),
		aclDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_mqtt_acl_denied_total",
			Help: "MQTT publishes and subscriptions refused by the topic ACL.",
		}, []string{"action"}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_mqtt_throttled_total",
			Help: "MQTT publishes that waited because their device exceeded its message rate (the connection was read more slowly).",
		}),
		ackSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_mqtt_publish_ack_seconds",
			Help:    "Time from receiving a QoS 1 readings PUBLISH to writing its PUBACK (includes the durable commit).",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16), // 0.25 ms .. ~8 s
		}),
	}
	for _, r := range []string{authAnonymous, authBadCreds, authForbidden, authUnavailable} {
		m.authFailures.WithLabelValues(r)
	}
	m.aclDenied.WithLabelValues("publish")
	m.aclDenied.WithLabelValues("subscribe")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connections, m.authFailures, m.aclDenied, m.ackSeconds, m.throttled} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register mqtt metrics: %w", err)
		}
	}
	return m, nil
}
