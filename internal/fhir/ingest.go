package fhir

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/ingest"
)

// Format is the vigil.Message format of FHIR payloads: one Observation or
// a batch Bundle of Observation entries.
const Format = "fhir"

type inQuantity struct {
	Value  *float64 `json:"value"`
	Unit   string   `json:"unit"`
	System string   `json:"system"`
	Code   string   `json:"code"`
}

type inConcept struct {
	Coding []Coding `json:"coding"`
}

type inObservation struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Identifier   []struct {
		System string `json:"system"`
		Value  string `json:"value"`
	} `json:"identifier"`
	Status            string                       `json:"status"`
	Code              inConcept                    `json:"code"`
	Subject           *Reference                   `json:"subject"`
	EffectiveDateTime string                       `json:"effectiveDateTime"`
	EffectiveInstant  string                       `json:"effectiveInstant"`
	EffectivePeriod   *struct{ Start, End string } `json:"effectivePeriod"`
	ValueQuantity     *inQuantity                  `json:"valueQuantity"`
	Component         []struct {
		Code          inConcept   `json:"code"`
		ValueQuantity *inQuantity `json:"valueQuantity"`
	} `json:"component"`
}

type inBundle struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Entry        []struct {
		Resource json.RawMessage `json:"resource"`
		Request  *struct {
			Method string `json:"method"`
			URL    string `json:"url"`
		} `json:"request"`
	} `json:"entry"`
}

// DecodePayload implements ingest.Decoder for FHIR R4 JSON: an Observation
// or a Bundle of type batch or transaction whose entries POST Observations
// (the caller marks a transaction's message Atomic). Each
// Observation is one reading; its id for idempotency is its first
// identifier (system|value), else its id, else a hash of its content.
// The patient is the device's assignment; a subject naming another
// patient is refused (resolved by the caller, which knows the patient).
func DecodePayload(payload []byte, maxReadings int) ([]ingest.Raw, error) {
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	if err := json.Unmarshal(payload, &head); err != nil {
		return nil, vigil.FieldErrorf("", "malformed", "malformed JSON: %v", err)
	}
	switch head.ResourceType {
	case "Observation":
		return []ingest.Raw{decodeObservation(payload, "Observation.")}, nil
	case "Bundle":
		var b inBundle
		if err := json.Unmarshal(payload, &b); err != nil {
			return nil, vigil.FieldErrorf("Bundle", "malformed", "malformed Bundle: %v", err)
		}
		if b.Type != "batch" && b.Type != "transaction" {
			return nil, vigil.FieldErrorf("Bundle.type", "unsupported", "Bundle type %q: Vigil takes batch (each entry on its own) and transaction (all or nothing) Bundles of Observations", b.Type)
		}
		if len(b.Entry) == 0 || len(b.Entry) > maxReadings {
			return nil, vigil.FieldErrorf("Bundle.entry", "too-many", "send 1 to %d entries", maxReadings)
		}
		out := make([]ingest.Raw, len(b.Entry))
		for i, e := range b.Entry {
			prefix := fmt.Sprintf("Bundle.entry[%d].resource.", i)
			if e.Request != nil && (e.Request.Method != "POST" || strings.TrimPrefix(e.Request.URL, "/") != "Observation") {
				out[i] = ingest.Raw{Field: prefix, Err: vigil.FieldErrorf(fmt.Sprintf("Bundle.entry[%d].request", i), "unsupported", "only POST Observation entries are accepted")}
				continue
			}
			out[i] = decodeObservation(e.Resource, prefix)
		}
		return out, nil
	}
	return nil, vigil.FieldErrorf("resourceType", "unsupported", "resourceType %q: send an Observation or a batch Bundle of Observations", head.ResourceType)
}

func decodeObservation(raw json.RawMessage, prefix string) ingest.Raw {
	r := ingest.Raw{Field: prefix}
	fail := func(field, reason, format string, args ...any) ingest.Raw {
		r.Err = vigil.FieldErrorf(prefix+field, reason, format, args...)
		return r
	}
	var o inObservation
	if err := json.Unmarshal(raw, &o); err != nil {
		return fail("", "malformed", "malformed Observation: %v", err)
	}
	if o.ResourceType != "Observation" {
		return fail("resourceType", "unsupported", "expected an Observation, got %q", o.ResourceType)
	}
	switch {
	case len(o.Identifier) > 0 && o.Identifier[0].Value != "":
		r.ID = o.Identifier[0].Value
		if o.Identifier[0].System != "" {
			r.ID = o.Identifier[0].System + "|" + r.ID
		}
	case o.ID != "":
		r.ID = o.ID
	default:
		h := sha256.Sum256(bytes.TrimSpace(raw))
		r.ID = "sha256:" + hex.EncodeToString(h[:20])
	}
	if len(r.ID) > 64 {
		h := sha256.Sum256([]byte(r.ID))
		r.ID = "sha256:" + hex.EncodeToString(h[:20])
	}
	switch o.Status {
	case "final", "amended", "corrected", "preliminary":
	case "":
		return fail("status", "required", "Observation.status is required")
	default:
		return fail("status", "result-status", "status %q is not stored", o.Status)
	}
	if o.Subject != nil && o.Subject.Reference != "" && !strings.HasPrefix(o.Subject.Reference, "Patient/") {
		return fail("subject", "invalid", "subject must reference a Patient")
	}
	if o.Subject != nil {
		r.PatientID = strings.TrimPrefix(o.Subject.Reference, "Patient/")
	}
	ts := o.EffectiveDateTime
	if ts == "" {
		ts = o.EffectiveInstant
	}
	if ts == "" && o.EffectivePeriod != nil {
		ts = o.EffectivePeriod.End
		if ts == "" {
			ts = o.EffectivePeriod.Start
		}
	}
	if ts == "" {
		return fail("effective[x]", "required", "an effectiveDateTime, effectiveInstant or effectivePeriod is required")
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return fail("effective[x]", "invalid", "%q is not a dateTime with a time zone", ts)
	}
	r.Time = t
	add := func(field string, c inConcept, q *inQuantity) error {
		sys, code := pickCoding(c)
		if code == "" {
			return vigil.FieldErrorf(prefix+field+".code", "unknown-code", "no LOINC or IEEE 11073 coding")
		}
		if q == nil || q.Value == nil {
			return vigil.FieldErrorf(prefix+field+".valueQuantity", "required", "a valueQuantity with a value is required")
		}
		unit := q.Code
		if unit == "" {
			unit = q.Unit
		}
		r.Values = append(r.Values, ingest.RawValue{System: sys, Code: code, Unit: unit, Value: *q.Value, Field: prefix + field})
		return nil
	}
	if len(o.Component) > 0 {
		for i, c := range o.Component {
			if err := add(fmt.Sprintf("component[%d]", i), c.Code, c.ValueQuantity); err != nil {
				r.Err = err
				return r
			}
		}
		return r
	}
	if err := add("", o.Code, o.ValueQuantity); err != nil {
		r.Err = err
	}
	return r
}

// pickCoding prefers LOINC, then MDC.
func pickCoding(c inConcept) (string, string) {
	for _, want := range []string{vigil.SystemLOINC, vigil.SystemMDC} {
		for _, cd := range c.Coding {
			if cd.System == want && cd.Code != "" {
				return want, cd.Code
			}
		}
	}
	return "", ""
}
