package main

import (
	"context"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-iomt/vigil/internal/pgstore"
	"github.com/vigil-iomt/vigil/internal/testenv"
)

func pgSchema(t testing.TB) (url, schema string) { return testenv.PostgresSchema(t) }

// Two `vigil serve` processes on one PostgreSQL database: devices
// registered through one authenticate on the other, every device sends
// the same readings to both at once (so each id reaches the database
// twice, through different processes), one process is killed with
// SIGKILL mid-ingest while the other carries on, and the checker finds
// every reading either acknowledged stored exactly once, and nothing
// stored that was never sent.
func TestTwoNodesOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test is not short")
	}
	url, schema := pgSchema(t)
	pg := []string{"--postgres", url, "--postgres-schema", schema}
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startChild(t, dirA, pg...)
	defer a.cmd.Process.Kill()
	const devices = 4
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	secrets := registerDevices(t, dirA, devices, t0)
	b := startChild(t, dirB, pg...)
	defer b.cmd.Process.Kill()

	ck := newChecker(devices)
	rng := mrand.New(mrand.NewPCG(3, 4))
	ctxA, cancelA := context.WithCancel(context.Background())
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelA()
	defer cancelB()
	var wg sync.WaitGroup
	for d := range devices {
		for _, n := range []struct {
			ctx  context.Context
			addr string
		}{{ctxA, a.mqtt}, {ctxB, b.mqtt}} {
			seed := rng.Uint64()
			wg.Add(1)
			go func() {
				defer wg.Done()
				publishUntilKilled(n.ctx, n.addr, d, secrets[d], ck, t0, seed)
			}()
		}
	}
	ck.waitAcked(500, 30*time.Second)
	if ck.ackedCount() == 0 {
		t.Fatal("nothing acknowledged by either node")
	}
	time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	cancelA()
	atKill := ck.ackedCount()
	// B carries on, with A's unacknowledged readings among its batches.
	ck.waitAcked(atKill+500, 30*time.Second)
	cancelB()
	wg.Wait()
	b.cmd.Process.Signal(syscall.SIGTERM)
	b.cmd.Wait()
	if ck.ackedCount() <= atKill {
		t.Fatalf("node B acknowledged nothing after A was killed (%d before)", atKill)
	}

	st, err := pgstore.Open(context.Background(), url, pgstore.Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ck.check(t, st, t0, 0)
	var ids int
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+schema+".reading_ids").Scan(&ids); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d acknowledged in all (%d before node A was killed), %d reading ids stored", ck.ackedCount(), atKill, ids)
}

// Registry commands work on the PostgreSQL store with the server stopped
// (--postgres), and a database across the network is refused without TLS.
func TestPostgresOffline(t *testing.T) {
	url, schema := pgSchema(t)
	dir := t.TempDir()
	pg := []string{"--data", dir, "--postgres", url, "--postgres-schema", schema}
	if out, err := vigilCmd(t, "", append([]string{"patient", "add", "--id", "p-pg", "--family", "Ngata"}, pg...)...); err != nil {
		t.Fatalf("patient add: %v %s", err, out)
	}
	out, err := vigilCmd(t, "", append([]string{"patient", "list", "--json"}, pg...)...)
	if err != nil || !strings.Contains(out, `"p-pg"`) {
		t.Fatalf("patient list: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "store")); err == nil {
		t.Fatal("an embedded store was made: the command did not use PostgreSQL")
	}
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{"postgres://vigil@db.example.org/vigil", false},
		{"postgres://vigil@db.example.org/vigil?sslmode=prefer", false},
		{"postgres://vigil@db.example.org/vigil?sslmode=verify-full", true},
		{"host=db.example.org user=vigil sslmode=require", true},
		{"postgres://vigil@127.0.0.1/vigil?sslmode=disable", true},
		{"host=/var/run/postgresql user=vigil", true},
	} {
		if err := checkPostgresURL(c.url); (err == nil) != c.ok {
			t.Errorf("%s: %v, want ok %v", c.url, err, c.ok)
		}
	}
	for u, ok := range map[string]bool{
		"nats://127.0.0.1:4222":                       true,
		"nats://127.0.0.1:4222,nats://127.0.0.2:4223": true,
		"tls://nats.example.org:4222":                 true,
		"nats://nats.example.org:4222":                false,
		"nats://127.0.0.1:4222,nats://10.0.0.5:4222":  false,
		"not a url": false,
	} {
		if err := checkNATSURL(u); (err == nil) != ok {
			t.Errorf("--nats %s: %v, want ok %v", u, err, ok)
		}
	}
}

// vigil bench --postgres measures a server that keeps its data in
// PostgreSQL (on a schema of its own, dropped afterwards).
func TestBenchPostgres(t *testing.T) {
	url, _ := pgSchema(t) // skips or fails as the other PostgreSQL tests do
	// 3 s: on a busy CI machine PostgreSQL has kept a first commit waiting
	// longer than a whole 1 s run.
	// A pool setting in the URL (not a PostgreSQL parameter) must not keep
	// the run's schema from being dropped.
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	runBench(t, "--postgres", url+sep+"pool_max_conns=6", "--publishers", "2", "--inflight", "4", "--duration", "3s", "--peer", "")
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var left int
	conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'vigil_bench_%'").Scan(&left)
	if left != 0 {
		t.Errorf("%d bench schemas left behind", left)
	}
}
