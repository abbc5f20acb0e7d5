package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil/internal/faultproxy"
	"github.com/vigil-iomt/vigil/internal/node"
)

// edgeRig is a server (vigil serve over TLS, on its own data directory)
// with four patients and their wearables, an edge gateway edge1 that
// serves them (its client certificate from the server's CA), and a fault
// proxy on the link between them.
type edgeRig struct {
	t                  testing.TB
	sdir, edir, cdir   string
	secrets            []string
	t0                 time.Time
	srv, edge          child
	proxy              *faultproxy.Proxy
	edgeMQTT, edgeHTTP string
}

func newEdgeRig(t testing.TB, devices int, t0 time.Time) *edgeRig {
	r := &edgeRig{t: t, sdir: t.TempDir(), edir: t.TempDir(), cdir: t.TempDir(), t0: t0}
	cli := func(args ...string) {
		if out, err := vigilCmd(t, "", append(args, "--data", r.sdir)...); err != nil {
			t.Fatalf("vigil %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	cli("certs", "init")
	r.secrets = registerDevices(t, r.sdir, devices, t0)
	var served []string
	for i := range devices {
		served = append(served, fmt.Sprintf("cp%d", i))
	}
	cli("device", "add", "--id", "edge1", "--kind", "edge", "--serves-patient", strings.Join(served, ","))
	cli("device", "cert", "edge1", "--out", r.cdir)
	r.startServer()
	var err error
	if r.proxy, err = faultproxy.New(hostOf(t, r.srv.http)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.proxy.Close() })
	r.edgeMQTT = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r.edgeHTTP = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r.startEdge()
	return r
}

func hostOf(t testing.TB, base string) string {
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func (r *edgeRig) startServer() {
	r.srv = startVigil(r.t, r.sdir, "serve", "--data", r.sdir, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--log-level", "error")
	r.t.Cleanup(func() { r.srv.cmd.Process.Kill(); r.srv.cmd.Wait() })
	if r.proxy != nil {
		r.proxy.SetTarget(hostOf(r.t, r.srv.http))
	}
}

func (r *edgeRig) startEdge() {
	args := []string{"edge", "--data", r.edir, "--upstream", "https://" + r.proxy.Addr(),
		"--cert", filepath.Join(r.cdir, "edge1.pem"), "--key", filepath.Join(r.cdir, "edge1-key.pem"), "--upstream-ca", filepath.Join(r.sdir, "tls", "ca.pem"),
		"--http", r.edgeHTTP, "--mqtt", r.edgeMQTT, "--plaintext", "--config-interval", "200ms", "--log-level", "error"}
	if p := os.Getenv("VIGIL_BENCH_EDGE_PROFILE"); p != "" {
		args = append(args, "--cpuprofile", p) // profile the edge under a benchmark
	}
	r.edge = startVigil(r.t, r.edir, args...)
	r.t.Cleanup(func() { r.edge.cmd.Process.Kill(); r.edge.cmd.Wait() })
}

// stop ends a child gracefully.
func stop(c child) {
	c.cmd.Process.Signal(syscall.SIGTERM)
	c.cmd.Wait()
}

// edgeMetric reads one metric of the running edge (with its local admin
// token).
func (r *edgeRig) edgeMetric(name string) float64 {
	r.t.Helper()
	c, err := waitControl(context.Background(), r.edir, 10*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", c.HTTPURL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	r.t.Fatalf("metric %s not served by the edge", name)
	return 0
}

// waitDrained waits until the edge's buffer is empty and returns how
// long that took.
func (r *edgeRig) waitDrained(limit time.Duration) time.Duration {
	r.t.Helper()
	start := time.Now()
	for r.edgeMetric("vigil_edge_buffer_readings") > 0 {
		if time.Since(start) > limit {
			r.t.Fatalf("the edge's buffer still holds %v readings after %s", r.edgeMetric("vigil_edge_buffer_readings"), limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestEdgeOutage runs devices against an edge gateway (vigil edge) while
// the link to the server goes down for an hour of device time (1 Hz per
// device), the edge is killed (SIGKILL) and restarted in the middle of
// the outage and the server is restarted; then the link comes back with
// delays, resets and dropped connections. The checker finds every reading
// the edge acknowledged stored upstream exactly once, and nothing that
// was never sent.
func TestEdgeOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("edge fault test is not short")
	}
	const devices = 4
	t0 := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	r := newEdgeRig(t, devices, t0)
	ck := newChecker(devices)
	ck.step = time.Second
	rng := rand.New(rand.NewPCG(5, 6))

	publish := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		keepPublishing(ctx, &wg, r.edgeMQTT, r.secrets, ck, t0, rng)
		return func() { cancel(); wg.Wait() }
	}
	// Link up.
	stopPub := publish()
	ck.waitAcked(1000, time.Minute)
	// Link down for an hour of readings per device; the edge is killed
	// halfway and the server restarted.
	r.proxy.Block()
	base := ck.ackedCount()
	ck.waitAcked(base+devices*1800, 2*time.Minute)
	r.edge.cmd.Process.Signal(syscall.SIGKILL)
	r.edge.cmd.Wait()
	r.startEdge()
	stop(r.srv)
	r.startServer()
	ck.waitAcked(base+devices*3600, 2*time.Minute)
	stopPub()
	if got := ck.ackedCount() - base; got < devices*3600 {
		t.Fatalf("only %d readings acknowledged during the outage", got)
	}
	buffered := r.edgeMetric("vigil_edge_buffer_readings")
	if buffered < devices*3600 {
		t.Fatalf("the edge buffers %v readings, want at least the outage's %d", buffered, devices*3600)
	}

	// Link back, unreliable: 2 ms per chunk, a cut connection now and then,
	// all connections reset twice; devices keep sending.
	r.proxy.SetDelay(2 * time.Millisecond)
	r.proxy.SetDrop(0.002)
	r.proxy.Unblock()
	stopPub = publish()
	for range 2 {
		time.Sleep(300 * time.Millisecond)
		r.proxy.Reset()
	}
	ck.waitAcked(ck.ackedCount()+2000, time.Minute)
	stopPub()
	r.proxy.SetDelay(0)
	r.proxy.SetDrop(0)
	took := r.waitDrained(3 * time.Minute)
	t.Logf("outage: %v readings buffered; after the link returned the buffer drained %s after the devices stopped", buffered, took.Round(time.Millisecond))

	out, err := vigilCmd(t, "", "edge", "status", "--data", r.edir, "--json")
	var st node.EdgeStatus
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || !st.Forwarder.Connected || st.Forwarder.Pending != 0 || st.Config.Version == "" {
		t.Fatalf("vigil edge status: %v %s", err, out)
	}
	if out, err := vigilCmd(t, "", "edge", "status", "--data", r.edir); err != nil || !strings.Contains(out, "buffered:") {
		t.Fatalf("vigil edge status: %v %s", err, out)
	}

	stop(r.edge)
	stop(r.srv)
	ck.check(t, openStore(t, r.sdir), t0, 0)
}
