package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/npmtools"
)

// A real FHIR client (fhir-kit-client from npm, tools/fhirclient) reads
// the CapabilityStatement, reads, searches, pages with its own nextPage,
// counts, runs $lastn, follows _include, updates with If-Match (and is
// refused with 412 when stale) and gets OperationOutcomes for errors.
func TestFHIRKitClient(t *testing.T) {
	dir := npmtools.Dir(t, "fhirclient")
	e := start(t)
	// 50 heart rates and SpO2 values from the monitor, over HTTP.
	var msgs []string
	t0 := time.Now().Add(-50 * time.Minute).Truncate(time.Minute)
	for i := range 50 {
		msgs = append(msgs, string(reading(fmt.Sprint("r", i), t0.Add(time.Duration(i)*time.Minute),
			fmt.Sprintf(`{"code":"8867-4","value":%d,"unit":"/min"}`, 60+i), `{"code":"59408-5","value":97,"unit":"%"}`)))
	}
	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/readings", strings.NewReader("["+strings.Join(msgs, ",")+"]"))
	req.SetBasicAuth(e.device, e.secret)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("ingest: %d", resp.StatusCode)
	}

	in, _ := json.Marshal(map[string]string{"base": e.n.URL() + "/fhir/R4", "token": e.token, "adminToken": e.adminToken(t), "patient": "p1", "identifier": "MRN-1"})
	cmd := exec.CommandContext(context.Background(), "node", filepath.Join(dir, "client.mjs"))
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("fhir-kit-client: %v\n%s", err, stderr.String())
	}
	var got struct {
		FHIRVersion       string   `json:"fhirVersion"`
		Formats           []string `json:"formats"`
		Resources         []string `json:"resources"`
		Patient           struct{ ID, VersionID, Family string }
		IdentifierMatches []string `json:"identifierMatches"`
		PagedIDs          int      `json:"pagedIds"`
		PagedUnique       int      `json:"pagedUnique"`
		Pages             int      `json:"pages"`
		CountTotal        int      `json:"countTotal"`
		CountEntries      int      `json:"countEntries"`
		FirstObservation  struct {
			ID, Code string
			Value    float64
		}
		Lastn        int      `json:"lastn"`
		IncludeModes []string `json:"includeModes"`
		Updated      struct{ VersionID, Family string }
		StaleUpdate  struct {
			Status  int
			Outcome string
		}
		BadSearch struct {
			Status        int
			Outcome, Code string
		}
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("client output: %v: %s", err, stdout.String())
	}
	t.Logf("fhir-kit-client saw: %s", stdout.String())
	switch {
	case got.FHIRVersion != "4.0.1" || strings.Join(got.Formats, ",") != "json":
		t.Errorf("CapabilityStatement: %s %v", got.FHIRVersion, got.Formats)
	case got.Patient.ID != "p1" || got.Patient.Family != "Doe" || strings.Join(got.IdentifierMatches, ",") != "p1":
		t.Errorf("patient read/search: %+v %v", got.Patient, got.IdentifierMatches)
	case got.PagedIDs != 50 || got.PagedUnique != 50 || got.Pages != 8:
		t.Errorf("paging: %d ids (%d unique) in %d pages, want 50 in 8", got.PagedIDs, got.PagedUnique, got.Pages)
	case got.CountTotal != 50 || got.CountEntries != 0:
		t.Errorf("_summary=count: total %d, %d entries", got.CountTotal, got.CountEntries)
	case got.FirstObservation.Code != vigil.LOINCHeartRate || got.FirstObservation.Value != 60:
		t.Errorf("observation read: %+v", got.FirstObservation)
	case got.Lastn != 4: // heart rate and SpO2, two each
		t.Errorf("$lastn max=2: %d", got.Lastn)
	case strings.Join(got.IncludeModes, ",") != "Observation:match,Observation:match,Observation:match,Patient:include":
		t.Errorf("_include: %v", got.IncludeModes)
	case got.Updated.VersionID != "2" || got.Updated.Family != "Renamed":
		t.Errorf("update: %+v", got.Updated)
	case got.StaleUpdate.Status != 412 || got.StaleUpdate.Outcome != "OperationOutcome":
		t.Errorf("stale update: %+v", got.StaleUpdate)
	case got.BadSearch.Status != 400 || got.BadSearch.Outcome != "OperationOutcome" || got.BadSearch.Code != "invalid":
		t.Errorf("bad search: %+v", got.BadSearch)
	}
}
