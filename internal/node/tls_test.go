package node_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/certs"
	"github.com/vigil-iomt/vigil/internal/hl7"
	"github.com/vigil-iomt/vigil/internal/node"
)

// With TLS, every listener speaks TLS with the certificate `vigil certs
// init` made: HTTPS, MQTT over TLS and MLLP over TLS accept clients that
// trust the local CA, and nothing is served in the clear.
func TestTLSEverywhere(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tdir := certs.Dir(dir)
	if _, err := certs.Init(tdir, []string{"vigil.ward.example"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{certs.KeyFile, certs.CAKeyFile} {
		st, err := os.Stat(filepath.Join(tdir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", f, st.Mode(), err)
		}
	}
	srv, err := certs.ServerConfig(filepath.Join(tdir, certs.CertFile), filepath.Join(tdir, certs.KeyFile))
	must(t, err)
	n, err := node.Start(ctx, node.Options{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", MLLPAddr: "127.0.0.1:0", TLS: srv, MaxReadingAge: -1})
	must(t, err)
	defer n.Close()
	pool, err := certs.Pool(filepath.Join(tdir, certs.CAFile))
	must(t, err)
	client := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}

	// HTTPS.
	if !strings.HasPrefix(n.URL(), "https://") {
		t.Fatalf("URL %s", n.URL())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: client}}
	resp, err := hc.Get(n.URL() + "/readyz")
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("HTTPS readyz: %d", resp.StatusCode)
	}
	resp, err = hc.Get(n.URL() + "/login")
	must(t, err)
	resp.Body.Close()
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatal("no HSTS over HTTPS")
	}
	if _, err := http.Get(n.URL() + "/readyz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client that does not trust the CA: %v", err)
	}
	if resp, err := http.Get(strings.Replace(n.URL(), "https://", "http://", 1) + "/readyz"); err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP served")
	}

	// MQTT over TLS, with a device credential.
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p1"}))
	secret, err := n.Admin.AddDevice(ctx, &vigil.Device{ID: "mon-1", Kind: vigil.DeviceBedsideMonitor})
	must(t, err)
	must(t, n.Admin.Assign(ctx, "mon-1", "p1", time.Now().Add(-time.Hour)))
	conn, err := tls.Dial("tcp", n.MQTTAddr(), client)
	must(t, err)
	c := paho.NewClient(paho.ClientConfig{PacketTimeout: time.Minute, Conn: conn, ClientID: "mon-1-tls"})
	// KeepAlive 0: paho.golang writes a packet with several Write calls
	// (net.Buffers) and its pinger writes PINGREQ from another goroutine —
	// on a TLS connection the two can interleave and corrupt the PUBLISH
	// (on TCP the packet goes out in one writev). No pinger, no race.
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: "mon-1-tls", Username: "mon-1", UsernameFlag: true, Password: []byte(secret), PasswordFlag: true, KeepAlive: 0, CleanStart: true})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("MQTT over TLS: %v %+v", err, ca)
	}
	pr, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/v1/devices/mon-1/readings", QoS: 1, Payload: reading("t1", time.Now(), `{"code":"8867-4","value":71,"unit":"/min"}`)})
	if err != nil || pr.ReasonCode != 0 {
		dumpGoroutines(t)
		t.Fatalf("publish over TLS: %v %+v", err, pr)
	}
	c.Disconnect(&paho.Disconnect{})
	if plain, err := net.DialTimeout("tcp", n.MQTTAddr(), time.Second); err == nil {
		// An MQTT CONNECT in the clear gets no CONNACK.
		plain.SetDeadline(time.Now().Add(2 * time.Second))
		plain.Write([]byte{0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x04, 'p', 'l', 'a', 'i'})
		buf := make([]byte, 4)
		if k, _ := plain.Read(buf); k >= 2 && buf[0] == 0x20 {
			t.Fatal("MQTT served in the clear")
		}
		plain.Close()
	}

	// MLLP over TLS: the shared PCD-01 message gets its AA.
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p-bp", Identifier: "789567"}))
	_, err = n.Admin.AddDevice(ctx, &vigil.Device{ID: "ACDE48234567ABCD", Kind: vigil.DeviceGateway})
	must(t, err)
	msg, err := os.ReadFile("testdata/pcd01-bp.hl7")
	must(t, err)
	mc, err := tls.Dial("tcp", n.MLLP.Addr().String(), client)
	must(t, err)
	defer mc.Close()
	_, err = mc.Write(hl7.AppendFrame(nil, msg))
	must(t, err)
	ack, err := hl7.NewFrameReader(mc, 1<<20).Read()
	must(t, err)
	if !strings.Contains(string(ack), "MSA|AA|") {
		t.Fatalf("MLLP over TLS ACK: %q", ack)
	}
}

