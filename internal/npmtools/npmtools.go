// Package npmtools finds and starts, for tests, the npm tools under
// tools/ (installed from their lockfiles by make tools): when one is not
// installed a test is skipped, or fails when VIGIL_REQUIRE_ALL is set (as
// .ci/run sets it).
package npmtools

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Dir returns the absolute path of tools/name, installed.
func Dir(t testing.TB, name string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "tools", name)
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		if os.Getenv("VIGIL_REQUIRE_ALL") != "" {
			t.Fatalf("tools/%s is not installed: run make tools (npm ci in %s)", name, dir)
		}
		t.Skipf("tools/%s is not installed (make tools)", name)
	}
	return dir
}

// FHIRServer starts tools/fhirserver (Medplum's FhirRouter with its
// in-memory repository, standing in for an EHR) with the given
// environment (TOKEN, FAIL_FIRST, LOSE_FIRST, REJECT_CODE: see
// server.mjs) and returns its FHIR base URL. It stops with the test.
func FHIRServer(t testing.TB, env ...string) string {
	t.Helper()
	dir := Dir(t, "fhirserver")
	cmd := exec.Command("node", filepath.Join(dir, "server.mjs"))
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("tools/fhirserver did not start: %v", err)
	}
	var hello struct{ URL string }
	if err := json.Unmarshal([]byte(line), &hello); err != nil || hello.URL == "" {
		t.Fatalf("tools/fhirserver said %q", line)
	}
	return hello.URL
}
