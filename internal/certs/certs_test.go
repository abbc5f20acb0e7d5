package certs

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func parse(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(p.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The server certificate chains to the CA for every host; a second Init
// keeps the CA (devices keep trusting it) and replaces the server
// certificate.
func TestInit(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if _, err := Init(dir, []string{"vigil.example", "10.1.2.3"}, now); err != nil {
		t.Fatal(err)
	}
	ca := parse(t, filepath.Join(dir, CAFile))
	pool, err := Pool(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	srv := parse(t, filepath.Join(dir, CertFile))
	for _, h := range []string{"localhost", "127.0.0.1", "vigil.example", "10.1.2.3"} {
		if _, err := srv.Verify(x509.VerifyOptions{DNSName: h, Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: pool}); err == nil {
		t.Error("valid for a host it was not made for")
	}
	if !ca.IsCA || srv.NotAfter.Sub(now) > 826*24*time.Hour {
		t.Fatalf("ca %v, server until %v", ca.IsCA, srv.NotAfter)
	}
	if _, err := Init(dir, []string{"new.example"}, now); err != nil {
		t.Fatal(err)
	}
	if ca2 := parse(t, filepath.Join(dir, CAFile)); !ca2.Equal(ca) {
		t.Fatal("a second Init replaced the CA")
	}
	if srv2 := parse(t, filepath.Join(dir, CertFile)); srv2.VerifyHostname("new.example") != nil || srv2.Equal(srv) {
		t.Fatal("server certificate not replaced")
	}
	if _, err := ServerConfig(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)); err != nil {
		t.Fatal(err)
	}
}
