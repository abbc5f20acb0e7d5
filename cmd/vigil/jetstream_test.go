package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigil-iomt/vigil/internal/pgstore"
)

// natsCluster starts three nats-server processes (VIGIL_NATS_SERVER, the
// one `make tools` builds into bin/, or Debian's) forming a JetStream
// cluster on loopback and returns their client URLs and the processes.
// A server of 2.10 or later runs as docs/scaling.md says a production one
// must: with `sync_interval: always`, an fsync before every
// acknowledgement.
func natsCluster(t *testing.T) ([]string, []*exec.Cmd) {
	c := startNATSCluster(t, false)
	return c.urls, c.cmds
}

// cluster is a three-server JetStream cluster started by a test.
type cluster struct {
	urls    []string
	cmds    []*exec.Cmd
	monitor []string       // each server's monitoring base URL
	routes  [3][3]*tcpGate // routes[i][j]: server i's route to server j, when gated
}

// partition cuts (or, with cut false, restores) every route to and from
// server k: it keeps running and serving its clients, alone.
func (c *cluster) partition(k int, cut bool) {
	for i := range 3 {
		for j := range 3 {
			if g := c.routes[i][j]; g != nil && (i == k || j == k) {
				g.set(cut)
			}
		}
	}
}

// startNATSCluster starts the cluster; with gated routes every route
// between two servers runs through a tcpGate the test can cut.
func startNATSCluster(t *testing.T, gated bool) *cluster {
	t.Helper()
	exe := os.Getenv("VIGIL_NATS_SERVER")
	for _, c := range []string{"../../bin/nats-server", "/usr/sbin/nats-server"} {
		if _, err := os.Stat(c); exe == "" && err == nil {
			exe = c
		}
	}
	if exe == "" {
		if os.Getenv("VIGIL_REQUIRE_ALL") != "" {
			t.Fatal("no nats-server: run make tools (or apt-get install nats-server)")
		}
		t.Skip("no nats-server: run make tools (or apt-get install nats-server)")
	}
	sync := ""
	out, _ := exec.Command(exe, "--version").Output()
	var major, minor int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "nats-server: v%d.%d", &major, &minor); err == nil && (major > 2 || major == 2 && minor >= 10) {
		sync = ", sync_interval: always"
	}
	t.Logf("%s%s", strings.TrimSpace(string(out)), sync)
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	client, route, mon := []int{port(), port(), port()}, []int{port(), port(), port()}, []int{port(), port(), port()}
	c := &cluster{}
	for i := range 3 {
		dir := t.TempDir()
		var routes []string
		for j := range 3 {
			if j == i {
				continue
			}
			to := route[j]
			if gated {
				c.routes[i][j] = newTCPGate(t, fmt.Sprintf("127.0.0.1:%d", route[j]))
				to = c.routes[i][j].port()
			}
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", to))
		}
		// no_advertise: servers learn of each other only from these
		// routes, so gated routes are the only way between them.
		conf := fmt.Sprintf("server_name: n%d\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\njetstream { store_dir: %q%s }\ncluster { name: vigil, listen: 127.0.0.1:%d, no_advertise: true, routes: [%s] }\n",
			i, client[i], mon[i], filepath.Join(dir, "js"), sync, route[i], strings.Join(routes, ", "))
		os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(conf), 0o600)
		cmd := exec.Command(exe, "-c", filepath.Join(dir, "nats.conf"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		c.cmds = append(c.cmds, cmd)
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", client[i]))
		c.monitor = append(c.monitor, fmt.Sprintf("http://127.0.0.1:%d", mon[i]))
	}
	// Ready when JetStream answers with a meta leader elected.
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(strings.Join(c.urls, ","), nats.Timeout(time.Second))
		if err == nil {
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
			nc.Close()
			if err == nil {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the NATS cluster did not form: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tcpGate forwards TCP connections to a target until it is cut: then it
// closes the connections it carries and refuses new ones.
type tcpGate struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newTCPGate(t *testing.T, target string) *tcpGate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &tcpGate{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); g.set(true) })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			cut := g.cut
			g.mu.Unlock()
			if cut {
				in.Close()
				continue
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			g.mu.Lock()
			g.conns[in], g.conns[out] = true, true
			g.mu.Unlock()
			pipe := func(a, b net.Conn) {
				io.Copy(a, b)
				a.Close()
				b.Close()
			}
			go pipe(in, out)
			go pipe(out, in)
		}
	}()
	return g
}

