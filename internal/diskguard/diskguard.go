// Package diskguard keeps ingest from filling the data directory's disk.
//
// A store that runs out of space mid-write is the worst moment to find
// out: Pebble cannot finish a flush or compaction, and a write-ahead log
// that cannot grow stops every writer. So Vigil refuses new readings
// while the free space of the data directory's file system is below a
// reserve — devices are told to send them again later (MQTT v5 PUBACK
// 0x97 quota exceeded, HTTP 507, no HL7 ACK) — and keeps serving
// everything else: clinicians still read, alerts already raised still
// show, the registry and the audit log still write (they are small, and
// the reserve is theirs). Ingest resumes by itself once the free space is
// above the reserve plus a margin (so it does not flap at the boundary).
package diskguard

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/vigil-iomt/vigil"
)

// Default reserve: 5 % of the file system, at least 64 MiB and at most
// 1 GiB.
const (
	minReserve = 64 << 20
	maxReserve = 1 << 30
)

// Options configure a Guard.
type Options struct {
	Dir string // the data directory
	// Reserve is the free space, in bytes, below which ingest is refused;
	// 0 means the default (5 % of the file system, between 64 MiB and
	// 1 GiB); negative turns the guard off.
	Reserve  int64
	Interval time.Duration // how often free space is read (default 1 s)
	Logger   *slog.Logger
	// Registerer, when set, gets vigil_disk_free_bytes,
	// vigil_disk_reserve_bytes and vigil_disk_full (1 while ingest is
	// refused).
	Registerer prometheus.Registerer
	// statfs reads the file system's free and total bytes (a field so
	// tests can fake a disk).
	statfs func(dir string) (free, total uint64, err error)
}

// Guard watches one file system. Its methods are safe for concurrent use.
type Guard struct {
	o       Options
	reserve uint64
	full    atomic.Bool
	free    atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	freeG, fullG prometheus.Gauge
}

// Start reads the file system once (an unreadable data directory is an
// error) and then every Interval until Close.
func Start(o Options) (*Guard, error) {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.statfs == nil {
		o.statfs = statfs
	}
	g := &Guard{o: o, stop: make(chan struct{}), done: make(chan struct{}),
		freeG: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_disk_free_bytes", Help: "Free space of the data directory's file system (as available to Vigil)."}),
		fullG: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_disk_full", Help: "1 while ingest is refused because free space is below the reserve."}),
	}
	if o.Reserve < 0 {
		close(g.done)
		return g, nil
	}
	free, total, err := o.statfs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("free space of %s: %w", o.Dir, err)
	}
	g.reserve = uint64(o.Reserve)
	if o.Reserve == 0 {
		g.reserve = min(max(total/20, minReserve), maxReserve)
	}
	if o.Registerer != nil {
		reserveG := prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_disk_reserve_bytes", Help: "Free space below which ingest is refused (--disk-reserve)."})
		reserveG.Set(float64(g.reserve))
		o.Registerer.MustRegister(g.freeG, g.fullG, reserveG)
	}
	g.update(free)
	go g.loop()
	return g, nil
}

// Reserve is the free space below which ingest is refused (0 when off).
func (g *Guard) Reserve() uint64 { return g.reserve }

// Free is the free space last read.
func (g *Guard) Free() uint64 { return g.free.Load() }

// Admit returns nil while there is room for readings, else an EFULL
// error that tells the device to send them again later.
func (g *Guard) Admit() error {
	if g == nil || !g.full.Load() {
		return nil
	}
	return vigil.Errorf(vigil.EFULL, "the server's disk is nearly full (%d MiB free, %d MiB reserved): nothing was stored; send the readings again later",
		g.free.Load()>>20, g.reserve>>20)
}

// read reads the file system's free space now.
func (g *Guard) read() error {
	free, _, err := g.o.statfs(g.o.Dir)
	if err == nil {
		g.update(free)
	}
	return err
}

// update records free space and switches between admitting and refusing:
// refuse below the reserve, admit again above the reserve plus a tenth.
func (g *Guard) update(free uint64) {
	g.free.Store(free)
	g.freeG.Set(float64(free))
	switch full := g.full.Load(); {
	case !full && free < g.reserve:
		g.full.Store(true)
		g.fullG.Set(1)
		g.o.Logger.Error("the data directory's disk is nearly full: new readings are refused until space is freed (devices send them again later)",
			"dir", g.o.Dir, "free_mib", free>>20, "reserve_mib", g.reserve>>20)
	case full && free >= g.reserve+g.reserve/10:
		g.full.Store(false)
		g.fullG.Set(0)
		g.o.Logger.Warn("disk space is back above the reserve: ingest resumed", "dir", g.o.Dir, "free_mib", free>>20)
	}
}

func (g *Guard) loop() {
	defer close(g.done)
	t := time.NewTicker(g.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
			if err := g.read(); err != nil {
				g.o.Logger.Warn("cannot read the data directory's free space", "dir", g.o.Dir, "err", err)
			}
		}
	}
}

// Close stops watching.
func (g *Guard) Close() {
	g.once.Do(func() {
		if g.o.Reserve >= 0 {
			close(g.stop)
		}
	})
	<-g.done
}

func statfs(dir string) (free, total uint64, err error) {
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		return 0, 0, err
	}
	return s.Bavail * uint64(s.Bsize), s.Blocks * uint64(s.Bsize), nil
}
