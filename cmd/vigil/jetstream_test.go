package main

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
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
	client, route := []int{port(), port(), port()}, []int{port(), port(), port()}
	var urls []string
	var cmds []*exec.Cmd
	for i := range 3 {
		dir := t.TempDir()
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", route[j]))
			}
		}
		conf := fmt.Sprintf("server_name: n%d\nlisten: 127.0.0.1:%d\njetstream { store_dir: %q%s }\ncluster { name: vigil, listen: 127.0.0.1:%d, routes: [%s] }\n",
			i, client[i], filepath.Join(dir, "js"), sync, route[i], strings.Join(routes, ", "))
		os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(conf), 0o600)
		cmd := exec.Command(exe, "-c", filepath.Join(dir, "nats.conf"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		cmds = append(cmds, cmd)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", client[i]))
	}
	// Ready when JetStream answers with a meta leader elected.
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(strings.Join(urls, ","), nats.Timeout(time.Second))
		if err == nil {
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
			nc.Close()
			if err == nil {
				return urls, cmds
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the NATS cluster did not form: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
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
	run := func() {
		for d := range devices {
			seed := rng.Uint64()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil { // reconnect after a refusal, as a device does
					publishUntilKilled(ctx, srv.mqtt, d, secrets[d], ck, t0, seed)
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
	}
	run()
	for deadline := time.Now().Add(30 * time.Second); ck.ackedCount() < 500 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if ck.ackedCount() == 0 {
		t.Fatal("nothing acknowledged")
	}
	victim := natsCmds[rng.IntN(3)]
	victim.Process.Signal(syscall.SIGKILL)
	victim.Wait()
	atKill := ck.ackedCount()
	for deadline := time.Now().Add(60 * time.Second); ck.ackedCount() < atKill+500 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
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
