package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil/internal/certs"
	"github.com/vigil-iomt/vigil/internal/node"
)

// vigil serve refuses to start without TLS unless told --plaintext; after
// vigil certs init it serves HTTPS, and the CLI talks to it through the
// local CA.
func TestServeTLSByDefault(t *testing.T) {
	dir := t.TempDir()
	_, err := vigilCmd(t, "", "serve", "--data", dir, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "vigil certs init --data "+dir) || !strings.Contains(err.Error(), "--plaintext") {
		t.Fatalf("serve without a certificate: %v", err)
	}
	out, err := vigilCmd(t, "", "certs", "init", "--data", dir, "--host", "vigil.ward4.example", "--json")
	if err != nil {
		t.Fatalf("certs init: %v %s", err, out)
	}
	var res struct {
		CA, Key string
		Hosts   []string
		SHA256  string
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.SHA256) < 64 || !contains(res.Hosts, "vigil.ward4.example") {
		t.Fatalf("certs init output: %v %s", err, out)
	}
	if st, err := os.Stat(res.Key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode: %v %v", st, err)
	}

	os.Remove(filepath.Join(dir, node.ControlFile))
	cmd := exec.Command(os.Args[0], "serve", "--data", dir, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--log-level", "error")
	cmd.Env = append(os.Environ(), "VIGIL_TEST_MAIN=1")
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	c, err := waitControl(context.Background(), dir, 60*time.Second)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if !strings.HasPrefix(c.HTTPURL, "https://") {
		t.Fatalf("control file URL %s", c.HTTPURL)
	}
	// The CLI finds the running server and trusts it through DATA/tls/ca.pem.
	if out, err := vigilCmd(t, "", "patient", "add", "--id", "p-tls", "--family", "Tls", "--data", dir); err != nil {
		t.Fatalf("patient add through HTTPS: %v %s", err, out)
	}
	if out, err := vigilCmd(t, "", "patient", "list", "--data", dir); err != nil || !strings.Contains(out, "p-tls") {
		t.Fatalf("patient list through HTTPS: %v %s", err, out)
	}
	if strings.Contains(stderr.String(), "WARNING") {
		t.Fatalf("TLS server warned: %s", stderr.String())
	}
	if !certs.Exists(certs.Dir(dir)) {
		t.Fatal("certificates gone")
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// lockedBuffer is a strings.Builder safe to read while a child writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestDeviceCertCommand(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	if _, err := vigilCmd(t, "", "device", "cert", "mon-1", "--out", out, "--data", dir); err == nil {
		t.Fatal("a certificate for an unknown device")
	}
	if o, err := vigilCmd(t, "", "device", "add", "--id", "mon-1", "--kind", "bedside-monitor", "--data", dir); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	if _, err := vigilCmd(t, "", "device", "cert", "mon-1", "--out", out, "--data", dir); err == nil || !strings.Contains(err.Error(), "vigil certs init") {
		t.Fatalf("without a CA: %v", err)
	}
	if _, err := vigilCmd(t, "", "certs", "init", "--data", dir); err != nil {
		t.Fatal(err)
	}
	o, err := vigilCmd(t, "", "device", "cert", "mon-1", "--out", out, "--data", dir, "--json")
	if err != nil || !strings.Contains(o, `"serial"`) {
		t.Fatalf("cert: %v %s", err, o)
	}
	if st, err := os.Stat(filepath.Join(out, "mon-1-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
}
