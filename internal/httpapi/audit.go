package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/audit"
)

// auditEntries serves the audit log, filtered and paged, as JSON or (with
// format=fhir) as a Bundle of FHIR R4 AuditEvents.
func (s *Server) auditEntries(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if s.o.AuditFind == nil {
		return vigil.Errorf(vigil.ENOTFOUND, "this server keeps no audit log")
	}
	v := r.URL.Query()
	q := audit.Query{Actor: v.Get("actor"), Patient: v.Get("patient"), Outcome: v.Get("outcome")}
	for _, f := range []struct {
		name string
		t    *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		if x := v.Get(f.name); x != "" {
			t, err := time.Parse(time.RFC3339, x)
			if err != nil {
				return vigil.FieldErrorf(f.name, "invalid", "%s is an RFC 3339 time, e.g. 2026-12-01T00:00:00Z", f.name)
			}
			*f.t = t
		}
	}
	switch q.Outcome {
	case "", audit.Success, audit.Denied, audit.Failure:
	default:
		return vigil.FieldErrorf("outcome", "invalid", "outcome is success, denied or failure")
	}
	for _, f := range []struct {
		name string
		set  func(uint64)
	}{{"after", func(n uint64) { q.After = n }}, {"limit", func(n uint64) { q.Limit = int(min(n, 1000)) }}} {
		if x := v.Get(f.name); x != "" {
			n, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return vigil.FieldErrorf(f.name, "invalid", "%s is a whole number", f.name)
			}
			f.set(n)
		}
	}
	format := v.Get("format")
	if format != "" && format != "json" && format != "fhir" {
		return vigil.FieldErrorf("format", "invalid", "format is json (default) or fhir (a Bundle of AuditEvent)")
	}
	page, err := s.o.AuditFind(r.Context(), q)
	if err != nil {
		return err
	}
	if format != "fhir" {
		writeJSON(w, http.StatusOK, page)
		return nil
	}
	entries := make([]any, 0, len(page.Entries))
	for i := range page.Entries {
		ev := page.Entries[i].AuditEvent()
		entries = append(entries, map[string]any{"fullUrl": "urn:vigil:audit:" + strconv.FormatUint(page.Entries[i].Index, 10), "resource": ev})
	}
	b := map[string]any{"resourceType": "Bundle", "type": "collection", "timestamp": s.o.Now().UTC().Format(time.RFC3339), "entry": entries}
	if page.Next > 0 {
		next := *r.URL
		nv := next.Query()
		nv.Set("after", strconv.FormatUint(page.Next, 10))
		next.RawQuery = nv.Encode()
		b["link"] = []any{map[string]any{"relation": "next", "url": next.RequestURI()}}
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	return json.NewEncoder(w).Encode(b)
}
