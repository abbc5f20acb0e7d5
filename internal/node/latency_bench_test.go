package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/bench"
	"github.com/vigil-iomt/vigil/internal/node"
)

// BenchmarkAlertLatency measures how long a clinician waits for an alert:
// from a device publishing a feverish temperature (MQTT QoS 1) to the
// alert arriving on a web session's Server-Sent Events stream — which
// includes making the reading durable, the rule, storing the alert and
// the stream — while 16 other devices load Vigil at half of its maximum
// sustained ingest rate (measured first, in the same run). The peer is
// Mosquitto at 127.0.0.1:1883 in the same run: publish to delivery to a
// subscriber, with the same background load at the same rate (Mosquitto
// stores nothing). Reports p50 and p99 of both, in ms.
//
//	go test -run - -bench AlertLatency -benchtime 1x ./internal/node/
func BenchmarkAlertLatency(b *testing.B) {
	const alerts = 200
	const loadPublishers = 16
	ctx := context.Background()
	n, err := node.Start(ctx, node.Options{DataDir: b.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", MQTTRate: -1}) // measures capacity
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	start := time.Now().Add(-time.Minute)
	secrets := map[string]string{}
	for i := range loadPublishers + alerts {
		id := fmt.Sprintf("lat-%03d", i)
		if err := n.Admin.AddPatient(ctx, &vigil.Patient{ID: id}); err != nil {
			b.Fatal(err)
		}
		sec, err := n.Admin.AddDevice(ctx, &vigil.Device{ID: id, Kind: vigil.DeviceThermometer})
		if err != nil {
			b.Fatal(err)
		}
		if err := n.Admin.Assign(ctx, id, id, start); err != nil {
			b.Fatal(err)
		}
		secrets[id] = sec
	}
	if err := n.Admin.AddUser(ctx, &vigil.User{ID: "nurse-lat", Role: vigil.RoleNurse}, "correct horse battery"); err != nil {
		b.Fatal(err)
	}

	load := func(addr string, creds bool, rate float64, d time.Duration) bench.Options {
		o := bench.Options{Addr: addr, Publishers: loadPublishers, InFlight: 32, Duration: d, Rate: rate,
			Topic: func(i int) string { return "vigil/v1/devices/" + fmt.Sprintf("lat-%03d", i) + "/readings" },
			Payload: func(i int, seq uint64) []byte {
				return reading(fmt.Sprintf("l%d", seq), time.Now(), `{"code":"8310-5","value":36.8,"unit":"Cel"}`)
			}}
		if creds {
			o.Creds = func(i int) (string, string) { id := fmt.Sprintf("lat-%03d", i); return id, secrets[id] }
		}
		return o
	}
	max, err := bench.Run(ctx, load(n.MQTTAddr(), true, 0, 5*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	half := max.PerSecond / 2
	b.Logf("Vigil maximum sustained ingest: %.0f readings/s; measuring at %.0f/s", max.PerSecond, half)

	// The nurse's SSE stream.
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	req, _ := http.NewRequest("POST", n.URL()+"/login", strings.NewReader(url.Values{"user": {"nurse-lat"}, "password": {"correct horse battery"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", n.URL())
	resp, err := hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sreq, _ := http.NewRequestWithContext(sctx, "GET", n.URL()+"/web/api/events", nil)
	sresp, err := hc.Do(sreq)
	if err != nil || sresp.StatusCode != 200 {
		b.Fatalf("SSE: %v %v", err, sresp)
	}
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	go func() {
		sc := bufio.NewScanner(sresp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "alert":
				var a vigil.Alert
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &a) == nil && a.State == vigil.AlertFiring {
					mu.Lock()
					if _, ok := arrived[a.PatientID]; !ok {
						arrived[a.PatientID] = time.Now()
					}
					mu.Unlock()
				}
			}
		}
	}()

	measure := func(addr string, vigilSide bool, deliver func(id string) (time.Time, bool)) []time.Duration {
		d := time.Duration(alerts)*50*time.Millisecond + 2*time.Second
		done := make(chan error, 1)
		go func() { _, err := bench.Run(ctx, load(addr, vigilSide, half/loadPublishers, d)); done <- err }()
		time.Sleep(1500 * time.Millisecond) // the load's warm-up
		var lat []time.Duration
		sent := map[string]time.Time{}
		for i := range alerts {
			id := fmt.Sprintf("lat-%03d", loadPublishers+i)
			c := mqtt5ID(b, addr, userFor(vigilSide, id), secretFor(vigilSide, secrets, id), "alert-"+id)
			t0 := time.Now()
			payload := reading("fever", time.Now(), `{"code":"8310-5","value":39.8,"unit":"Cel"}`)
			topic := "vigil/v1/devices/" + id + "/readings"
			if !vigilSide {
				topic = "vigil-bench/alerts/" + id
			}
			if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
				b.Fatal(err)
			}
			sent[id] = t0
			c.Disconnect(&paho.Disconnect{})
			time.Sleep(50 * time.Millisecond)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for id, t0 := range sent {
			for {
				if at, ok := deliver(id); ok {
					lat = append(lat, at.Sub(t0))
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%s: no delivery for %s", addr, id)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		slices.Sort(lat)
		return lat
	}
	b.ResetTimer()
	vl := measure(n.MQTTAddr(), true, func(id string) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		at, ok := arrived[id]
		return at, ok
	})

	// The peer: Mosquitto, a subscriber on the alert topics.
	const peer = "127.0.0.1:1883"
	if c, err := net.DialTimeout("tcp", peer, time.Second); err != nil {
		b.Logf("no Mosquitto at %s: peer not measured", peer)
	} else {
		c.Close()
		sub := mqtt5ID(b, peer, "", "", "vigil-bench-sub")
		var pmu sync.Mutex
		got := map[string]time.Time{}
		sub.AddOnPublishReceived(func(p paho.PublishReceived) (bool, error) {
			id := strings.TrimPrefix(p.Packet.Topic, "vigil-bench/alerts/")
			pmu.Lock()
			if _, ok := got[id]; !ok {
				got[id] = time.Now()
			}
			pmu.Unlock()
			return true, nil
		})
		if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil-bench/alerts/#", QoS: 1}}}); err != nil {
			b.Fatal(err)
		}
		pl := measure(peer, false, func(id string) (time.Time, bool) {
			pmu.Lock()
			defer pmu.Unlock()
			at, ok := got[id]
			return at, ok
		})
		b.ReportMetric(ms(pct(pl, 50)), "mosquitto-p50-ms")
		b.ReportMetric(ms(pct(pl, 99)), "mosquitto-p99-ms")
		b.Logf("Mosquitto publish → subscriber: p50 %v p99 %v", pct(pl, 50), pct(pl, 99))
	}
	b.ReportMetric(half, "load-readings/s")
	b.ReportMetric(ms(pct(vl, 50)), "vigil-p50-ms")
	b.ReportMetric(ms(pct(vl, 99)), "vigil-p99-ms")
	b.Logf("Vigil device → durable → alert → SSE: p50 %v p99 %v (%d alerts)", pct(vl, 50), pct(vl, 99), len(vl))
}

func userFor(vigilSide bool, id string) string {
	if vigilSide {
		return id
	}
	return ""
}

func secretFor(vigilSide bool, secrets map[string]string, id string) string {
	if vigilSide {
		return secrets[id]
	}
	return ""
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, len(d)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
