package main

import (
	"context"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-iomt/vigil/internal/pgstore"
)

// TestPostgresDumpRestore is the documented PostgreSQL route
// (docs/operations.md): pg_dump of a running node's schema while devices
// send, the schema lost, pg_restore, and the node's own data directory
// (its keys) with it. Every reading acknowledged before the dump began is
// back exactly once, the node's audit log verifies, and the node runs on
// the restored schema.
func TestPostgresDumpRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("not short")
	}
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s here (Debian's postgresql-client)", tool)
		}
	}
	url, schema := pgSchema(t)
	dir := t.TempDir()
	const devices = 2
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	srv := startChild(t, dir, "--postgres", url, "--postgres-schema", schema)
	defer func() { srv.cmd.Process.Kill(); srv.cmd.Wait() }()
	secrets := registerDevices(t, dir, devices, t0)

	ck := newChecker(devices)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	keepPublishing(ctx, &wg, srv.mqtt, secrets, ck, t0, rand.New(rand.NewPCG(9, 10)))
	ck.waitAcked(1000, time.Minute)
	var before []map[int]bool
	for d := range devices {
		a, _ := ck.snapshot(d)
		before = append(before, a)
	}
	dump := filepath.Join(t.TempDir(), "vigil.dump")
	if out, err := exec.Command("pg_dump", "--format=custom", "--schema="+schema, "--file="+dump, url).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v %s", err, out)
	}
	ck.waitAcked(ck.ackedCount()+500, time.Minute)
	cancel()
	wg.Wait()
	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.cmd.Wait()

	// The database is lost; the dump comes back.
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("pg_restore", "--dbname="+url, dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v %s", err, out)
	}

	st, err := pgstore.Open(context.Background(), url, pgstore.Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	for d := range devices {
		counts := storedCounts(t, st, d, t0, time.Millisecond)
		_, sent := ck.snapshot(d)
		for seq := range before[d] {
			if counts[int64(seq)] != 1 {
				t.Errorf("device %d: reading %d acknowledged before the dump is there %d times", d, seq, counts[int64(seq)])
			}
		}
		for seq := range counts {
			if !sent[int(seq)] {
				t.Errorf("device %d: reading %d never sent", d, seq)
			}
		}
	}
	st.Close()
	if out, err := vigilCmd(t, "", "audit", "verify", "--data", dir, "--postgres", url, "--postgres-schema", schema); err != nil {
		t.Fatalf("audit log after pg_restore: %v %s", err, out)
	}
	again := startChild(t, dir, "--postgres", url, "--postgres-schema", schema)
	again.cmd.Process.Signal(syscall.SIGTERM)
	if err := again.cmd.Wait(); err != nil {
		t.Fatalf("the node on the restored schema: %v", err)
	}
}
