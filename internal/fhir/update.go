package fhir

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/netlimit"
	"github.com/vigil-iomt/vigil/internal/smart"
)

// Version-aware updates (PUT) of Patient and Device, for admins. An update
// of an existing resource must name the version it read in If-Match
// (W/"3"); a stale or missing version is refused with 412, so two writers
// never overwrite each other unseen. A PUT of an unknown Patient creates it
// (201; the id is the client's, as EHR patient feeds need); devices are
// registered with their credentials (vigil device add), never by PUT.
//
// Vigil keeps the elements it stores (Patient: the first identifier,
// the official or first name, gender, birthDate; Device: identifier,
// manufacturer, serialNumber, modelNumber, version, type.text) and
// answers with the stored resource, so the client sees what was kept.

// patientIn and deviceIn are the parts of incoming resources Vigil reads.
type patientIn struct {
	ResourceType string       `json:"resourceType"`
	ID           string       `json:"id"`
	Identifier   []Identifier `json:"identifier"`
	Active       *bool        `json:"active"`
	Name         []HumanName  `json:"name"`
	Gender       string       `json:"gender"`
	BirthDate    string       `json:"birthDate"`
}

type deviceIn struct {
	ResourceType string           `json:"resourceType"`
	ID           string           `json:"id"`
	Identifier   []Identifier     `json:"identifier"`
	Status       string           `json:"status"`
	Manufacturer string           `json:"manufacturer"`
	SerialNumber string           `json:"serialNumber"`
	ModelNumber  string           `json:"modelNumber"`
	Version      []DeviceVersion  `json:"version"`
	Type         *CodeableConcept `json:"type"`
	Patient      *Reference       `json:"patient"`
}

// readBody reads a FHIR JSON request body of the given resource type for
// the id in the URL.
func (h *handler) readBody(r *http.Request, typ string, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := mime.ParseMediaType(ct)
		if mt != "application/fhir+json" && mt != "application/json" {
			return statusError{http.StatusUnsupportedMediaType, "not-supported", fmt.Sprintf("send the %s as application/fhir+json (Vigil speaks JSON only), not %s", typ, mt)}
		}
	}
	body, err := netlimit.ReadBody(r.Body, r.ContentLength, h.o.MaxBody)
	if err != nil {
		return vigil.Errorf(vigil.EINVALID, "cannot read the request body")
	}
	if len(body) > h.o.MaxBody {
		return statusError{http.StatusRequestEntityTooLarge, "too-costly", fmt.Sprintf("the body exceeds %d bytes", h.o.MaxBody)}
	}
	var head struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return vigil.Errorf(vigil.EINVALID, "the body is not a JSON resource: %v", err)
	}
	if head.ResourceType != typ {
		return vigil.FieldErrorf("resourceType", "invalid", "this URL takes a %s, not %q", typ, head.ResourceType)
	}
	if head.ID != r.PathValue("id") {
		return vigil.FieldErrorf(typ+".id", "invalid", "the resource's id %q must equal the id in the URL (%s)", head.ID, r.PathValue("id"))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return vigil.Errorf(vigil.EINVALID, "the %s does not fit FHIR R4: %v", typ, err)
	}
	return nil
}

// ifMatch returns the version named by If-Match (0: none given).
func ifMatch(r *http.Request) (int, error) {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.Trim(strings.TrimPrefix(v, "W/"), `"`))
	if err != nil || n < 1 {
		return 0, vigil.Errorf(vigil.EINVALID, "If-Match %q is not a version: send the ETag of your last read, e.g. W/\"3\"", v)
	}
	return n, nil
}

// statusError is an error whose HTTP status has no Vigil error code: a
// failed If-Match (412), a body too large (413) or of the wrong media
// type (415).
type statusError struct {
	status int
	code   string // OperationOutcome issue code
	msg    string
}

func (e statusError) Error() string { return e.msg }

func errPrecondition(msg string) error {
	return statusError{http.StatusPreconditionFailed, "conflict", msg}
}

func preconditionFailed(typ, id string, have, want int) error {
	if want == 0 {
		return errPrecondition(fmt.Sprintf("%s/%s exists (version %d): Vigil needs version-aware updates — read it and send If-Match: W/\"%d\" with your change", typ, id, have, have))
	}
	return errPrecondition(fmt.Sprintf("%s/%s is at version %d, not %d: someone changed it since you read it; read it again, merge and retry", typ, id, have, want))
}

func adminOnly(p *vigil.Principal, typ string) error {
	if p.Role != vigil.RoleAdmin {
		return vigil.Errorf(vigil.EFORBIDDEN, "only an admin may change a %s", typ)
	}
	return nil
}

