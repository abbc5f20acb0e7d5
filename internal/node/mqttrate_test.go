package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/node"
)

// A device flooding past its MQTT rate is slowed down (its connection is
// read more slowly) without losing or refusing anything, while another
// device's readings go through meanwhile.
func TestMQTTRateLimit(t *testing.T) {
	ctx := context.Background()
	n, err := node.Start(ctx, node.Options{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", MQTTRate: 50})
	must(t, err)
	t.Cleanup(func() { n.Close() })
	secrets := map[string]string{}
	for _, d := range []string{"flood", "calm"} {
		must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p-" + d, Identifier: "MRN-" + d}))
		s, err := n.Admin.AddDevice(ctx, &vigil.Device{ID: d, Kind: vigil.DeviceWearable})
		must(t, err)
		secrets[d] = s
		must(t, n.Admin.Assign(ctx, d, "p-"+d, time.Now().Add(-time.Hour)))
	}
	addr := n.MQTTAddr()
	flood, calm := mqtt5(t, addr, "flood", secrets["flood"]), mqtt5(t, addr, "calm", secrets["calm"])
	t0 := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	hr := `{"code":"8867-4","value":70,"unit":"/min"}`
	publish := func(c *paho.Client, dev string, i int) error {
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		pr, err := c.Publish(pctx, &paho.Publish{Topic: "vigil/v1/devices/" + dev + "/readings", QoS: 1,
			Payload: reading(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Second), hr)})
		if err == nil && pr.ReasonCode != 0 {
			err = fmt.Errorf("PUBACK reason %#x", pr.ReasonCode)
		}
		return err
	}

	// 250 messages at 50/s with a burst of 100: at least 3 s.
	const total = 250
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, total)
	finished := make(chan time.Time, 1)
	for w := range 25 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 25 {
				if err := publish(flood, "flood", i); err != nil {
					errs <- err
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		finished <- time.Now()
	}()
	time.Sleep(500 * time.Millisecond) // the flood is past its burst now
	for i := range 5 {
		must(t, publish(calm, "calm", i))
	}
	calmDone := time.Now()
	floodDone := <-finished
	close(errs)
	for err := range errs {
		t.Fatalf("flooding device: %v", err)
	}
	elapsed := floodDone.Sub(start)
	if elapsed < 2500*time.Millisecond {
		t.Fatalf("%d messages at 50/s took %v: not throttled", total, elapsed)
	}
	if !calmDone.Before(floodDone) {
		t.Fatalf("the calm device waited for the flood (calm done %v after start, flood %v)", calmDone.Sub(start), elapsed)
	}
	for d, want := range map[string]int{"flood": total, "calm": 5} {
		obs, _, err := n.Store.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p-" + d, Limit: 1000})
		must(t, err)
		if len(obs) != want {
			t.Fatalf("%s: %d readings stored, want %d", d, len(obs), want)
		}
	}
	if v := metricValue(t, n, "vigil_mqtt_throttled_total"); v < total-100-10 {
		t.Fatalf("vigil_mqtt_throttled_total = %v, want about %d", v, total-100)
	}
}

// metricValue is the value of a counter or gauge without labels.
func metricValue(t *testing.T, n *node.Node, name string) float64 {
	t.Helper()
	mfs, err := n.Registry.Gather()
	must(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) > 0 {
			m := mf.Metric[0]
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
