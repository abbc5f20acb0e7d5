package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/sys/unix"

	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

// tmpfs mounts a small file system of the given size at a new temporary
// directory (root only: the test is skipped where mounting is not
// allowed) and unmounts it when the test ends.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Skipf("cannot mount a small file system to fill (needs root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// mqttDevice connects device user over MQTT 5 (paho.golang).
func mqttDevice(t *testing.T, addr, user, secret string) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: user})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: user, Username: user, UsernameFlag: true, Password: []byte(secret), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("MQTT connect: %v %+v", err, ca)
	}
	return c
}

// heartRate is reading seq of the checker's devices.
func heartRate(seq int, t0 time.Time) string {
	return fmt.Sprintf(`{"id":"%d","time":%q,"values":[{"code":"8867-4","value":%d,"unit":"/min"}]}`,
		seq, t0.Add(time.Duration(seq)*time.Millisecond).UTC().Format(time.RFC3339Nano), 60+seq%40)
}

// TestDiskFull fills the data directory's disk under a running server:
// MQTT 5 readings are refused with PUBACK 0x97 (quota exceeded) and HTTP
// ones with 507 problem+json, the server stays up and keeps serving,
// and once space returns ingest resumes by itself; every acknowledged
// reading is stored exactly once, the refused ones once re-sent.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test is not short")
	}
	dir := tmpfs(t, "160m")
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	secrets := registerDevices(t, dir, 1, t0)
	srv := startChild(t, dir, "--disk-reserve", "48MiB", "--public-metrics")
	defer func() { srv.cmd.Process.Kill(); srv.cmd.Wait() }()
	c := mqttDevice(t, srv.mqtt, "cd0", secrets[0])
	ck := newChecker(1)
	seq := 0
	publish := func() (byte, string) {
		ck.mu.Lock()
		ck.sent[0][seq] = true
		ck.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pr, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/v1/devices/cd0/readings", QoS: 1, Payload: []byte(heartRate(seq, t0))})
		if pr == nil { // paho returns the PUBACK with an error for a refusal
			t.Fatalf("publish %d: %v", seq, err)
		}
		if pr.ReasonCode == 0 {
			ck.ack(0, seq)
		}
		seq++
		reason := ""
		if pr.Properties != nil {
			reason = pr.Properties.ReasonString
		}
		return pr.ReasonCode, reason
	}
	post := func(s int) *http.Response {
		req, _ := http.NewRequest("POST", srv.http+"/api/v1/devices/cd0/readings", strings.NewReader(heartRate(s, t0)))
		req.SetBasicAuth("cd0", secrets[0])
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	metric := func(name string) string {
		resp, err := http.Get(srv.http + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for l := range strings.Lines(string(b)) {
			if strings.HasPrefix(l, name+" ") {
				return strings.TrimSpace(strings.TrimPrefix(l, name+" "))
			}
		}
		return ""
	}
	for range 20 {
		if code, reason := publish(); code != 0 {
			t.Fatalf("with room on the disk: PUBACK 0x%02x %s", code, reason)
		}
	}

	// Fill the disk to 40 MiB free, below the 48 MiB reserve.
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, int64(fs.Bavail)*fs.Bsize-40<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for deadline := time.Now().Add(15 * time.Second); refused == 0; {
		code, reason := publish()
		switch code {
		case 0:
			if time.Now().After(deadline) {
				t.Fatal("readings still acknowledged 15 s after the disk filled")
			}
			time.Sleep(50 * time.Millisecond)
		case 0x97:
			if !strings.Contains(reason, "disk") {
				t.Errorf("PUBACK 0x97 reason %q does not say why", reason)
			}
			refused++
		default:
			t.Fatalf("disk full: PUBACK 0x%02x %s, want 0x97", code, reason)
		}
	}
	for range 5 {
		if code, _ := publish(); code != 0x97 {
			t.Fatalf("still full: PUBACK 0x%02x", code)
		}
	}
	resp := post(100000)
	var prob struct{ Code, Detail string }
	json.NewDecoder(resp.Body).Decode(&prob)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInsufficientStorage || prob.Code != "storage_full" || resp.Header.Get("Content-Type") != "application/problem+json" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("HTTP ingest with the disk full: %d %s %+v (Retry-After %q)", resp.StatusCode, resp.Header.Get("Content-Type"), prob, resp.Header.Get("Retry-After"))
	}
	ck.mu.Lock()
	ck.sent[0][100000] = true
	ck.mu.Unlock()
	if v := metric("vigil_disk_full"); v != "1" {
		t.Errorf("vigil_disk_full = %q while full", v)
	}
	// Still up: clinicians' reads and health checks work.
	if resp, err := http.Get(srv.http + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("health check with the disk full: %v %v", err, resp)
	}

	// Space returns: ingest resumes without a restart, on the same
	// connection.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, _ := publish(); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ingest did not resume 15 s after space returned")
		}
	}
	// The devices send what was refused again.
	_, sent := ck.snapshot(0)
	acked, _ := ck.snapshot(0)
	for s := range sent {
		if acked[s] {
			continue
		}
		if s == 100000 {
			if resp := post(s); resp.StatusCode != 200 && resp.StatusCode != 201 && resp.StatusCode != 202 {
				t.Fatalf("HTTP re-send: %d", resp.StatusCode)
			} else {
				resp.Body.Close()
				ck.ack(0, s)
			}
			continue
		}
		saved := seq
		seq = s
		if code, reason := publish(); code != 0 {
			t.Fatalf("re-send %d: 0x%02x %s", s, code, reason)
		}
		seq = saved
	}
	if v := metric("vigil_disk_full"); v != "0" {
		t.Errorf("vigil_disk_full = %q after space returned", v)
	}
	t.Logf("%d readings refused while the disk was full, all stored once re-sent", refused+5)

	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.cmd.Wait()
	sl, err := node.OpenSealer(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := pebble.Open(filepath.Join(dir, "store"), pebble.Options{CompactInterval: -1, Sealer: sl})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ck.check(t, st, t0, 0)
}