// Mutual TLS: a device connects with the client certificate Vigil's CA
// issued it, without a password, over MQTT and HTTPS; only its newest
// certificate works, and revocation stops it.
func TestDeviceCertificates(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tdir := certs.Dir(dir)
	if _, err := certs.Init(tdir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	srv, err := certs.ServerConfig(filepath.Join(tdir, certs.CertFile), filepath.Join(tdir, certs.KeyFile))
	must(t, err)
	must(t, certs.RequireClientCertsFrom(srv, filepath.Join(tdir, certs.CAFile)))
	n, err := node.Start(ctx, node.Options{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", TLS: srv})
	must(t, err)
	defer n.Close()
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p1"}))
	_, err = n.Admin.AddDevice(ctx, &vigil.Device{ID: "pump-7", Kind: vigil.DeviceBedsideMonitor})
	must(t, err)
	must(t, n.Admin.Assign(ctx, "pump-7", "p1", time.Now().Add(-time.Hour)))
	pool, err := certs.Pool(filepath.Join(tdir, certs.CAFile))
	must(t, err)
	issue := func() tls.Certificate {
		cp, kp, serial, err := certs.IssueClient(tdir, "pump-7", time.Now())
		must(t, err)
		must(t, n.Admin.SetDeviceCert(ctx, "pump-7", serial))
		c, err := tls.X509KeyPair(cp, kp)
		must(t, err)
		return c
	}
	mqttWith := func(c tls.Certificate) byte {
		conn, err := tls.Dial("tcp", n.MQTTAddr(), &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{c}})
		must(t, err)
		cl := paho.NewClient(paho.ClientConfig{PacketTimeout: time.Minute, Conn: conn, ClientID: "pump"})
		ca, _ := cl.Connect(ctx, &paho.Connect{ClientID: "pump", KeepAlive: 0, CleanStart: true}) // no pinger over TLS: see TestTLSEverywhere
		if ca == nil {
			return 0xff
		}
		if ca.ReasonCode == 0 {
			pr, err := cl.Publish(ctx, &paho.Publish{Topic: "vigil/v1/devices/pump-7/readings", QoS: 1, Payload: reading("c1", time.Now(), `{"code":"8867-4","value":66,"unit":"/min"}`)})
			if err != nil || pr.ReasonCode != 0 {
				dumpGoroutines(t)
				t.Fatalf("publish with a certificate: %v %+v", err, pr)
			}
			cl.Disconnect(&paho.Disconnect{})
		}
		return ca.ReasonCode
	}
	first := issue()
	if rc := mqttWith(first); rc != 0 {
		t.Fatalf("MQTT with the device's certificate: %#x", rc)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{first}}}}
	resp, err := hc.Post(n.URL()+"/api/v1/devices/pump-7/readings", "application/json", strings.NewReader(string(reading("c2", time.Now(), `{"code":"8867-4","value":67,"unit":"/min"}`))))
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HTTPS with the device's certificate: %d", resp.StatusCode)
	}
	second := issue()
	if rc := mqttWith(first); rc == 0 {
		t.Fatal("a replaced certificate still connects")
	}
	if rc := mqttWith(second); rc != 0 {
		t.Fatalf("the new certificate: %#x", rc)
	}
	must(t, n.Admin.RevokeDevice(ctx, "pump-7"))
	if rc := mqttWith(second); rc == 0 {
		t.Fatal("a revoked device's certificate connects")
	}
}

// dumpGoroutines logs every goroutine's stack, to see where an
// acknowledgement got stuck.
func dumpGoroutines(t *testing.T) {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	t.Log(b.String())
}
