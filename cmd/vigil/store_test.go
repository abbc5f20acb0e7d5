package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

// vigil store salvage: a store damaged in the middle of its log is
// refused by the registry commands, described without --yes, and opened
// again after salvage, with the log copied aside.
func TestStoreSalvageCommand(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	registerDevices(t, dir, 1, t0)
	st := openStore(t, dir)
	for i := range 200 { // 200 synced commits in one log
		if _, err := st.AppendReadings(context.Background(), []*vigil.Reading{{DeviceID: "cd0", ID: fmt.Sprint(i), PatientID: "cp0",
			Time: t0.Add(time.Duration(i) * time.Second), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 70, Unit: "/min"}}}}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	logs, _ := filepath.Glob(filepath.Join(dir, "store", "*.log"))
	slices.Sort(logs)
	wal := logs[len(logs)-1]
	b, err := os.ReadFile(wal)
	if err != nil || len(b) < 10000 {
		t.Fatalf("write-ahead log of %d bytes: %v", len(b), err)
	}
	for i := len(b) / 3; i < len(b)/3+8; i++ {
		b[i] ^= 0xff
	}
	os.WriteFile(wal, b, 0o600)
	if out, err := vigilCmd(t, "", "patient", "list", "--data", dir); err == nil || !strings.Contains(err.Error()+out, "vigil store salvage") {
		t.Fatalf("a damaged store opened: %v %s", err, out)
	}
	if out, err := vigilCmd(t, "", "store", "salvage", "--data", dir); err == nil || !strings.Contains(err.Error()+out, "--yes") {
		t.Fatalf("dry run: %v %s", err, out)
	}
	out, err := vigilCmd(t, "", "store", "salvage", "--data", dir, "--yes")
	if err != nil || !strings.Contains(out, "dropped:") {
		t.Fatalf("salvage: %v %s", err, out)
	}
	if out, err := vigilCmd(t, "", "patient", "list", "--data", dir); err != nil {
		t.Fatalf("after salvage: %v %s", err, out)
	}
	if copies, _ := filepath.Glob(filepath.Join(dir, "store.damaged-*", "*.log")); len(copies) != 1 {
		t.Fatalf("damaged log not kept: %v", copies)
	}
}
