package main

import (
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
)

// syscallZero is signal 0: it checks that a process exists without
// disturbing it.
const syscallZero = syscall.Signal(0)

// writeHeapOnSignal writes the live heap to file on every SIGUSR1 (after a
// collection that also returns free memory to the OS, so the profile and
// the process's resident size show what is held) until stop is called.
func writeHeapOnSignal(file string) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-ch:
				debug.FreeOSMemory() // a collection, and memory back to the OS
				if f, err := os.Create(file); err == nil {
					pprof.WriteHeapProfile(f)
					f.Close()
				}
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}
