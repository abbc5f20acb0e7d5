package fhir

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Everything writes, as one FHIR R4 Bundle of type collection, everything
// Vigil holds about a patient — for a subject access request (GDPR
// article 15, HIPAA's right of access): the Patient, the Devices that
// measured them, every Observation, every alert as a DetectedIssue, and
// device events and clinician reviews as Basic resources. It streams
// (observations page by page) and returns the number of entries.
func Everything(ctx context.Context, st vigil.Store, patientID string, now time.Time, w io.Writer) (int, error) {
	p, err := st.FindPatientByID(ctx, patientID)
	if err != nil {
		return 0, err
	}
	n := 0
	if _, err := fmt.Fprintf(w, `{"resourceType":"Bundle","type":"collection","timestamp":%q,"entry":[`, now.UTC().Format(time.RFC3339Nano)); err != nil {
		return 0, err
	}
	entry := func(typ, id string, res any) error {
		b, err := json.Marshal(BundleEntry{FullURL: "urn:vigil:" + typ + ":" + id, Resource: res})
		if err != nil {
			return err
		}
		if n > 0 {
			if _, err := io.WriteString(w, ","); err != nil {
				return err
			}
		}
		n++
		_, err = w.Write(b)
		return err
	}
	if err := entry("Patient", p.ID, PatientResource(p)); err != nil {
		return n, err
	}
	as, err := st.PatientAssignments(ctx, patientID)
	if err != nil {
		return n, err
	}
	seen := map[string]bool{}
	for _, a := range as {
		if seen[a.DeviceID] {
			continue
		}
		seen[a.DeviceID] = true
		d, err := st.FindDeviceByID(ctx, a.DeviceID)
		if vigil.ErrorCode(err) == vigil.ENOTFOUND {
			continue
		}
		if err != nil {
			return n, err
		}
		if err := entry("Device", d.ID, DeviceResource(d, patientID)); err != nil {
			return n, err
		}
	}
	for cursor := ""; ; {
		obs, next, err := st.FindObservations(ctx, vigil.ObservationFilter{PatientID: patientID, Limit: 1000, Cursor: cursor})
		if err != nil {
			return n, err
		}
		for _, o := range obs {
			if err := entry("Observation", o.ID, ObservationResource(o)); err != nil {
				return n, err
			}
		}
		if cursor = next; cursor == "" {
			break
		}
	}
	alerts, err := st.FindAlerts(ctx, vigil.AlertFilter{PatientID: patientID, Limit: 1 << 30})
	if err != nil {
		return n, err
	}
	for _, a := range alerts {
		if err := entry("DetectedIssue", a.ID, AlertResource(a)); err != nil {
			return n, err
		}
	}
	ref := &Reference{Reference: "Patient/" + patientID}
	events, err := st.FindEvents(ctx, patientID, time.Time{}, now.Add(24*time.Hour))
	if err != nil {
		return n, err
	}
	for _, e := range events {
		if err := entry("Basic", "event-"+e.DeviceID+"-"+e.ID, basic("device-event", e.Type+" (device "+e.DeviceID+")", ref, e.Time, "")); err != nil {
			return n, err
		}
	}
	reviews, err := st.FindReviews(ctx, patientID, time.Time{}, now.Add(24*time.Hour))
	if err != nil {
		return n, err
	}
	for _, r := range reviews {
		if err := entry("Basic", "review-"+r.ID, basic("clinician-review", r.Note, ref, r.At, "Practitioner/"+r.By)); err != nil {
			return n, err
		}
	}
	_, err = io.WriteString(w, "]}")
	return n, err
}

// basic is a FHIR Basic resource for a record FHIR has no resource for.
func basic(code, text string, subject *Reference, at time.Time, author string) map[string]any {
	b := map[string]any{
		"resourceType": "Basic",
		"code":         CodeableConcept{Coding: []Coding{{System: "https://vigil-iomt.github.io/fhir/CodeSystem/record-kind", Code: code}}, Text: text},
		"subject":      subject,
		"created":      at.UTC().Format("2006-01-02"),
	}
	if author != "" {
		b["author"] = &Reference{Reference: author}
	}
	return b
}
