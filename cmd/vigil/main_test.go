package main

import (
	"bytes"
	"context"
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
