package node_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/pubhealth"
)

// Public-health aggregates as CSV. An administrator's exact export
// suppresses small cells (with a complementary cell) and names no
// patient. An analyst gets differentially private tables only, each
// spending from a budget that refuses queries once spent; every export is
// audited with its actor, and the analyst reads no patient's record,
// readings or FHIR resources.
func TestAnalystAggregates(t *testing.T) {
	e := startWith(t, node.Options{PrivacyBudget: pubhealth.Budget{Epsilon: 2.5, Delta: 1e-4}})
	ctx := context.Background()
	monday := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -7)
	monday = monday.AddDate(0, 0, -((int(monday.Weekday()) + 6) % 7))
	next := 0
	add := func(n int, postal, birth, sex string, temp float64) {
		for range n {
			next++
			id := fmt.Sprintf("ph-%d", next)
			must(t, e.n.Admin.AddPatient(ctx, &vigil.Patient{ID: id, PostalCode: postal, BirthDate: birth, Sex: sex, Family: "Secret-" + id}))
			at := monday.Add(10 * time.Hour)
			_, err := e.n.Store.AppendReadings(ctx, []*vigil.Reading{{DeviceID: "kiosk-" + id, ID: "1", PatientID: id, Time: at, Received: at,
				Values: []vigil.Measurement{{Code: vigil.LOINCBodyTemp, Value: temp, Unit: "Cel"}}}})
			must(t, err)
		}
	}
	add(14, "LS6 2AB", "1985-03-03", "male", 37)
	add(3, "LS6 9ZZ", "1985-03-03", "female", 39) // three people with fever: must not show
	add(12, "LS6 4CD", "1950-03-03", "female", 37)

	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "epi", Role: vigil.RoleAnalyst}, "correct horse battery"))
	tok, _, err := e.n.Admin.CreateToken(ctx, "epi", admin.TokenSpec{Name: "aggregates", TTL: time.Hour})
	must(t, err)
	root := adminToken(t, e)
	getAs := func(token, path string) *http.Response {
		req, _ := http.NewRequest("GET", e.n.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		return resp
	}
	get := func(path string) *http.Response { return getAs(tok, path) }
	period := fmt.Sprintf("from=%s&to=%s", monday.Format("2006-01-02"), monday.AddDate(0, 0, 7).Format("2006-01-02"))
	resp := getAs(root, "/api/v1/aggregates?format=csv&"+period)
	rows, err := csv.NewReader(resp.Body).ReadAll()
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" {
		t.Fatalf("export: %d %v %s", resp.StatusCode, err, resp.Header.Get("Content-Type"))
	}
	byKey := map[string][]string{}
	for _, r := range rows[1:] {
		byKey[r[1]+"/"+r[2]+"/"+r[3]] = r
		for _, f := range r {
			if len(f) > 6 && f[:6] == "Secret" || len(f) > 3 && f[:3] == "ph-" {
				t.Fatalf("a row names a patient: %v", r)
			}
		}
	}
	if r := byKey["LS6/18-44/female"]; r == nil || r[4] != "" || r[5] != "" || r[9] != "small" {
		t.Fatalf("3-patient cell: %v", r)
	}
	if r := byKey["LS6/75+/female"]; r == nil || r[9] != "complementary" {
		t.Fatalf("complementary cell: %v", r)
	}
	if r := byKey["LS6/18-44/male"]; r == nil || r[4] != "14" || r[5] != "0" {
		t.Fatalf("14-patient cell: %v", r)
	}
	if r := byKey["LS6/all/all"]; r == nil || r[4] != "29" {
		t.Fatalf("region total: %v", r)
	}
	resp = getAs(root, "/api/v1/aggregates?format=fhir&"+period)
	var mr map[string]any
	must(t, json.NewDecoder(resp.Body).Decode(&mr))
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/fhir+json" || mr["resourceType"] != "MeasureReport" || len(mr["group"].([]any)) != 5 {
		t.Fatalf("FHIR export: %s %v", resp.Header.Get("Content-Type"), mr["resourceType"])
	}
	if resp := getAs(root, "/api/v1/aggregates?from=2026-01-01&to=2026-02-01&k=3"); resp.StatusCode != 400 {
		t.Fatalf("k below 11: %d", resp.StatusCode)
	}

	// A research extract for an approved study: administrators only,
	// pseudonymised (no patient id or name), marked as personal data.
	resp = getAs(root, "/api/v1/studies/fever-kiosk/extract?approval=REC-26-0042&"+period)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "subject,time,code,value,unit,birth_year,sex\n") ||
		strings.Contains(string(body), "ph-") || strings.Contains(string(body), "Secret") || !strings.Contains(resp.Header.Get("X-Vigil-Data-Class"), "not anonymous") {
		t.Fatalf("extract: %d %q %.200s", resp.StatusCode, resp.Header.Get("X-Vigil-Data-Class"), body)
	}
	if n := strings.Count(string(body), "\n") - 1; n != 29 {
		t.Fatalf("extract rows %d, want 29 temperatures", n)
	}
	if resp := getAs(root, "/api/v1/studies/fever-kiosk/extract?"+period); resp.StatusCode != 400 {
		t.Fatalf("extract without an approval: %d", resp.StatusCode)
	}
	if resp := get("/api/v1/studies/fever-kiosk/extract?approval=x&" + period); resp.StatusCode != 403 {
		t.Fatalf("analyst extract: %d", resp.StatusCode)
	}

	// The analyst: private tables only, each paid for from the budget
	// (2.5): two queries at ε 1, then one that would exceed it is refused.
	if resp := get("/api/v1/aggregates?epsilon=0&" + period); resp.StatusCode != 403 {
		t.Fatalf("analyst asking for exact values: %d", resp.StatusCode)
	}
	for i := range 2 {
		resp := get("/api/v1/aggregates?format=csv&" + period)
		rows, err := csv.NewReader(resp.Body).ReadAll()
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil || resp.Header.Get("X-Privacy-Spent") != fmt.Sprintf("epsilon=%d; delta=%g; queries=%d", i+1, float64(i+1)*1e-5, i+1) {
			t.Fatalf("private query %d: %d %v %q", i, resp.StatusCode, err, resp.Header.Get("X-Privacy-Spent"))
		}
		for _, r := range rows[1:] {
			if r[1] == "all" || r[2] == "all" {
				t.Fatalf("a private table published a total: %v", r)
			}
			if n, _ := strconv.Atoi(r[4]); r[9] == "" && n < 11 {
				t.Fatalf("a released private cell under k: %v", r)
			}
		}
	}
	resp = get("/api/v1/aggregates?" + period)
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(msg), "privacy budget") {
		t.Fatalf("over budget: %d %s", resp.StatusCode, msg)
	}
	if resp := get("/api/v1/aggregates?epsilon=0.5&" + period); resp.StatusCode != 200 {
		t.Fatalf("what is left of the budget: %d", resp.StatusCode)
	}
	// Biosurveillance: noisy daily fever counts per region and EARS.
	resp = get("/api/v1/signals?" + period)
	var sv struct {
		EpsilonPerDay float64
		Regions       []struct {
			Region string
			Days   []struct{ Date string }
		}
	}
	must(t, json.NewDecoder(resp.Body).Decode(&sv))
	resp.Body.Close()
	if resp.StatusCode != 200 || sv.EpsilonPerDay != 1 || len(sv.Regions) != 1 || sv.Regions[0].Region != "LS6" || len(sv.Regions[0].Days) != 7 { // not "unknown": p1 has no postal code, so no region
		t.Fatalf("signals: %d %+v", resp.StatusCode, sv)
	}

	// Nothing about any one patient.
	for _, path := range []string{"/api/v1/patients", "/api/v1/patients/p1", "/fhir/R4/Patient", "/fhir/R4/Observation?patient=p1", "/api/v1/patients/p1/series?code=8310-5"} {
		if resp := get(path); resp.StatusCode != 403 {
			t.Errorf("analyst GET %s: %d, want 403", path, resp.StatusCode)
		}
	}
	// Audited, with the analyst as actor.
	var page audit.Page
	page2, err := audit.Find(ctx, e.n.AuditStore, audit.Query{Actor: "epi", Limit: 100})
	must(t, err)
	page = *page2
	exports, refused := 0, 0
	for _, en := range page.Entries {
		if en.Action == "GET /api/v1/aggregates" {
			if en.Outcome == "success" {
				exports++
			} else {
				refused++
			}
		}
	}
	if !slices.ContainsFunc(page.Entries, func(en audit.Entry) bool { return strings.Contains(en.Detail, "epsilon 0.5") }) {
		t.Errorf("the privacy cost is not in the audit entries")
	}
	all, err := audit.Find(ctx, e.n.AuditStore, audit.Query{Limit: 1000})
	must(t, err)
	if !slices.ContainsFunc(all.Entries, func(en audit.Entry) bool {
		return en.Action == "GET /api/v1/studies/{id}/extract" && en.Outcome == "success" && strings.Contains(en.Detail, "approval REC-26-0042")
	}) {
		t.Errorf("the extract's approval is not in its audit entry")
	}
	if exports != 3 || refused != 2 {
		t.Fatalf("audited analyst exports: %d, refusals %d; want 3 and 2", exports, refused)
	}
}
