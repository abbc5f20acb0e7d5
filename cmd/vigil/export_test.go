package main

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// vigil export aggregates goes through the running server (audited) and
// writes CSV; with the server stopped it says to start it.
func TestExportAggregatesCommand(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	registerDevices(t, dir, 2, t0)
	from, to := t0.AddDate(0, 0, -7).Format("2006-01-02"), t0.AddDate(0, 0, 1).Format("2006-01-02")
	if out, err := vigilCmd(t, "", "export", "aggregates", "--from", from, "--to", to, "--data", dir); err == nil || !strings.Contains(err.Error()+out, "start the server") {
		t.Fatalf("offline: %v %s", err, out)
	}
	srv := startChild(t, dir)
	defer func() { srv.cmd.Process.Signal(syscall.SIGTERM); srv.cmd.Wait() }()
	out, err := vigilCmd(t, "", "export", "aggregates", "--from", from, "--to", to, "--data", dir)
	if err != nil {
		t.Fatalf("export: %v %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] != "week,region,age_band,sex,patients,fever_rate,mean_spo2,hypertensive_share,adherence,suppressed" {
		t.Fatalf("header: %q", lines[0])
	}
	out, err = vigilCmd(t, "", "export", "research", "--study", "s1", "--approval", "REC 1", "--from", from, "--to", to, "--data", dir)
	if err != nil || !strings.HasPrefix(out, "subject,time,code,value,unit,birth_year,sex\n") || strings.Contains(out, "cp0") {
		t.Fatalf("research extract: %v %q", err, out)
	}
	if out, err := vigilCmd(t, "", "export", "aggregates", "--from", from, "--to", to, "--k", "5", "--data", dir); err == nil || !strings.Contains(err.Error()+out, "at least 11") {
		t.Fatalf("k 5: %v %s", err, out)
	}
}
