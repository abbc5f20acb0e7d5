package fhir

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func withExporter(t *testing.T) (string, func(*Options)) {
	dir := filepath.Join(t.TempDir(), "exports")
	x, err := NewExporter(ExportOptions{Dir: dir})
	must(t, err)
	t.Cleanup(func() { x.Close() })
	return dir, func(o *Options) { o.Exporter = x }
}

// exportCall makes a bulk-data request and returns status, headers and body.
func exportCall(t *testing.T, srv *httptest.Server, method, token, url string, async bool) (int, http.Header, []byte) {
	t.Helper()
	if !strings.HasPrefix(url, "http") {
		url = srv.URL + url
	}
	req, _ := http.NewRequest(method, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/fhir+json")
	if async {
		req.Header.Set("Prefer", "respond-async")
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

type manifest struct {
	TransactionTime     string `json:"transactionTime"`
	Request             string `json:"request"`
	RequiresAccessToken bool   `json:"requiresAccessToken"`
	Output              []struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Count int    `json:"count"`
	} `json:"output"`
}

// runExport kicks off an export, polls it to the end and downloads every
// file: resources by type.
func runExport(t *testing.T, srv *httptest.Server, token, path string) (manifest, map[string][]map[string]any) {
	t.Helper()
	st, hdr, body := exportCall(t, srv, "GET", token, path, true)
	if st != 202 || hdr.Get("Content-Location") == "" {
		t.Fatalf("kick-off %s: %d %s", path, st, body)
	}
	status := hdr.Get("Content-Location")
	var m manifest
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, hdr, body = exportCall(t, srv, "GET", token, status, false)
		if st == 200 {
			must(t, json.Unmarshal(body, &m))
			break
		}
		if st != 202 || hdr.Get("Retry-After") == "" || time.Now().After(deadline) {
			t.Fatalf("status of %s: %d %v %s", path, st, hdr, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := map[string][]map[string]any{}
	for _, o := range m.Output {
		st, hdr, body := exportCall(t, srv, "GET", token, o.URL, false)
		if st != 200 || hdr.Get("Content-Type") != "application/fhir+ndjson" {
			t.Fatalf("file %s: %d %s", o.URL, st, hdr.Get("Content-Type"))
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var r map[string]any
			must(t, json.Unmarshal(sc.Bytes(), &r))
			if r["resourceType"] != o.Type {
				t.Fatalf("%s file holds a %v", o.Type, r["resourceType"])
			}
			out[o.Type] = append(out[o.Type], r)
		}
		if len(out[o.Type]) != o.Count {
			t.Fatalf("%s: manifest says %d, file holds %d", o.Type, o.Count, len(out[o.Type]))
		}
	}
	return m, out
}

func counts(out map[string][]map[string]any) map[string]int {
	c := map[string]int{}
	for k, v := range out {
		c[k] = len(v)
	}
	return c
}

// Bulk Data export: kick-off, polling, NDJSON files for the system, all
// patients and a group (a ward), sealed at rest, each job its owner's.
func TestBulkExport(t *testing.T) {
	dir, with := withExporter(t)
	srv, _ := setup(t, with)

	m, out := runExport(t, srv, "admin", "/fhir/R4/$export")
	want := map[string]int{"Patient": 2, "Device": 2, "DeviceMetric": 8, "Observation": 506}
	if got := counts(out); !equalCounts(got, want) || !m.RequiresAccessToken || !strings.HasSuffix(m.Request, "/fhir/R4/$export") {
		t.Fatalf("system export: %v, want %v (%+v)", got, want, m)
	}
	var sample []any // first and last of each type, for the validator
	for _, rs := range out {
		sample = append(sample, rs[0], rs[len(rs)-1])
	}
	// Group W2 is ward W2: patient p2, its one heart rate, no device.
	_, out = runExport(t, srv, "admin", "/fhir/R4/Group/W2/$export")
	if got := counts(out); !equalCounts(got, map[string]int{"Patient": 1, "Observation": 1}) || out["Patient"][0]["id"] != "p2" {
		t.Fatalf("group export: %v", got)
	}
	// A ward nurse's patient export holds only her ward's patients.
	_, out = runExport(t, srv, "w2", "/fhir/R4/Patient/$export?_type=Patient,Observation")
	if got := counts(out); !equalCounts(got, map[string]int{"Patient": 1, "Observation": 1}) {
		t.Fatalf("scoped patient export: %v", got)
	}
	// _since: observations from 12:00 on (10 heart rates, 10 SpO2).
	_, out = runExport(t, srv, "dr", "/fhir/R4/$export?_type=Observation&_since=2026-11-24T12:00:00Z")
	if got := counts(out); !equalCounts(got, map[string]int{"Observation": 20}) {
		t.Fatalf("_since export: %v", got)
	}
	// A token limited to Observations exports only Observations.
	_, out = runExport(t, srv, "obs-only", "/fhir/R4/$export")
	if got := counts(out); !equalCounts(got, map[string]int{"Observation": 506}) {
		t.Fatalf("user/Observation.read export: %v", got)
	}

	for _, c := range []struct {
		token, path string
		async       bool
		status      int
	}{
		{"admin", "/fhir/R4/$export", false, 400},                                 // no Prefer: respond-async
		{"admin", "/fhir/R4/$export?_type=Encounter", true, 400},                  // not exported
		{"admin", "/fhir/R4/Patient/$export?_type=DeviceMetric", true, 400},       // not in the compartment
		{"admin", "/fhir/R4/$export?_outputFormat=text/csv", true, 400},           // NDJSON only
		{"admin", "/fhir/R4/$export?_since=yesterday", true, 400},                 // not an instant
		{"admin", "/fhir/R4/$export?_typeFilter=Observation%3Fcode=1", true, 400}, // not supported
		{"obs-only", "/fhir/R4/$export?_type=Patient", true, 403},                 // out of scope
		{"launch-p1", "/fhir/R4/$export", true, 403},                              // patient/ scopes open one record
		{"pt1", "/fhir/R4/Patient/$export", true, 403},                            // patients read their own record
		{"w2", "/fhir/R4/Group/W1/$export", true, 404},                            // not her ward
		{"admin", "/fhir/R4/Group/nowhere/$export", true, 404},
		{"", "/fhir/R4/$export", true, 401},
	} {
		if st, _, body := exportCall(t, srv, "GET", c.token, c.path, c.async); st != c.status || !strings.Contains(string(body), "OperationOutcome") {
			t.Errorf("%s as %q: %d %s, want %d", c.path, c.token, st, body, c.status)
		}
	}

	// Jobs are their owners': another user sees no status and no file.
	st, hdr, _ := exportCall(t, srv, "GET", "admin", "/fhir/R4/$export?_type=Patient", true)
	if st != 202 {
		t.Fatalf("kick-off: %d", st)
	}
	status := hdr.Get("Content-Location")
	if st, _, _ := exportCall(t, srv, "GET", "dr", status, false); st != 404 {
		t.Errorf("another user's job status: %d", st)
	}
	// Files at rest are sealed: no patient's name in the export directory.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if st, _, _ := exportCall(t, srv, "GET", "admin", status, false); st == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(path)
			// (quoted as in the JSON: three bare bytes turn up in
			// random ciphertext about once per 16 MB)
			if bytes.Contains(b, []byte(`"Doe"`)) || bytes.Contains(b, []byte("MRN-1")) {
				t.Errorf("%s holds a patient's name or identifier in the clear", path)
			}
		}
		return nil
	})
	// DELETE cancels and removes the job.
	if st, _, _ := exportCall(t, srv, "DELETE", "admin", status, false); st != 202 {
		t.Errorf("cancel: %d", st)
	}
	if st, _, _ := exportCall(t, srv, "GET", "admin", status, false); st != 404 {
		t.Errorf("status after cancel: %d", st)
	}
	_, meta := get(t, srv, "", "/fhir/R4/metadata")
	validate(t, append(sample, meta))
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A sealed file opens only whole, in order and with its key.
func TestSealedFile(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	plain := bytes.Repeat([]byte(`{"resourceType":"Patient","name":[{"family":"Doe"}]}`+"\n"), 5000) // > 3 frames
	var buf bytes.Buffer
	w, err := newSealedWriter(&buf, key)
	must(t, err)
	for i := 0; i < len(plain); i += 1000 {
		w.Write(plain[i:min(i+1000, len(plain))])
	}
	must(t, w.Close())
	sealed := buf.Bytes()
	if bytes.Contains(sealed, []byte("Doe")) {
		t.Fatal("plaintext in the sealed file")
	}
	var got bytes.Buffer
	if err := openSealed(&got, bytes.NewReader(sealed), key); err != nil || !bytes.Equal(got.Bytes(), plain) {
		t.Fatalf("round trip: %v, %d of %d bytes", err, got.Len(), len(plain))
	}
	first := 4 + int(uint32(sealed[0])<<24|uint32(sealed[1])<<16|uint32(sealed[2])<<8|uint32(sealed[3]))
	tampered := bytes.Clone(sealed)
	tampered[100] ^= 1
	for name, c := range map[string]struct {
		b   []byte
		key []byte
	}{
		"truncated after a frame": {sealed[:first], key},
		"truncated mid-frame":     {sealed[:first+10], key},
		"a bit flipped":           {tampered, key},
		"another key":             {sealed, bytes.Repeat([]byte{8}, 32)},
		"frames reordered":        {append(append([]byte{}, sealed[first:2*first]...), append(sealed[:first:first], sealed[2*first:]...)...), key},
	} {
		if err := openSealed(io.Discard, bytes.NewReader(c.b), c.key); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
}
