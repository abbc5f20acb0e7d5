package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil/internal/faultproxy"
)

// The edge benchmarks compare vigil edge with the store-and-forward most
// sites would otherwise deploy: a Mosquitto broker bridged to an upstream
// Mosquitto (queueing QoS 1 messages while the bridge is down), measured
// in the same run on the same machine. Mosquitto's queue is in memory
// (persisted only at its autosave interval); Vigil's buffer is synced
// before each device acknowledgement, and forwarded readings are
// validated, stored and evaluated upstream.
//
// go test -run '^$' -bench 'Edge' -benchtime 1x ./cmd/vigil/

const benchBacklog = 20_000

// BenchmarkEdgeCatchUp buffers 20,000 readings while the link is down,
// then restores it and reports how fast the backlog reaches the server.
func BenchmarkEdgeCatchUp(b *testing.B) {
	b.Setenv("VIGIL_TEST_MAIN", "1")
	for b.Loop() {
		const devices = 4
		r := newEdgeRig(b, devices, time.Now().Add(-2*time.Hour).Truncate(time.Second))
		c, err := waitControl(context.Background(), r.edir, 30*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		for deadline := time.Now().Add(30 * time.Second); postEdgeBatch(b, c.HTTPURL, "cd0", r.secrets[0], r.t0, 0, 1) != 200; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("the edge never took a reading (configuration not fetched?)")
			}
		}
		r.waitDrained(time.Minute)
		r.proxy.Block()
		per := benchBacklog / devices
		for d := range devices {
			for from := 1; from < per+1; from += 500 {
				if st := postEdgeBatch(b, c.HTTPURL, fmt.Sprintf("cd%d", d), r.secrets[d], r.t0, from, 500); st != 200 {
					b.Fatalf("post to the edge: %d", st)
				}
			}
		}
		if n := r.edgeMetric("vigil_edge_buffer_readings"); n < benchBacklog {
			b.Fatalf("buffer holds %v readings", n)
		}
		r.proxy.Unblock()
		took := r.waitDrained(5 * time.Minute)
		vigilRate := benchBacklog / took.Seconds()

		peerRate := mosquittoBridgeCatchUp(b)
		b.ReportMetric(vigilRate, "vigil-readings/s")
		b.ReportMetric(peerRate, "mosquitto-bridge-msgs/s")
		if peerRate > 0 {
			b.ReportMetric(vigilRate/peerRate, "vigil/mosquitto")
		}
	}
}

// postEdgeBatch posts n heart rates of device dev (sequence from, one a
// second from t0) to the edge's HTTP device API.
func postEdgeBatch(b testing.TB, base, dev, secret string, t0 time.Time, from, n int) int {
	var body bytes.Buffer
	body.WriteString("[")
	for i := range n {
		if i > 0 {
			body.WriteString(",")
		}
		fmt.Fprintf(&body, `{"id":"%d","time":%q,"values":[{"code":"8867-4","value":%d,"unit":"/min"}]}`,
			from+i, t0.Add(time.Duration(from+i)*time.Second).UTC().Format(time.RFC3339), 60+(from+i)%40)
	}
	body.WriteString("]")
	req, _ := http.NewRequest("POST", base+"/api/v1/devices/"+dev+"/readings", &body)
	req.SetBasicAuth(dev, secret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// mosquittoPair starts an upstream Mosquitto and an edge Mosquitto
// bridged to it through a fault proxy; it returns the edge's and the
// upstream's addresses, the edge's process and the proxy. 0 when there
// is no mosquitto here.
func mosquittoPair(b testing.TB) (edgeAddr, upAddr string, edge *exec.Cmd, proxy *faultproxy.Proxy) {
	exe := mosquittoExe()
	if exe == "" {
		b.Log("no mosquitto here: no peer")
		return "", "", nil, nil
	}
	dir := b.TempDir()
	_, upAddr = startMosquitto(b, exe, dir, "upstream", "max_queued_messages 0\n")
	proxy, err := faultproxy.New(upAddr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { proxy.Close() })
	edge, edgeAddr = startMosquitto(b, exe, dir, "edge", fmt.Sprintf("max_queued_messages 0\npersistence true\npersistence_location %s/\nconnection up\naddress %s\ntopic vigil/# out 1\ncleansession false\nrestart_timeout 1 2\n", dir, proxy.Addr()))
	return edgeAddr, upAddr, edge, proxy
}

// mqttClient connects a paho client (MQTT 5, no credentials) to addr.
func mqttClient(b testing.TB, addr, id string, onPublish func(*paho.Publish)) *paho.Client {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	cfg := paho.ClientConfig{Conn: conn, ClientID: id}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(p paho.PublishReceived) (bool, error) { onPublish(p.Packet); return true, nil }}
	}
	c := paho.NewClient(cfg)
	if _, err := c.Connect(context.Background(), &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Disconnect(&paho.Disconnect{}); conn.Close() })
	return c
}

