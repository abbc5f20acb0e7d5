package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// vigil rule on a stopped node's data directory: put, refuse, change with
// a note, history, list and backtest.
func TestRuleCommands(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (string, error) {
		t.Helper()
		return vigilCmd(t, "", append(args, "--data", dir)...)
	}
	expr := `mean("8867-4", duration("5m")) > 130`
	if out, err := run("rule", "put", "tachy", "--title", "Tachycardia", "--priority", "high", "--for", "1m", "--expr", expr); err != nil || !strings.Contains(out, "saved rule tachy version 1 (in force)") {
		t.Fatalf("put: %v %s", err, out)
	}
	if out, err := run("rule", "put", "bad", "--title", "x", "--expr", `value("9999-9") > 1`); err == nil || !strings.Contains(err.Error(), `"9999-9" is not a LOINC code`) {
		t.Fatalf("bad code: %v %s", err, out)
	}
	if _, err := run("rule", "put", "tachy", "--title", "Tachycardia", "--expr", expr, "--disabled"); err == nil || !strings.Contains(err.Error(), "note") {
		t.Fatalf("change without note: %v", err)
	}
	if _, err := run("rule", "put", "tachy", "--title", "Tachycardia", "--expr", expr, "--disabled", "--note", "paused for ward 3"); err != nil {
		t.Fatal(err)
	}
	out, err := run("rule", "history", "tachy")
	if err != nil || !strings.Contains(out, "paused for ward 3") || strings.Count(out, "\n") != 3 {
		t.Fatalf("history: %v\n%s", err, out)
	}
	out, err = run("rule", "list", "--json")
	var rs []struct {
		ID      string
		Version int
		Enabled bool
	}
	if err != nil || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 1 || rs[0].Version != 2 || rs[0].Enabled {
		t.Fatalf("list: %v %s", err, out)
	}
	out, err = run("rule", "backtest", "tachy", "--days", "3")
	if err != nil || !strings.Contains(out, "0 alert(s) for 0 of 0 patient(s)") {
		t.Fatalf("backtest: %v %s", err, out)
	}
	if _, err := run("rule", "backtest", "--days", "3"); err == nil || !strings.Contains(err.Error(), "--expr") {
		t.Fatalf("backtest without a rule: %v", err)
	}
}
