package main

import (
	"context"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestGracefulRestart stops `vigil serve` with SIGTERM (systemd's stop, an
// upgrade) while devices publish with many messages in flight, three
// times: each stop exits cleanly within the unit's timeout, the devices
// reconnect to the new process and send again what was not acknowledged,
// and the checker finds every acknowledged reading stored exactly once.
func TestGracefulRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("not short")
	}
	const devices = 4
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	secrets := registerDevices(t, dir, devices, t0)
	ck := newChecker(devices)
	rng := rand.New(rand.NewPCG(11, 12))
	for round := range 3 {
		srv := startChild(t, dir)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		keepPublishing(ctx, &wg, srv.mqtt, secrets, ck, t0, rng)
		ck.waitAcked(ck.ackedCount()+1500, time.Minute)
		start := time.Now()
		srv.cmd.Process.Signal(syscall.SIGTERM)
		err := srv.cmd.Wait()
		took := time.Since(start)
		cancel()
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: vigil serve exited with %v after SIGTERM", round, err)
		}
		if took > 60*time.Second {
			t.Fatalf("round %d: SIGTERM took %s to drain (the unit allows 60 s)", round, took)
		}
		t.Logf("round %d: drained and stopped in %s; %d acknowledged so far", round, took.Round(time.Millisecond), ck.ackedCount())
	}
	ck.check(t, openStore(t, dir), t0, 0)
}