// mosquittoBridgeCatchUp queues the backlog in the edge Mosquitto while
// its bridge is down and times its delivery upstream once it is back.
func mosquittoBridgeCatchUp(b *testing.B) float64 {
	edgeAddr, upAddr, _, proxy := mosquittoPair(b)
	if proxy == nil {
		return 0
	}
	var got atomic.Int64
	sub := mqttClient(b, upAddr, "counter", func(*paho.Publish) { got.Add(1) })
	if _, err := sub.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil/#", QoS: 1}}}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the bridge connects
	proxy.Block()
	time.Sleep(500 * time.Millisecond)
	pub := mqttClient(b, edgeAddr, "dev", nil)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range benchBacklog {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			payload := `{"id":"` + strconv.Itoa(i) + `","time":"2026-12-01T00:00:00Z","values":[{"code":"8867-4","value":70,"unit":"/min"}]}`
			if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "vigil/v1/devices/d/readings", QoS: 1, Payload: []byte(payload)}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	before := got.Load()
	start := time.Now()
	proxy.Unblock()
	for got.Load() < benchBacklog {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("mosquitto bridge delivered %d of %d (%d before the link returned)", got.Load(), benchBacklog, before)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	if before > 0 {
		b.Logf("mosquitto bridge delivered %d while the link was down", before)
	}
	return float64(benchBacklog-before) / took.Seconds()
}

// cpuSeconds is a process's user+system CPU time.
func cpuSeconds(b testing.TB, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // clock ticks (USER_HZ 100)
}

// footprint measures a process's RSS and CPU share over d while load runs.
func footprint(b testing.TB, pid int, d time.Duration, load func(stop <-chan struct{})) (rssMiB, cpuPct float64) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); load(stop) }()
	c0, t0 := cpuSeconds(b, pid), time.Now()
	time.Sleep(d)
	c1, t1 := cpuSeconds(b, pid), time.Now()
	n, err := vmRSS(pid)
	if err != nil {
		b.Fatal(err)
	}
	close(stop)
	<-done
	return float64(n) / (1 << 20), 100 * (c1 - c0) / t1.Sub(t0).Seconds()
}

// paced publishes rate QoS 1 messages a second in all from the clients
// until stop; payload makes message i.
func paced(clients []*paho.Client, topic func(c int) string, rate int, payload func(c, i int) []byte) func(stop <-chan struct{}) {
	return func(stop <-chan struct{}) {
		if rate == 0 {
			<-stop
			return
		}
		var wg sync.WaitGroup
		for ci, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(time.Second * time.Duration(len(clients)) / time.Duration(rate))
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					c.Publish(context.Background(), &paho.Publish{Topic: topic(ci), QoS: 1, Payload: payload(ci, i)})
				}
			}()
		}
		wg.Wait()
	}
}

// BenchmarkEdgeFootprint reports vigil edge's resident memory and CPU
// share at idle and while four devices send 1,000 readings a second over
// MQTT (forwarded live to the server), with the Mosquitto bridge's under
// the same load.
func BenchmarkEdgeFootprint(b *testing.B) {
	b.Setenv("VIGIL_TEST_MAIN", "1")
	for b.Loop() {
		const devices = 4
		t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
		r := newEdgeRig(b, devices, t0)
		var clients []*paho.Client
		for d := range devices {
			var c *paho.Client
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				conn, err := net.Dial("tcp", r.edgeMQTT)
				if err != nil {
					b.Fatal(err)
				}
				user := fmt.Sprintf("cd%d", d)
				c = paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: user})
				ca, err := c.Connect(context.Background(), &paho.Connect{ClientID: user, Username: user, UsernameFlag: true, Password: []byte(r.secrets[d]), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
				if err == nil && ca.ReasonCode == 0 {
					break
				}
				conn.Close()
				if time.Now().After(deadline) {
					b.Fatal("devices cannot connect to the edge (configuration not fetched?)")
				}
			}
			clients = append(clients, c)
		}
		reading := func(c, i int) []byte {
			return []byte(fmt.Sprintf(`{"id":"f%d","time":%q,"values":[{"code":"8867-4","value":%d,"unit":"/min"}]}`, i, t0.Add(time.Duration(i)*time.Millisecond).UTC().Format(time.RFC3339Nano), 60+i%40))
		}
		topic := func(c int) string { return fmt.Sprintf("vigil/v1/devices/cd%d/readings", c) }
		pid := r.edge.cmd.Process.Pid
		time.Sleep(3 * time.Second)
		idleRSS, idleCPU := footprint(b, pid, 5*time.Second, paced(clients, topic, 0, reading))
		loadRSS, loadCPU := footprint(b, pid, 10*time.Second, paced(clients, topic, 1000, reading))
		b.ReportMetric(idleRSS, "vigil-idle-MiB")
		b.ReportMetric(idleCPU, "vigil-idle-cpu%")
		b.ReportMetric(loadRSS, "vigil-1k/s-MiB")
		b.ReportMetric(loadCPU, "vigil-1k/s-cpu%")
		stop(r.edge) // gracefully: a --cpuprofile is written out

		edgeAddr, _, mq, _ := mosquittoPair(b)
		if mq == nil {
			continue
		}
		var mc []*paho.Client
		for d := range devices {
			mc = append(mc, mqttClient(b, edgeAddr, fmt.Sprintf("m%d", d), nil))
		}
		time.Sleep(3 * time.Second)
		mIdleRSS, mIdleCPU := footprint(b, mq.Process.Pid, 5*time.Second, paced(mc, topic, 0, reading))
		mLoadRSS, mLoadCPU := footprint(b, mq.Process.Pid, 10*time.Second, paced(mc, topic, 1000, reading))
		b.ReportMetric(mIdleRSS, "mosquitto-idle-MiB")
		b.ReportMetric(mIdleCPU, "mosquitto-idle-cpu%")
		b.ReportMetric(mLoadRSS, "mosquitto-1k/s-MiB")
		b.ReportMetric(mLoadCPU, "mosquitto-1k/s-cpu%")
	}
}
