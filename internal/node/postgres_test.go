package node_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/pgstore"
	"github.com/vigil-iomt/vigil/internal/testenv"
)

func pgSchema(t testing.TB) (url, schema string) { return testenv.PostgresSchema(t) }

// A node on PostgreSQL does what a node on the embedded store does: a
// device's reading over HTTP, acknowledged once committed, comes back
// through FHIR; a threshold alert is raised; the audit log verifies.
func TestNodeOnPostgres(t *testing.T) {
	url, schema := pgSchema(t)
	e := startWith(t, node.Options{Postgres: url, PostgresSchema: schema})
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	for i, v := range []string{`{"code":"8867-4","value":72,"unit":"/min"}`, `{"code":"8310-5","value":39.6,"unit":"Cel"}`} {
		req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/mon-1/readings", strings.NewReader(string(reading("r"+string(rune('0'+i)), now.Add(time.Duration(i)*time.Second), v))))
		req.SetBasicAuth(e.device, e.secret)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("reading %d: %d", i, resp.StatusCode)
		}
	}
	var bundle struct {
		Entry []struct {
			Resource struct {
				ValueQuantity struct{ Value float64 }
			}
		}
	}
	if st := e.call(t, "GET", "/fhir/R4/Observation?patient=p1&code=8867-4", e.token, nil, &bundle); st != 200 || len(bundle.Entry) != 1 || bundle.Entry[0].Resource.ValueQuantity.Value != 72 {
		t.Fatalf("FHIR search: %d %+v", st, bundle)
	}
	// 39.6 °C is above the default limit (39.0 °C, on the first value):
	// the alert is raised and stored in PostgreSQL.
	deadline := time.Now().Add(20 * time.Second)
	for {
		as, err := e.n.Store.FindAlerts(ctx, vigil.AlertFilter{PatientID: "p1"})
		must(t, err)
		if slices.ContainsFunc(as, func(a *vigil.Alert) bool { return a.RuleID == "temp-high" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no alert for a temperature of 39.6 °C")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var rep struct {
		OK      bool
		Records int
	}
	if st := e.call(t, "GET", "/api/v1/audit/verify", adminToken(t, e), nil, &rep); st != 200 || !rep.OK || rep.Records == 0 {
		t.Fatalf("audit verify: %d %+v", st, rep)
	}
	if _, ok := e.n.Store.(*pgstore.Store); !ok {
		t.Fatalf("the node runs on %T", e.n.Store)
	}
}

// adminToken registers an admin and returns a token of theirs.
func adminToken(t *testing.T, e *env) string {
	t.Helper()
	ctx := context.Background()
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "adm", Role: vigil.RoleAdmin}, "a long admin password"))
	tok, _, err := e.n.Admin.CreateToken(ctx, "adm", admin.TokenSpec{Name: "test", TTL: time.Hour})
	must(t, err)
	return tok
}
