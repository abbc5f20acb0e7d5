package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"
)

// TestMain lets the test binary act as the vigil command: the crash test
// starts it as a child process with VIGIL_TEST_MAIN=1.
func TestMain(m *testing.M) {
	if os.Getenv("VIGIL_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	if spec := os.Getenv("VIGIL_IDLE_CLIENT"); spec != "" {
		idleClientMain(spec)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// vigilCmd runs the CLI in-process and returns what it printed.
func vigilCmd(t testing.TB, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, bytes.NewBufferString(stdin), &out, &errb)
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

// vigil version says which build this is and which data formats it reads.
func TestVersionCommand(t *testing.T) {
	out, err := vigilCmd(t, "", "version", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var b BuildInfo
	if err := json.Unmarshal([]byte(out), &b); err != nil || b.Version == "" || b.Go == "" || b.StoreFormat < 1 || b.BackupFormat < 1 {
		t.Fatalf("version: %v %s", err, out)
	}
}
