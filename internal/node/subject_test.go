package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/node"
)

// A subject access export and an erasure through the admin API: the
// export is a Bundle of the patient's data, the erasure needs the id
// repeated and a reference, removes the data from the store and from the
// running engine (nothing comes back), and leaves an audit tombstone
// without patient data.
func TestSubjectAccessAndErasure(t *testing.T) {
	ctx := context.Background()
	e := startWith(t, node.Options{})
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "dpo", Role: vigil.RoleAdmin}, "correct horse battery"))
	tok, _, err := e.n.Admin.CreateToken(ctx, "dpo", admin.TokenSpec{Name: "t", TTL: time.Hour})
	must(t, err)
	now := time.Now().UTC()
	if st := postReadings2(t, e, []byte(`[`+string(reading("a", now.Add(-time.Minute), `{"code":"8867-4","value":180,"unit":"/min"}`))+`,`+string(reading("b", now, `{"code":"8867-4","value":182,"unit":"/min"}`))+`]`)); st != 200 {
		t.Fatalf("ingest: %d", st)
	}
	waitFor(t, "an alert for p1", 10*time.Second, func() bool {
		as, _ := e.n.Store.FindAlerts(ctx, vigil.AlertFilter{PatientID: "p1"})
		return len(as) > 0
	})

	call := func(method, path string, body any) (int, []byte) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, e.n.URL()+path, rd)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		must(t, err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	st, body := call("GET", "/api/v1/patients/p1/export?reference=DPO-7", nil)
	var bundle struct {
		Type  string
		Entry []struct{ Resource map[string]any }
	}
	if st != 200 || json.Unmarshal(body, &bundle) != nil || bundle.Type != "collection" || len(bundle.Entry) < 4 {
		t.Fatalf("export: %d %.300s", st, body)
	}
	if st, _ := call("POST", "/api/v1/patients/p1/erase", map[string]string{"confirm": "p2", "reference": "DPO-7"}); st != 400 {
		t.Fatalf("erase without the right confirmation: %d", st)
	}
	st, body = call("POST", "/api/v1/patients/p1/erase", map[string]string{"confirm": "p1", "reference": "DPO-7"})
	if st != 200 {
		t.Fatalf("erase: %d %s", st, body)
	}
	if st, _ := call("GET", "/api/v1/patients/p1", nil); st != 404 {
		t.Fatalf("patient after erasure: %d", st)
	}
	// Nothing comes back: the device is no longer assigned, the engine
	// forgot the open alert (escalation ticks would have saved it again).
	if st := postReadings2(t, e, reading("c", time.Now(), `{"code":"8867-4","value":185,"unit":"/min"}`)); st != 422 {
		t.Fatalf("reading after erasure: %d", st)
	}
	time.Sleep(1500 * time.Millisecond) // a tick of the alert timers
	if as, _ := e.n.Store.FindAlerts(ctx, vigil.AlertFilter{PatientID: "p1"}); len(as) != 0 {
		t.Fatalf("alerts of the erased patient came back: %d", len(as))
	}
	// The audit log keeps a tombstone: who, the reference, the counts.
	page, err := audit.Find(ctx, e.n.AuditStore, audit.Query{Limit: 1000})
	must(t, err)
	found := false
	for _, en := range page.Entries {
		b, _ := json.Marshal(en)
		if strings.Contains(string(b), "Doe") || strings.Contains(string(b), "Jane") || strings.Contains(string(b), "MRN-1") {
			t.Fatalf("patient data in the audit log: %s", b)
		}
		if strings.Contains(en.Detail, "erasure on request DPO-7") && en.Actor == "dpo" {
			found = true
		}
	}
	if !found {
		t.Fatal("no erasure tombstone in the audit log")
	}
}

func postReadings2(t *testing.T, e *env, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/mon-1/readings", bytes.NewReader(body))
	req.SetBasicAuth("mon-1", e.secret)
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	res.Body.Close()
	return res.StatusCode
}
