package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
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
				os.WriteFile(file+".memory.txt", []byte(memoryClasses()), 0o600)
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}

// memoryClasses is where the process's memory is, by the runtime's
// classes (runtime/metrics /memory/classes/...), one "name bytes" a line,
// with the goroutine count and their starting stack size: beside the heap
// profile it shows what the profile does not (goroutine stacks, runtime
// metadata, free pages).
func memoryClasses() string {
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, "/memory/classes/") || d.Name == "/sched/goroutines:goroutines" || d.Name == "/gc/stack/starting-size:bytes" {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(samples)
	var b strings.Builder
	for _, s := range samples {
		if s.Value.Kind() == metrics.KindUint64 {
			fmt.Fprintf(&b, "%s %d\n", s.Name, s.Value.Uint64())
		}
	}
	return b.String()
}
