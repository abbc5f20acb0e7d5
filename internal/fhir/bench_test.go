package fhir

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/vigil-iomt/vigil/internal/npmtools"
)

// BenchmarkSearchVsMedplum serves the same search — a patient's 250 heart
// rates, 100 per page, as a FHIR searchset — from Vigil and from a peer
// FHIR server in the same run: Medplum's FhirRouter with its in-memory
// repository (tools/fhirserver), holding the same 250 Observations.
//
//	go test -run - -bench SearchVsMedplum -benchtime 2000x ./internal/fhir
func BenchmarkSearchVsMedplum(b *testing.B) {
	srv, _ := setup(b)
	// The same Observations, as Vigil serves them, into the peer.
	_, all := get2(b, srv.URL+"/fhir/R4/Observation?patient=p1&code=8867-4&_count=1000", "dr")
	peer := medplum(b)
	var entries []map[string]any
	for _, e := range all["entry"].([]any) {
		r := e.(map[string]any)["resource"].(map[string]any)
		delete(r, "id")
		delete(r, "meta")
		entries = append(entries, map[string]any{"resource": r, "request": map[string]string{"method": "POST", "url": "Observation"}})
	}
	body, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "batch", "entry": entries})
	resp, err := http.Post(peer, "application/fhir+json", bytes.NewReader(body))
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("load the peer: %v %v", err, resp)
	}
	resp.Body.Close()
	for _, c := range []struct{ name, url, token string }{
		{"vigil", srv.URL + "/fhir/R4/Observation?patient=p1&code=http://loinc.org|8867-4&_count=100", "dr"},
		{"medplum", peer + "/Observation?subject=Patient/p1&code=http://loinc.org|8867-4&_count=100", ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			if n := len(mustEntries(b, c.url, c.token)); n != 100 {
				b.Fatalf("%s: %d entries, want 100", c.name, n)
			}
			b.ResetTimer()
			for range b.N {
				get2(b, c.url, c.token)
			}
		})
	}
}

func mustEntries(b *testing.B, url, token string) []any {
	_, m := get2(b, url, token)
	es, _ := m["entry"].([]any)
	return es
}

func get2(b testing.TB, url, token string) (int, map[string]any) {
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		b.Fatalf("%s: %v", url, err)
	}
	return resp.StatusCode, m
}

// medplum starts tools/fhirserver and returns its base URL.
func medplum(b testing.TB) string { return npmtools.FHIRServer(b) }
