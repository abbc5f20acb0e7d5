// Package certs makes and loads the TLS material of a Vigil node: a local
// certificate authority and a server certificate it signs (`vigil certs
// init`), kept in the data directory's tls/ folder, private keys readable
// by the owner only.
//
//	tls/ca.pem          the CA certificate: give it to devices and clients
//	tls/ca-key.pem      the CA key (0600): keep it, or move it offline
//	tls/server.pem      the server certificate (the hosts it is valid for)
//	tls/server-key.pem  the server key (0600)
//
// Keys are ECDSA P-256; the CA lasts 10 years, the server certificate 825
// days (the most browsers accept). A hospital's own certificate can be used
// instead (vigil serve --tls-cert, --tls-key).
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names under Dir(dataDir).
const (
	CAFile     = "ca.pem"
	CAKeyFile  = "ca-key.pem"
	CertFile   = "server.pem"
	KeyFile    = "server-key.pem"
	caLife     = 10 * 365 * 24 * time.Hour
	serverLife = 825 * 24 * time.Hour
)

// Dir is where a data directory keeps its TLS material.
func Dir(dataDir string) string { return filepath.Join(dataDir, "tls") }

// Exists reports whether dir holds a server certificate and key.
func Exists(dir string) bool {
	_, e1 := os.Stat(filepath.Join(dir, CertFile))
	_, e2 := os.Stat(filepath.Join(dir, KeyFile))
	return e1 == nil && e2 == nil
}

// Init creates a CA (unless dir has one) and a server certificate for
// hosts (DNS names or IP addresses; localhost and 127.0.0.1 are always
// included), replacing an existing server certificate. It returns the
// server certificate's SHA-256 fingerprint.
func Init(dir string, hosts []string, now time.Time) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	caCert, caKey, err := loadCA(dir)
	if errors.Is(err, fs.ErrNotExist) {
		caCert, caKey, err = newCA(dir, now)
	}
	if err != nil {
		return "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"Vigil"}, CommonName: "vigil server"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverLife),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	seen := map[string]bool{}
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", err
	}
	if err := writeKey(filepath.Join(dir, KeyFile), key); err != nil {
		return "", err
	}
	if err := writePEM(filepath.Join(dir, CertFile), "CERTIFICATE", der, 0o644); err != nil {
		return "", err
	}
	return Fingerprint(der), nil
}

// Fingerprint is the SHA-256 fingerprint of a DER certificate, as
// browsers and openssl show it.
func Fingerprint(der []byte) string {
	return fmt.Sprintf("% X", sha256Sum(der))
}

func newCA(dir string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"Vigil"}, CommonName: "Vigil local CA " + host},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLife),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writeKey(filepath.Join(dir, CAKeyFile), key); err != nil {
		return nil, nil, err
	}
	if err := writePEM(filepath.Join(dir, CAFile), "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("the CA key is not in %s (moved offline?): put it back to issue a certificate: %w", dir, err)
	}
	cp, _ := pem.Decode(cb)
	kp, _ := pem.Decode(kb)
	if cp == nil || kp == nil {
		return nil, nil, fmt.Errorf("%s: not PEM", dir)
	}
	cert, err := x509.ParseCertificate(cp.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kp.Bytes)
	return cert, key, err
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// ServerConfig loads a certificate and key (PEM) as a server TLS
// configuration: TLS 1.2 or later, modern AEAD suites only.
func ServerConfig(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{ // TLS 1.2; TLS 1.3 suites are all AEAD
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
		},
	}, nil
}

// Pool returns a certificate pool holding the CA certificate in file.
func Pool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return p, nil
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// ClientLife is how long a device certificate lasts.
const ClientLife = 2 * 365 * 24 * time.Hour

// IssueClient makes a client certificate for a device (CN = its id),
// signed by the CA in dir, and returns it and its key as PEM, and its
// serial number (hex) for the device record.
func IssueClient(dir, deviceID string, now time.Time) (certPEM, keyPEM []byte, serialHex string, err error) {
	caCert, caKey, err := loadCA(dir)
	if err != nil {
		return nil, nil, "", fmt.Errorf("issue a device certificate: %w (run vigil certs init first)", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, "", err
	}
	sn := serial()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{Organization: []string{"Vigil device"}, CommonName: deviceID},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ClientLife),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, "", err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), sn.Text(16), nil
}

// RequireClientCertsFrom makes cfg verify client certificates given by
// devices against the CA in caFile (a client may still present none and
// authenticate with its secret).
func RequireClientCertsFrom(cfg *tls.Config, caFile string) error {
	pool, err := Pool(caFile)
	if err != nil {
		return err
	}
	cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	return nil
}

// ClientIdentity returns the device id (CN) and serial (hex) of a
// verified client certificate on the connection, or ok false.
func ClientIdentity(cs *tls.ConnectionState) (id, serialHex string, ok bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", "", false
	}
	leaf := cs.VerifiedChains[0][0]
	return leaf.Subject.CommonName, leaf.SerialNumber.Text(16), true
}
