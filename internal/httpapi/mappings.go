package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/mapping"
	"github.com/vigil-iomt/vigil/internal/medtech"
)

// MappingRequest saves a template pair and its bindings.
type MappingRequest struct {
	DeviceTemplate json.RawMessage `json:"deviceTemplate"`
	FhirTemplate   json.RawMessage `json:"fhirTemplate"`
	Devices        []string        `json:"devices"`
	Kinds          []string        `json:"kinds"`
}

// MappingTestRequest is a dry run.
type MappingTestRequest struct {
	DeviceTemplate json.RawMessage `json:"deviceTemplate"`
	FhirTemplate   json.RawMessage `json:"fhirTemplate"`
	Message        json.RawMessage `json:"message"`
}

// templateError turns a template problem into a field error.
func templateError(which string, err error) error {
	e, ok := err.(*medtech.Error)
	if !ok {
		return vigil.FieldErrorf(which, "invalid", "%v", err)
	}
	field := which
	if e.Path != "" {
		field += "." + e.Path
	}
	return vigil.FieldErrorf(field, "invalid-template", "%s", e.Error())
}

func (s *Server) putMapping(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	var req MappingRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	if _, err := medtech.ParseDeviceTemplate(req.DeviceTemplate); err != nil {
		return templateError("deviceTemplate", err)
	}
	if _, err := medtech.ParseFhirTemplate(req.FhirTemplate); err != nil {
		return templateError("fhirTemplate", err)
	}
	m := &vigil.Mapping{ID: r.PathValue("id"), DeviceTemplate: req.DeviceTemplate, FhirTemplate: req.FhirTemplate, Devices: req.Devices, Kinds: req.Kinds, SavedBy: p.UserID}
	if err := s.o.Store.SaveMapping(r.Context(), m); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (s *Server) listMappings(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	ms, err := s.o.Store.FindMappings(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(ms))
	return nil
}

func (s *Server) getMapping(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	v, err := intParam(r.URL.Query().Get("version"), 0)
	if err != nil {
		return err
	}
	m, err := s.o.Store.FindMapping(r.Context(), r.PathValue("id"), v)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (s *Server) testMapping(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	var req MappingTestRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	res, err := medtech.Test(req.DeviceTemplate, req.FhirTemplate, req.Message, mapping.DefaultTable(), "")
	if err != nil {
		return vigil.FieldErrorf("", "invalid-template", "%v", err)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