func (g *tcpGate) port() int { return g.ln.Addr().(*net.TCPAddr).Port }

func (g *tcpGate) set(cut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cut = cut
	if cut {
		for c := range g.conns {
			c.Close()
		}
		clear(g.conns)
	}
}

// A three-node JetStream cluster under a `vigil serve` (PostgreSQL,
// stream with three replicas): devices publish over MQTT, one NATS node
// is SIGKILLed mid-ingest, ingest carries on through the other two, and
// the checker finds every acknowledged reading stored exactly once once
// the worker has drained the stream.
func TestJetStreamClusterLosesANode(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test is not short")
	}
	urls, natsCmds := natsCluster(t)
	pg, schema := pgSchema(t)
	dir := t.TempDir()
	srv := startChild(t, dir, "--postgres", pg, "--postgres-schema", schema, "--nats", strings.Join(urls, ","), "--nats-replicas", "3")
	defer srv.cmd.Process.Kill()
	const devices = 4
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	secrets := registerDevices(t, dir, devices, t0)
	ck := newChecker(devices)
	rng := mrand.New(mrand.NewPCG(5, 6))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	keepPublishing(ctx, &wg, srv.mqtt, secrets, ck, t0, rng)
	ck.waitAcked(500, 30*time.Second)
	if ck.ackedCount() == 0 {
		t.Fatal("nothing acknowledged")
	}
	victim := natsCmds[rng.IntN(3)]
	victim.Process.Signal(syscall.SIGKILL)
	victim.Wait()
	atKill := ck.ackedCount()
	ck.waitAcked(atKill+500, 60*time.Second)
	cancel()
	wg.Wait()
	if ck.ackedCount() <= atKill {
		t.Fatalf("nothing acknowledged after a NATS node was killed (%d before)", atKill)
	}

	st, err := pgstore.Open(context.Background(), pg, pgstore.Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ck.check(t, st, t0, 60*time.Second) // the worker drains what JetStream acknowledged
	t.Logf("%d acknowledged in all, %d before a NATS node was killed", ck.ackedCount(), atKill)
	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.cmd.Wait()
}

// A network partition: the NATS server Vigil's client is connected to is
// cut off from the other two (it keeps running and answering its
// clients, but has no quorum). Ingest must come back through the majority
// side within a minute, and once the partition heals every acknowledged
// reading is stored exactly once.
func TestJetStreamClusterPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test is not short")
	}
	c := startNATSCluster(t, true)
	pg, schema := pgSchema(t)
	dir := t.TempDir()
	srv := startChild(t, dir, "--postgres", pg, "--postgres-schema", schema, "--nats", strings.Join(c.urls, ","), "--nats-replicas", "3")
	defer srv.cmd.Process.Kill()
	const devices = 4
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	secrets := registerDevices(t, dir, devices, t0)
	ck := newChecker(devices)
	rng := mrand.New(mrand.NewPCG(7, 8))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	keepPublishing(ctx, &wg, srv.mqtt, secrets, ck, t0, rng)
	ck.waitAcked(300, 30*time.Second)
	if ck.ackedCount() == 0 {
		t.Fatal("nothing acknowledged")
	}
	// Which server holds Vigil's connection?
	k := -1
	for i, m := range c.monitor {
		resp, err := http.Get(m + "/connz")
		if err != nil {
			continue
		}
		var cz struct{ Connections []struct{ Name string } }
		json.NewDecoder(resp.Body).Decode(&cz)
		resp.Body.Close()
		for _, cn := range cz.Connections {
			if cn.Name == "vigil" {
				k = i
			}
		}
	}
	if k < 0 {
		t.Fatal("no server holds Vigil's connection")
	}
	c.partition(k, true)
	atCut, cutAt := ck.ackedCount(), time.Now()
	ck.waitAcked(atCut+300, 90*time.Second)
	back := time.Since(cutAt)
	after := ck.ackedCount() - atCut
	c.partition(k, false)
	cancel()
	wg.Wait()
	if after < 300 {
		t.Fatalf("only %d readings acknowledged in the 90 s after Vigil's NATS server was cut off", after)
	}
	st, err := pgstore.Open(context.Background(), pg, pgstore.Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ck.check(t, st, t0, 90*time.Second)
	t.Logf("server n%d cut off: 300 more readings acknowledged %v later; %d acknowledged in all, %d before the cut", k, back.Round(100*time.Millisecond), ck.ackedCount(), atCut)
	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.cmd.Wait()
}
