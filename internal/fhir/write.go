package fhir

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/netlimit"
)

// deviceWrite handles POST Observation (bundle false) and POST of a batch
// Bundle to the base (bundle true), authenticated as a device.
func (h *handler) deviceWrite(bundle bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		dev, err := h.o.AuthenticateDevice(r)
		if err != nil {
			if vigil.ErrorCode(err) == vigil.EUNAUTHORIZED {
				w.Header().Set("WWW-Authenticate", `Basic realm="vigil devices"`)
				writeOutcome(w, http.StatusUnauthorized, "login", vigil.ErrorMessage(err), "")
				return
			}
			h.fail(w, r, err)
			return
		}
		body, err := netlimit.ReadBody(r.Body, r.ContentLength, h.o.MaxBody)
		if err != nil {
			writeOutcome(w, http.StatusBadRequest, "invalid", "cannot read the request body", "")
			return
		}
		if len(body) > h.o.MaxBody {
			writeOutcome(w, http.StatusRequestEntityTooLarge, "too-costly", fmt.Sprintf("body exceeds %d bytes", h.o.MaxBody), "")
			return
		}
		tx := bundle && bundleType(body) == "transaction"
		res := h.o.Ingester.Ingest(r.Context(), vigil.Message{DeviceID: dev, Source: "fhir", Format: Format, Topic: r.URL.Path, Payload: body, Received: h.o.Now().UTC(), Atomic: tx, Shed: true})
		if res.Err != nil && tx && vigil.ErrorReason(res.Err) == "atomic-refused" {
			// A transaction is all or nothing: say which entries failed.
			oo := OperationOutcome{ResourceType: "OperationOutcome"}
			for _, o := range res.Readings {
				if o.Err != nil {
					ve := errOrInternal(o.Err)
					is := Issue{Severity: "error", Code: "processing", Diagnostics: ve.Message}
					if ve.Field != "" {
						is.Expression = []string{ve.Field}
					}
					oo.Issue = append(oo.Issue, is)
				}
			}
			oo.Issue = append(oo.Issue, Issue{Severity: "information", Code: "informational", Diagnostics: vigil.ErrorMessage(res.Err)})
			writeResource(w, http.StatusBadRequest, oo)
			return
		}
		if res.Err != nil {
			h.fail(w, r, res.Err)
			return
		}
		if !bundle {
			if len(res.Readings) != 1 {
				writeOutcome(w, http.StatusBadRequest, "invalid", "POST Observation takes one Observation; send a batch Bundle to the base for more", "")
				return
			}
			if bundleOf(body) {
				writeOutcome(w, http.StatusBadRequest, "invalid", "a Bundle goes to the base URL (POST /fhir/R4), not to /Observation", "")
				return
			}
			o := res.Readings[0]
			if o.Err != nil {
				e := errOrInternal(o.Err)
				writeOutcome(w, http.StatusUnprocessableEntity, "processing", e.Message, e.Field)
				return
			}
			status := http.StatusCreated
			if o.Duplicate {
				status = http.StatusOK
			}
			if loc := h.locate(r.Context(), o.Reading); loc != nil {
				w.Header().Set("Location", baseURL(r)+"/Observation/"+loc.ID)
				writeResource(w, status, ObservationResource(loc))
				return
			}
			writeResource(w, status, OperationOutcome{ResourceType: "OperationOutcome", Issue: []Issue{{Severity: "information", Code: "informational", Diagnostics: "stored"}}})
			return
		}
		out := struct {
			ResourceType string           `json:"resourceType"`
			Type         string           `json:"type"`
			Entry        []bundleResponse `json:"entry"`
		}{ResourceType: "Bundle", Type: "batch-response"}
		if tx {
			out.Type = "transaction-response"
		}
		for _, o := range res.Readings {
			resp := map[string]any{}
			switch {
			case o.Err != nil:
				ve := errOrInternal(o.Err)
				resp["status"] = "422 Unprocessable Entity"
				oo := OperationOutcome{ResourceType: "OperationOutcome", Issue: []Issue{{Severity: "error", Code: "processing", Diagnostics: ve.Message}}}
				if ve.Field != "" {
					oo.Issue[0].Expression = []string{ve.Field}
				}
				resp["outcome"] = oo
			default:
				resp["status"] = "201 Created"
				if o.Duplicate {
					resp["status"] = "200 OK"
				}
				if loc := h.locate(r.Context(), o.Reading); loc != nil {
					resp["location"] = "Observation/" + loc.ID
				}
			}
			out.Entry = append(out.Entry, bundleResponse{Response: resp})
		}
		writeResource(w, http.StatusOK, out)
	}
}

// bundleResponse is a batch-response entry.
type bundleResponse struct {
	Response map[string]any `json:"response"`
}

func bundleType(b []byte) string {
	var head struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(b, &head)
	return head.Type
}

func bundleOf(b []byte) bool {
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	return json.Unmarshal(b, &head) == nil && head.ResourceType == "Bundle"
}

func errOrInternal(err error) *vigil.Error {
	if e, ok := err.(*vigil.Error); ok {
		return e
	}
	return &vigil.Error{Code: vigil.EINTERNAL, Message: err.Error()}
}

// locate finds the stored observation of an accepted reading.
func (h *handler) locate(ctx context.Context, r *vigil.Reading) *vigil.Observation {
	if r == nil || len(r.Values) == 0 {
		return nil
	}
	code := r.Values[0].Code
	if code == vigil.LOINCSystolic || code == vigil.LOINCDiastolic {
		code = vigil.LOINCBPPanel
	}
	obs, err := ReadingObservations(ctx, h.o.Observations, r.PatientID, r.DeviceID, r.Time, code)
	if err != nil || len(obs) == 0 {
		return nil
	}
	return obs[0]
}

// ReadingObservations returns the stored Observations of one reading —
// its patient's values from its device at its time, to the store's
// millisecond — with where they were taken when the store keeps that.
// codes, when given, narrow them.
func ReadingObservations(ctx context.Context, st vigil.ObservationStore, patientID, deviceID string, t time.Time, codes ...string) ([]*vigil.Observation, error) {
	t = t.Truncate(time.Millisecond)
	obs, _, err := st.FindObservations(ctx, vigil.ObservationFilter{PatientID: patientID, DeviceID: deviceID, Codes: codes, From: t, To: t.Add(time.Millisecond), Limit: maxCount})
	if err != nil {
		return nil, err
	}
	if os, ok := st.(originStore); ok {
		if err := os.FillOrigins(ctx, obs); err != nil {
			return nil, err
		}
	}
	return obs, nil
}