func (h *handler) updatePatient(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	if err := adminOnly(p, "Patient"); err != nil {
		return err
	}
	var in patientIn
	if err := h.readBody(r, "Patient", &in); err != nil {
		return err
	}
	want, err := ifMatch(r)
	if err != nil {
		return err
	}
	if in.Active != nil && !*in.Active {
		return vigil.FieldErrorf("Patient.active", "invalid", "Vigil does not keep inactive patients; unassign the patient's devices instead (vigil device assign ID --patient '')")
	}
	id := r.PathValue("id")
	pt, err := h.o.Patients.FindPatientByID(r.Context(), id)
	created := vigil.ErrorCode(err) == vigil.ENOTFOUND
	switch {
	case created && want != 0:
		return vigil.Errorf(vigil.ENOTFOUND, "Patient/%s does not exist, so If-Match cannot match; send the PUT without If-Match to create it", id)
	case created && len(p.Scopes) > 0 && smart.Grant(p.Scopes, "Patient", smart.Create) == "":
		return vigil.Errorf(vigil.EFORBIDDEN, "Patient/%s does not exist and this token's scopes do not allow creating patients (user/Patient.write or user/Patient.c)", id)
	case created:
		pt = &vigil.Patient{ID: id}
	case err != nil:
		return err
	case want != pt.Version:
		return preconditionFailed("Patient", id, pt.Version, want)
	}
	pt.Identifier, pt.Family, pt.Given, pt.Sex, pt.BirthDate = "", "", "", in.Gender, in.BirthDate
	if len(in.Identifier) > 0 {
		pt.Identifier = in.Identifier[0].Value
		for _, i := range in.Identifier {
			if i.System == SystemIdentifier {
				pt.Identifier = i.Value
			}
		}
	}
	if len(in.Name) > 0 {
		n := in.Name[0]
		for _, m := range in.Name {
			if m.Use == "official" {
				n = m
				break
			}
		}
		pt.Family = n.Family
		if len(n.Given) > 0 {
			pt.Given = n.Given[0]
		}
	}
	if err := pt.Validate(h.o.Now()); err != nil {
		return fhirField(err, "Patient", map[string]string{"sex": "gender"})
	}
	if created {
		if !vigil.ValidID(id) {
			return vigil.FieldErrorf("Patient.id", "invalid", "patient id %q: use letters, digits and '-', up to 48 characters", id)
		}
		err = h.o.Patients.CreatePatient(r.Context(), pt)
	} else {
		err = h.o.Patients.UpdatePatient(r.Context(), pt, want)
	}
	if vigil.ErrorCode(err) == vigil.ECONFLICT && !created {
		cur, ferr := h.o.Patients.FindPatientByID(r.Context(), id)
		if ferr == nil && cur.Version != want {
			return preconditionFailed("Patient", id, cur.Version, want) // changed between our read and write
		}
	}
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", baseURL(r)+"/Patient/"+id+"/_history/1")
	}
	w.Header().Set("ETag", `W/"`+strconv.Itoa(pt.Version)+`"`)
	writeResource(w, status, PatientResource(pt))
	return nil
}

func (h *handler) updateDevice(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	if err := adminOnly(p, "Device"); err != nil {
		return err
	}
	var in deviceIn
	if err := h.readBody(r, "Device", &in); err != nil {
		return err
	}
	want, err := ifMatch(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	d, err := h.o.Devices.FindDeviceByID(r.Context(), id)
	if vigil.ErrorCode(err) == vigil.ENOTFOUND {
		return vigil.Errorf(vigil.ENOTFOUND, "Device/%s is not registered; register devices with their credentials (vigil device add %s --kind KIND)", id, id)
	} else if err != nil {
		return err
	}
	if want != d.Version {
		return preconditionFailed("Device", id, d.Version, want)
	}
	switch in.Status {
	case "", "active":
	default:
		return vigil.FieldErrorf("Device.status", "invalid", "Vigil's devices are active until revoked; revoke a device with vigil device revoke %s (it is disconnected at once)", id)
	}
	pid, err := h.currentPatient(r, id)
	if err != nil {
		return err
	}
	if ref := ""; in.Patient != nil || pid != "" {
		if in.Patient != nil {
			ref = strings.TrimPrefix(in.Patient.Reference, "Patient/")
		}
		if ref != pid {
			return vigil.FieldErrorf("Device.patient", "invalid", "assignments change with vigil device assign %s --patient ID (they keep their history); send the current one (%q) or leave the device's patient as it is", id, pid)
		}
	}
	d.Serial, d.Manufacturer, d.Model, d.Firmware = in.SerialNumber, in.Manufacturer, in.ModelNumber, ""
	for _, i := range in.Identifier {
		if i.System == SystemSerial && d.Serial == "" {
			d.Serial = i.Value
		}
	}
	for _, v := range in.Version {
		d.Firmware = v.Value
	}
	if in.Type != nil && in.Type.Text != "" && in.Type.Text != d.Kind {
		return vigil.FieldErrorf("Device.type", "invalid", "a device's kind (%s) is fixed at registration: its templates and rules depend on it", d.Kind)
	}
	if err := h.o.Devices.UpdateDevice(r.Context(), d, want); err != nil {
		if vigil.ErrorCode(err) == vigil.ECONFLICT {
			if cur, ferr := h.o.Devices.FindDeviceByID(r.Context(), id); ferr == nil {
				return preconditionFailed("Device", id, cur.Version, want)
			}
		}
		return err
	}
	w.Header().Set("ETag", `W/"`+strconv.Itoa(d.Version)+`"`)
	writeResource(w, http.StatusOK, DeviceResource(d, pid))
	return nil
}

// fhirField renames a Vigil field in an error to its FHIR path.
func fhirField(err error, typ string, names map[string]string) error {
	if e, ok := err.(*vigil.Error); ok && e.Field != "" {
		f := e.Field
		if n, ok := names[f]; ok {
			f = n
		}
		c := *e
		c.Field = typ + "." + f
		return &c
	}
	return err
}
