package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"

	"github.com/vigil-iomt/vigil"
)

// The registry commands work on a stopped server's data directory and,
// through the admin API named in its control file, on a running one; both
// paths give the same answers and the same errors.
func TestRegistryOfflineAndOnline(t *testing.T) {
	dir := t.TempDir()
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, err := vigilCmd(t, stdin, append(args, "--data", dir)...)
		if err != nil {
			t.Fatalf("vigil %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	fails := func(want string, args ...string) {
		t.Helper()
		out, err := vigilCmd(t, "", append(args, "--data", dir)...)
		if err == nil || !strings.Contains(out+err.Error(), want) {
			t.Fatalf("vigil %s: err %v, output %q; want an error saying %q", strings.Join(args, " "), err, out, want)
		}
	}
	check := func(mode string) {
		t.Helper()
		p := "p-" + mode
		run("", "patient", "add", "--id", p, "--family", "Doe", "--ward", "ICU")
		fails("already exists", "patient", "add", "--id", p)
		fails("sex", "patient", "add", "--id", p+"x", "--sex", "f")
		var dev struct {
			Secret string `json:"secret"`
		}
		if err := json.Unmarshal([]byte(run("", "device", "add", "--id", "d-"+mode, "--kind", "wearable", "--json")), &dev); err != nil || len(dev.Secret) < 40 {
			t.Fatalf("%s: device add --json: %v %+v", mode, err, dev)
		}
		run("", "device", "assign", "d-"+mode, p)
		fails("not found", "device", "assign", "d-"+mode, "nobody")
		run("a long enough password\n", "user", "add", "--id", "n-"+mode, "--role", "nurse", "--password-stdin")
		if out, err := vigilCmd(t, "short\n", "user", "add", "--id", "m-"+mode, "--role", "nurse", "--password-stdin", "--data", dir); err == nil || !strings.Contains(out+err.Error(), "12") {
			t.Fatalf("%s: short password: %v %q", mode, err, out)
		}
		var tok struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal([]byte(run("", "token", "create", "--user", "n-"+mode, "--ttl", "1h", "--json")), &tok); err != nil || !strings.HasPrefix(tok.Token, "vgl_") {
			t.Fatalf("%s: token create --json: %v %+v", mode, err, tok)
		}
		var scoped struct {
			Record vigil.Token `json:"record"`
		}
		if err := json.Unmarshal([]byte(run("", "token", "create", "--user", "n-"+mode, "--scope", "patient/*.read", "--patient", p, "--json")), &scoped); err != nil ||
			scoped.Record.Patient != p || len(scoped.Record.Scopes) != 1 {
			t.Fatalf("%s: scoped token: %v %+v", mode, err, scoped)
		}
		fails("launch patient", "token", "create", "--user", "n-"+mode, "--scope", "patient/*.read")
		fails("not a SMART scope", "token", "create", "--user", "n-"+mode, "--scope", "everything")
		var ps []map[string]any
		if err := json.Unmarshal([]byte(run("", "patient", "list", "--json")), &ps); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, x := range ps {
			found = found || x["id"] == p
		}
		if !found {
			t.Fatalf("%s: patient list lacks %s: %v", mode, p, ps)
		}
		if out := run("", "device", "list"); !strings.Contains(out, "d-"+mode) {
			t.Fatalf("%s: device list: %s", mode, out)
		}
		run("", "deadletters", "list")
		run("", "alerts", "list")
	}
	check("offline")
	srv := startChild(t, dir)
	defer func() {
		srv.cmd.Process.Signal(syscall.SIGTERM)
		srv.cmd.Wait()
	}()
	check("online")
	// Online, the server sees what the offline commands wrote.
	if out := run("", "patient", "list"); !strings.Contains(out, "p-offline") || !strings.Contains(out, "p-online") {
		t.Fatalf("patient list online: %s", out)
	}
}
