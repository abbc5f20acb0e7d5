package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/node"
)

// vigil audit verify on a stopped node: intact after use; a head signed
// by another key is refused.
func TestAuditVerifyCommand(t *testing.T) {
	dir := t.TempDir()
	n, err := node.Start(context.Background(), node.Options{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		resp, err := http.Get(n.URL() + "/api/v1/patients")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := vigilCmd(t, "", "audit", "verify", "--data", dir, "--json")
	var rep audit.Report
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK || rep.Records < 3 {
		t.Fatalf("verify: %v %s", err, out)
	}
	// A public key that is not the node's: the head does not verify.
	other := filepath.Join(t.TempDir(), "other.key")
	if _, err := audit.LoadOrCreateKey(other); err != nil {
		t.Fatal(err)
	}
	out, err = vigilCmd(t, "", "audit", "verify", "--data", dir, "--pubkey", other+".pub")
	if err == nil || !strings.Contains(out, "AUDIT LOG TAMPERED") {
		t.Fatalf("foreign key: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, audit.PubKeyFile)); err != nil {
		t.Fatal(err)
	}

	// vigil audit log: the three refused reads, paged, and as FHIR.
	out, err = vigilCmd(t, "", "audit", "log", "--data", dir, "--outcome", "denied", "--limit", "2", "--json")
	var page audit.Page
	if err != nil || json.Unmarshal([]byte(out), &page) != nil || len(page.Entries) != 2 || page.Next == 0 {
		t.Fatalf("log page 1: %v %s", err, out)
	}
	out, err = vigilCmd(t, "", "audit", "log", "--data", dir, "--outcome", "denied", "--after", fmt.Sprint(page.Next))
	if err != nil || !strings.Contains(out, "GET /api/v1/patients") || !strings.Contains(out, "denied (unauthorized)") || strings.Contains(out, "more:") {
		t.Fatalf("log page 2: %v %s", err, out)
	}
	out, err = vigilCmd(t, "", "audit", "log", "--data", dir, "--fhir")
	if err != nil || !strings.Contains(out, `"resourceType": "AuditEvent"`) {
		t.Fatalf("log --fhir: %v %s", err, out)
	}
	if out, err = vigilCmd(t, "", "audit", "log", "--data", dir, "--from", "yesterday"); err == nil || !strings.Contains(out+err.Error(), "RFC 3339") {
		t.Fatalf("bad --from: %v %s", err, out)
	}
}

func TestUserTOTPCommand(t *testing.T) {
	dir := t.TempDir()
	if out, err := vigilCmd(t, "a long enough password\n", "user", "add", "--id", "dr", "--role", "clinician", "--password-stdin", "--data", dir); err != nil {
		t.Fatalf("user add: %v %s", err, out)
	}
	out, err := vigilCmd(t, "", "user", "totp", "dr", "--data", dir, "--json")
	if err != nil || !strings.Contains(out, `"otpauthUrl": "otpauth://totp/Vigil:dr?`) {
		t.Fatalf("totp: %v %s", err, out)
	}
}
