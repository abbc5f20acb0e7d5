package node_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil"
)

// Rotating a device's secret or revoking it closes its MQTT sessions at
// once; the old secret no longer connects, and a revoked device cannot
// connect or post at all.
func TestRevocationDisconnects(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	connect := func(secret string) (*paho.Client, chan byte, byte) {
		t.Helper()
		conn, err := net.Dial("tcp", e.n.MQTTAddr())
		must(t, err)
		gone := make(chan byte, 1)
		c := paho.NewClient(paho.ClientConfig{PacketTimeout: time.Minute, Conn: conn, ClientID: "mon-rev",
			OnServerDisconnect: func(d *paho.Disconnect) { gone <- d.ReasonCode }})
		ca, _ := c.Connect(ctx, &paho.Connect{ClientID: "mon-rev", Username: e.device, UsernameFlag: true, Password: []byte(secret), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
		if ca == nil {
			return c, gone, 0xff
		}
		return c, gone, ca.ReasonCode
	}
	_, gone, rc := connect(e.secret)
	if rc != 0 {
		t.Fatalf("connect: %#x", rc)
	}
	admin := e.adminToken(t)
	post := func(path string) *http.Response {
		req, _ := http.NewRequest("POST", e.n.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		return resp
	}
	if resp := post("/api/v1/devices/" + e.device + "/secret"); resp.StatusCode != 200 {
		t.Fatalf("rotate: %d", resp.StatusCode)
	}
	select {
	case code := <-gone:
		if code != 0x98 {
			t.Fatalf("disconnect reason %#x, want 0x98 administrative action", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the session stayed open after the secret was rotated")
	}
	if _, _, rc := connect(e.secret); rc != 0x86 {
		t.Fatalf("old secret: %#x, want 0x86", rc)
	}
	newSecret, err := e.n.Admin.RotateDeviceSecret(ctx, e.device)
	must(t, err)
	_, gone, rc = connect(newSecret)
	if rc != 0 {
		t.Fatalf("new secret: %#x", rc)
	}
	if resp := post("/api/v1/devices/" + e.device + "/revoke"); resp.StatusCode != 204 {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the session stayed open after revocation")
	}
	if _, _, rc := connect(newSecret); rc != 0x86 && rc != 0x87 {
		t.Fatalf("revoked device connected: %#x", rc)
	}
	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/readings",
		strings.NewReader(string(reading("r1", time.Now(), `{"code":"8867-4","value":70,"unit":"/min"}`))))
	req.SetBasicAuth(e.device, newSecret)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 401 && resp.StatusCode != 403 {
		t.Fatalf("revoked device posted: %d", resp.StatusCode)
	}
}

// Enrollment at scale: an admin issues a one-time code; the device
// exchanges it for its secret once, and then sends with that secret.
func TestDeviceEnrollment(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	_, err := e.n.Admin.AddDevice(ctx, &vigil.Device{ID: "watch-42", Kind: vigil.DeviceWearable})
	must(t, err)
	must(t, e.n.Admin.Assign(ctx, "watch-42", "p1", time.Now().Add(-time.Hour)))
	admin := e.adminToken(t)
	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/watch-42/enrollment-code", strings.NewReader(`{"ttl":"72h"}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	var ec struct {
		Code    string
		Expires time.Time
	}
	json.NewDecoder(resp.Body).Decode(&ec)
	resp.Body.Close()
	if resp.StatusCode != 201 || !strings.HasPrefix(ec.Code, "vge_") || ec.Expires.Sub(time.Now()) < 71*time.Hour {
		t.Fatalf("enrollment code: %d %+v", resp.StatusCode, ec)
	}
	enroll := func(code string) (int, string) {
		resp, err := http.Post(e.n.URL()+"/api/v1/devices/watch-42/enroll", "application/json", strings.NewReader(`{"code":"`+code+`"}`))
		must(t, err)
		defer resp.Body.Close()
		var out struct{ Secret string }
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.Secret
	}
	if st, _ := enroll("vge_wrong"); st != 401 {
		t.Fatalf("wrong code: %d", st)
	}
	st, secret := enroll(ec.Code)
	if st != 201 || secret == "" {
		t.Fatalf("enroll: %d", st)
	}
	if st, _ := enroll(ec.Code); st != 401 {
		t.Fatalf("the code again: %d", st)
	}
	req, _ = http.NewRequest("POST", e.n.URL()+"/api/v1/devices/watch-42/readings",
		strings.NewReader(string(reading("w1", time.Now(), `{"code":"8867-4","value":64,"unit":"/min"}`))))
	req.SetBasicAuth("watch-42", secret)
	resp, err = http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("post with the enrolled secret: %d", resp.StatusCode)
	}
}
