package httpapi

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/fhir"
)

// subjectExport answers a subject access request: everything held about
// the patient as one FHIR Bundle (fhir.Everything), audited with the
// request's reference.
func (s *Server) subjectExport(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	id := r.PathValue("id")
	if _, err := s.o.Store.FindPatientByID(r.Context(), id); err != nil {
		return err
	}
	ref := strings.TrimSpace(r.URL.Query().Get("reference"))
	w.Header().Set("Content-Type", "application/fhir+json")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="subject-access-%s.json"`, id))
	w.Header().Set("Cache-Control", "no-store")
	n, err := fhir.Everything(r.Context(), s.o.Store, id, s.o.Now(), w)
	auditDetail(r, fmt.Sprintf("subject access export: %d resources; request %s", n, cmp.Or(ref, "(no reference given)")))
	if err != nil {
		s.log.Error("subject access export failed midway", "err", err)
	}
	return nil
}

// EraseRequest is the body of POST /api/v1/patients/{id}/erase.
type EraseRequest struct {
	// Confirm must repeat the patient id.
	Confirm string `json:"confirm"`
	// Reference is the lawful request's reference (e.g. the data
	// protection officer's case number); it goes into the audit log, so
	// no names.
	Reference string `json:"reference"`
}

// erasePatient erases a patient on a lawful request. The audit log keeps
// a tombstone: who, when, the request's reference and the counts — no
// patient data.
func (s *Server) erasePatient(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if s.o.ErasePatient == nil {
		return vigil.Errorf(vigil.EUNAVAILABLE, "this node cannot erase patients")
	}
	id := r.PathValue("id")
	var req EraseRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	if req.Confirm != id {
		return vigil.FieldErrorf("confirm", "required", "erasure cannot be undone: repeat the patient id in confirm")
	}
	if strings.TrimSpace(req.Reference) == "" {
		return vigil.FieldErrorf("reference", "required", "give the request's reference (e.g. the data protection officer's case number) for the audit log")
	}
	rep, err := s.o.ErasePatient(r.Context(), id)
	if err != nil {
		return err
	}
	auditDetail(r, fmt.Sprintf("erasure on request %s: %+v", req.Reference, rep))
	writeJSON(w, http.StatusOK, map[string]any{"patient": id, "erased": rep})
	return nil
}

// SubjectExport downloads everything held about a patient (GET
// /api/v1/patients/{id}/export) into w.
func (c *Client) SubjectExport(ctx context.Context, id, reference string, w io.Writer) error {
	return c.do(ctx, "GET", "/api/v1/patients/"+id+"/export?reference="+url.QueryEscape(reference), nil, w)
}

// ErasePatient erases a patient (POST /api/v1/patients/{id}/erase).
func (c *Client) ErasePatient(ctx context.Context, id, reference string) (map[string]any, error) {
	var out map[string]any
	err := c.do(ctx, "POST", "/api/v1/patients/"+id+"/erase", EraseRequest{Confirm: id, Reference: reference}, &out)
	return out, err
}
