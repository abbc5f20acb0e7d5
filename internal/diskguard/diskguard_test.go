package diskguard

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigil-iomt/vigil"
)

func TestRefusesBelowReserveAndResumes(t *testing.T) {
	var free atomic.Uint64
	free.Store(500 << 20)
	reg := prometheus.NewRegistry()
	g, err := Start(Options{Dir: t.TempDir(), Reserve: 100 << 20, Interval: time.Hour, Registerer: reg,
		statfs: func(string) (uint64, uint64, error) { return free.Load(), 1 << 30, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Admit(); err != nil {
		t.Fatalf("500 MiB free, 100 reserved: %v", err)
	}
	free.Store(99 << 20)
	g.read()
	if err := g.Admit(); vigil.ErrorCode(err) != vigil.EFULL {
		t.Fatalf("below the reserve: %v, want %s", err, vigil.EFULL)
	}
	if v := testutil.ToFloat64(g.fullG); v != 1 {
		t.Fatalf("vigil_disk_full = %v", v)
	}
	// Just above the reserve is not enough: a margin keeps it from flapping.
	free.Store(105 << 20)
	if g.read(); g.Admit() == nil {
		t.Fatal("admitted again at the reserve's edge")
	}
	free.Store(111 << 20)
	if err := g.read(); err != nil || g.Admit() != nil {
		t.Fatalf("back above reserve + 10%%: %v", err)
	}
	if v := testutil.ToFloat64(g.freeG); v != 111<<20 {
		t.Fatalf("vigil_disk_free_bytes = %v", v)
	}
}

func TestDefaultReserve(t *testing.T) {
	for _, c := range []struct{ total, want uint64 }{
		{1 << 30, 64 << 20},   // 5 % is 51 MiB: the floor
		{10 << 30, 512 << 20}, // 5 %
		{4 << 40, 1 << 30},    // the cap
	} {
		g, err := Start(Options{Dir: t.TempDir(), statfs: func(string) (uint64, uint64, error) { return c.total, c.total, nil }})
		if err != nil {
			t.Fatal(err)
		}
		if g.Reserve() != c.want {
			t.Errorf("disk of %d MiB: reserve %d MiB, want %d", c.total>>20, g.Reserve()>>20, c.want>>20)
		}
		g.Close()
	}
}

func TestOffAndRealDisk(t *testing.T) {
	g, err := Start(Options{Dir: t.TempDir(), Reserve: -1})
	if err != nil {
		t.Fatal(err)
	}
	if g.Admit() != nil || g.Reserve() != 0 {
		t.Fatal("a guard that is off refused")
	}
	g.Close()
	g, err = Start(Options{Dir: t.TempDir(), Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Free() == 0 {
		t.Fatal("no free space read from the real file system")
	}
	if _, err := Start(Options{Dir: "/nonexistent/vigil"}); err == nil {
		t.Fatal("a missing data directory was accepted")
	}
}
