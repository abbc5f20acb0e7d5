package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestBackupUnderLoad takes a full and then an incremental backup of a
// running server through its API while devices keep sending, restores
// them elsewhere (the master key kept apart and put back by hand, as an
// operator would), and checks that every reading acknowledged before each
// backup started is in its restore exactly once, that nothing never sent
// is, that the audit log verifies, that the incremental carries only new
// files, and that a damaged backup is refused.
func TestBackupUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("backup under load is not short")
	}
	const devices = 4
	dir, keys := t.TempDir(), t.TempDir()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	secrets := registerDevices(t, dir, devices, t0)
	srv := startChild(t, dir)
	defer func() { srv.cmd.Process.Kill(); srv.cmd.Wait() }()

	cli := func(args ...string) string {
		t.Helper()
		out, err := vigilCmd(t, "", args...)
		if err != nil {
			t.Fatalf("vigil %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	key := filepath.Join(keys, "backup.key")
	var kg struct{ Recipient string }
	if err := json.Unmarshal([]byte(cli("backup", "keygen", "--out", key, "--json")), &kg); err != nil || !strings.HasPrefix(kg.Recipient, "age1") {
		t.Fatalf("keygen: %v %+v", err, kg)
	}

	ck := newChecker(devices)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	keepPublishing(ctx, &wg, srv.mqtt, secrets, ck, t0, rand.New(rand.NewPCG(7, 8)))
	ackedBy := func() []map[int]bool {
		var out []map[int]bool
		for d := range devices {
			a, _ := ck.snapshot(d)
			out = append(out, a)
		}
		return out
	}
	ck.waitAcked(2000, time.Minute)
	beforeFull := ackedBy()
	full := filepath.Join(keys, "full.tar.age")
	cli("backup", "--data", dir, "--recipient", kg.Recipient, "--out", full)
	ck.waitAcked(ck.ackedCount()+2000, time.Minute)
	beforeInc := ackedBy()
	inc := filepath.Join(keys, "inc.tar.age")
	out := cli("backup", "--data", dir, "--recipient", kg.Recipient, "--out", inc, "--base", full, "--json")
	var sum backupSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Base == "" || len(sum.Chain) != 2 || sum.StoredHere >= sum.Files {
		t.Fatalf("incremental backup: %v %s", err, out)
	}
	t.Logf("incremental: %d of %d files (%d of %d bytes) in the archive", sum.StoredHere, sum.Files, sum.BytesHere, sum.Bytes)
	cancel()
	wg.Wait()
	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.cmd.Wait()

	cli("backup", "verify", full, inc, "--identity", key)
	// Alone, an incremental is checked against what its own archive holds.
	cli("backup", "verify", inc, "--identity", key)

	restoreAndCheck := func(name string, acked []map[int]bool, archives ...string) {
		t.Helper()
		to := filepath.Join(t.TempDir(), name)
		cli(append(append([]string{"restore"}, archives...), "--identity", key, "--data", to)...)
		// The master key was kept apart: the operator puts it back.
		mk, err := os.ReadFile(filepath.Join(dir, "master-key"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, "master-key"), mk, 0o600); err != nil {
			t.Fatal(err)
		}
		st := openStore(t, to)
		for d := range devices {
			counts := storedCounts(t, st, d, t0, time.Millisecond)
			for seq := range acked[d] {
				if counts[int64(seq)] != 1 {
					t.Errorf("%s: device %d: reading %d acknowledged before the backup stored %d times", name, d, seq, counts[int64(seq)])
				}
			}
			_, sent := ck.snapshot(d)
			for seq := range counts {
				if !sent[int(seq)] {
					t.Errorf("%s: device %d: reading %d never sent", name, d, seq)
				}
			}
		}
		st.Close()
		if out, err := vigilCmd(t, "", "audit", "verify", "--data", to); err != nil {
			t.Errorf("%s: audit log of the restore: %v %s", name, err, out)
		}
	}
	restoreAndCheck("full", beforeFull, full)
	restoreAndCheck("chain", beforeInc, full, inc)

	// Out of order, a wrong identity, a damaged archive: refused.
	if _, err := vigilCmd(t, "", "restore", inc, full, "--identity", key, "--data", filepath.Join(t.TempDir(), "x")); err == nil {
		t.Error("restore of a chain out of order succeeded")
	}
	other := filepath.Join(keys, "other.key")
	cli("backup", "keygen", "--out", other)
	if _, err := vigilCmd(t, "", "backup", "verify", full, "--identity", other); err == nil {
		t.Error("a backup opened with an identity it was not encrypted to")
	}
	b, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	bad := filepath.Join(keys, "bad.tar.age")
	os.WriteFile(bad, b, 0o600)
	if out, err := vigilCmd(t, "", "backup", "verify", bad, "--identity", key); err == nil {
		t.Errorf("a damaged backup verified: %s", out)
	}
}
