package fhir

import (
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/mapping"
)

// FHIR R4 JSON shapes Vigil emits. Only the elements Vigil fills are
// declared.

type Meta struct {
	VersionID   string   `json:"versionId,omitempty"`
	LastUpdated string   `json:"lastUpdated,omitempty"`
	Profile     []string `json:"profile,omitempty"`
}

type Coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code,omitempty"`
	Display string `json:"display,omitempty"`
}

type CodeableConcept struct {
	Coding []Coding `json:"coding,omitempty"`
	Text   string   `json:"text,omitempty"`
}

type Reference struct {
	Reference string `json:"reference"`
}

type Quantity struct {
	Value  float64 `json:"value"`
	Unit   string  `json:"unit,omitempty"`
	System string  `json:"system,omitempty"`
	Code   string  `json:"code,omitempty"`
}

// Period is a FHIR Period.
type Period struct {
	Start string `json:"start,omitempty"`
	End   string `json:"end,omitempty"`
}

// SampledData is a FHIR SampledData: one dimension, values every Period
// milliseconds from the effective period's start, "E" where none.
type SampledData struct {
	Origin     Quantity `json:"origin"`
	Period     float64  `json:"period"`
	Dimensions int      `json:"dimensions"`
	Data       string   `json:"data,omitempty"`
}

type Identifier struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value"`
}

type HumanName struct {
	Use    string   `json:"use,omitempty"`
	Family string   `json:"family,omitempty"`
	Given  []string `json:"given,omitempty"`
}

type Component struct {
	Code          CodeableConcept `json:"code"`
	ValueQuantity *Quantity       `json:"valueQuantity,omitempty"`
}

type Observation struct {
	ResourceType      string            `json:"resourceType"`
	ID                string            `json:"id"`
	Meta              *Meta             `json:"meta,omitempty"`
	Status            string            `json:"status"`
	Category          []CodeableConcept `json:"category,omitempty"`
	Code              CodeableConcept   `json:"code"`
	Subject           Reference         `json:"subject"`
	EffectiveDateTime string            `json:"effectiveDateTime,omitempty"`
	EffectivePeriod   *Period           `json:"effectivePeriod,omitempty"`
	Issued            string            `json:"issued,omitempty"`
	ValueQuantity     *Quantity         `json:"valueQuantity,omitempty"`
	ValueSampledData  *SampledData      `json:"valueSampledData,omitempty"`
	ValueString       string            `json:"valueString,omitempty"`
	ValueConcept      *CodeableConcept  `json:"valueCodeableConcept,omitempty"`
	Device            *Reference        `json:"device,omitempty"`
	Component         []Component       `json:"component,omitempty"`
	Extension         []Extension       `json:"extension,omitempty"`
}

// Extension is a FHIR extension with a string value.
type Extension struct {
	URL         string `json:"url"`
	ValueString string `json:"valueString"`
}

// Extensions Vigil adds to Observations from HL7 v2 gateways: where the
// reading was taken (PV1-3), the equipment (OBX-18) and the IEEE 11073
// containment path (OBX-4).
const (
	ExtLocation    = "https://vigil-iomt.github.io/fhir/StructureDefinition/hl7v2-assigned-location"
	ExtEquipment   = "https://vigil-iomt.github.io/fhir/StructureDefinition/hl7v2-equipment"
	ExtContainment = "https://vigil-iomt.github.io/fhir/StructureDefinition/mdc-containment"
)

type Patient struct {
	ResourceType string       `json:"resourceType"`
	ID           string       `json:"id"`
	Meta         *Meta        `json:"meta,omitempty"`
	Identifier   []Identifier `json:"identifier,omitempty"`
	Active       bool         `json:"active"`
	Name         []HumanName  `json:"name,omitempty"`
	Gender       string       `json:"gender,omitempty"`
	BirthDate    string       `json:"birthDate,omitempty"`
}

type Device struct {
	ResourceType string           `json:"resourceType"`
	ID           string           `json:"id"`
	Meta         *Meta            `json:"meta,omitempty"`
	Identifier   []Identifier     `json:"identifier,omitempty"`
	Status       string           `json:"status"`
	Manufacturer string           `json:"manufacturer,omitempty"`
	SerialNumber string           `json:"serialNumber,omitempty"`
	ModelNumber  string           `json:"modelNumber,omitempty"`
	Type         *CodeableConcept `json:"type,omitempty"`
	Version      []DeviceVersion  `json:"version,omitempty"`
	Patient      *Reference       `json:"patient,omitempty"`
}

// DeviceVersion is a Device's version; Vigil keeps the firmware's.
type DeviceVersion struct {
	Type  *CodeableConcept `json:"type,omitempty"`
	Value string           `json:"value"`
}

type BundleLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

type BundleEntry struct {
	FullURL  string       `json:"fullUrl"`
	Resource any          `json:"resource"`
	Search   *EntrySearch `json:"search,omitempty"`
}

type EntrySearch struct {
	Mode string `json:"mode"`
}

type Bundle struct {
	ResourceType string        `json:"resourceType"`
	Type         string        `json:"type"`
	Total        *int          `json:"total,omitempty"`
	Link         []BundleLink  `json:"link,omitempty"`
	Entry        []BundleEntry `json:"entry,omitempty"`
}

type OperationOutcome struct {
	ResourceType string  `json:"resourceType"`
	Issue        []Issue `json:"issue"`
}

type Issue struct {
	Severity    string   `json:"severity"`
	Code        string   `json:"code"`
	Diagnostics string   `json:"diagnostics,omitempty"`
	Expression  []string `json:"expression,omitempty"`
}

// Code systems and profiles.
const (
	SystemObsCategory = "http://terminology.hl7.org/CodeSystem/observation-category"
	// SystemIdentifier is the identifier system of patients' hospital
	// identifiers (MRN) as registered in Vigil.
	SystemIdentifier = "urn:vigil:patient-identifier"
	// SystemSerial is the identifier system of device serial numbers.
	SystemSerial = "urn:vigil:device-serial"
	profileBase  = "http://hl7.org/fhir/StructureDefinition/"
)

// codeInfo is how Vigil presents a LOINC code in FHIR.
type codeInfo struct {
	display  string
	unit     string // human-readable unit
	profile  string // vital-signs profile name, "" for none
	category string // observation category code
}

var codes = map[string]codeInfo{
	vigil.LOINCHeartRate:   {"Heart rate", "beats/minute", "heartrate", "vital-signs"},
	vigil.LOINCSpO2:        {"Oxygen saturation in Arterial blood by Pulse oximetry", "%", "oxygensat", "vital-signs"},
	vigil.LOINCRespRate:    {"Respiratory rate", "breaths/minute", "resprate", "vital-signs"},
	vigil.LOINCBodyTemp:    {"Body temperature", "°C", "bodytemp", "vital-signs"},
	vigil.LOINCBPPanel:     {"Blood pressure panel with all children optional", "", "bp", "vital-signs"},
	vigil.LOINCSystolic:    {"Systolic blood pressure", "mmHg", "", "vital-signs"},
	vigil.LOINCDiastolic:   {"Diastolic blood pressure", "mmHg", "", "vital-signs"},
	vigil.LOINCMeanBP:      {"Mean blood pressure", "mmHg", "", "vital-signs"},
	"76215-3":              {"Invasive Systolic blood pressure", "mmHg", "", "vital-signs"},
	"76213-8":              {"Invasive Diastolic blood pressure", "mmHg", "", "vital-signs"},
	"76214-6":              {"Invasive Mean blood pressure", "mmHg", "", "vital-signs"},
	vigil.LOINCBodyWeight:  {"Body weight", "kg", "bodyweight", "vital-signs"},
	"8302-2":               {"Body height", "cm", "bodyheight", "vital-signs"},
	"39156-5":              {"Body mass index (BMI) [Ratio]", "kg/m2", "bmi", "vital-signs"},
	vigil.LOINCGlucoseMass: {"Glucose [Mass/volume] in Blood", "mg/dL", "", "laboratory"},
	vigil.LOINCGlucoseMol:  {"Glucose [Moles/volume] in Blood", "mmol/L", "", "laboratory"},
	"55423-8":              {"Number of steps in unspecified time Pedometer", "steps", "", "activity"},
	vigil.LOINCNEWS2:       {"Royal College of Physicians NEWS2 (National Early Warning Score 2) total score", "score", "", "survey"},
}

var categoryDisplay = map[string]string{"vital-signs": "Vital Signs", "laboratory": "Laboratory", "activity": "Activity", "survey": "Survey"}

// mdcTable names the IEEE 11073 codes of measurement methods.
var mdcTable = mapping.DefaultTable()

func instant(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func quantity(code string, v float64, ucum string) *Quantity {
	unit := codes[code].unit
	if unit == "" {
		unit = ucum
	}
	return &Quantity{Value: v, Unit: unit, System: vigil.SystemUCUM, Code: ucum}
}

// CodeDisplay is how Vigil names a code (the code itself when unknown).
func CodeDisplay(code string) string {
	if ci, ok := codes[code]; ok {
		return ci.display
	}
	return code
}

func concept(code string) CodeableConcept {
	display := CodeDisplay(code)
	system := vigil.SystemLOINC
	if code == vigil.LOINCNEWS2 {
		system = "http://snomed.info/sct" // a SNOMED CT concept, not LOINC
	}
	c := CodeableConcept{Coding: []Coding{{System: system, Code: code, Display: display}}, Text: display}
	if code == vigil.LOINCSpO2 {
		// The oxygensat profile requires 2708-6.
		c.Coding = append(c.Coding, Coding{System: vigil.SystemLOINC, Code: vigil.LOINCSpO2Profile, Display: "Oxygen saturation in Arterial blood"})
	}
	return c
}

// ObservationResource renders a stored observation per the FHIR R4
// vital-signs profiles.
func ObservationResource(o *vigil.Observation) *Observation {
	ci := codes[o.Code]
	cat := ci.category
	if cat == "" {
		cat = "vital-signs"
	}
	r := &Observation{
		ResourceType:      "Observation",
		ID:                o.ID,
		Status:            "final",
		Category:          []CodeableConcept{{Coding: []Coding{{System: SystemObsCategory, Code: cat, Display: categoryDisplay[cat]}}, Text: categoryDisplay[cat]}},
		Code:              concept(o.Code),
		Subject:           Reference{Reference: "Patient/" + o.PatientID},
		EffectiveDateTime: instant(o.Time),
	}
	if o.Text != "" || o.Concept != nil {
		r.Category = nil // not a vital sign; Vigil does not know its category
	}
	if o.Method != "" {
		// How the device measured it, as it said (IEEE 11073), so that
		// heart rate from the ECG and pulse rate from the oximeter
		// stay distinguishable (PHD and PCD practice: both codings).
		refID, _ := mdcTable.MDCRefID(o.Method)
		r.Code.Coding = append(r.Code.Coding, Coding{System: vigil.SystemMDC, Code: o.Method, Display: refID})
	}
	if !o.Received.IsZero() {
		r.Issued = instant(o.Received)
	}
	r.Meta = &Meta{VersionID: "1"} // a stored value never changes
	if ci.profile != "" {
		r.Meta.Profile = []string{profileBase + ci.profile}
	}
	if o.DeviceID != "" {
		r.Device = &Reference{Reference: "Device/" + o.DeviceID}
	}
	if or := o.Origin; or != nil {
		for _, e := range []Extension{{ExtLocation, or.Location}, {ExtEquipment, or.Equipment}, {ExtContainment, or.Containment}} {
			if e.ValueString != "" {
				r.Extension = append(r.Extension, e)
			}
		}
	}
	switch {
	case o.Sampled != nil:
		// A MedTech SampledData mapping's period: as MedTech writes it.
		r.EffectiveDateTime = ""
		r.EffectivePeriod = &Period{Start: instant(o.Time), End: instant(o.Sampled.End)}
		origin := *quantity(o.Code, 0, o.Unit)
		r.ValueSampledData = &SampledData{Origin: origin, Period: o.Sampled.PeriodMS, Dimensions: 1, Data: o.Sampled.Data}
		r.Meta.Profile = nil // the vital-signs profiles want a Quantity
	case o.Text != "":
		r.ValueString = o.Text
	case o.Concept != nil:
		c := &CodeableConcept{Text: o.Concept.Text}
		for _, cd := range o.Concept.Coding {
			c.Coding = append(c.Coding, Coding(cd))
		}
		r.ValueConcept = c
	case o.Code == vigil.LOINCBPPanel:
		for _, c := range o.Components {
			r.Component = append(r.Component, Component{Code: concept(c.Code), ValueQuantity: quantity(c.Code, c.Value, c.Unit)})
		}
	default:
		r.ValueQuantity = quantity(o.Code, o.Value, o.Unit)
	}
	return r
}

// PatientResource renders a patient.
func PatientResource(p *vigil.Patient) *Patient {
	r := &Patient{ResourceType: "Patient", ID: p.ID, Active: true, Gender: p.Sex, BirthDate: p.BirthDate,
		Meta: &Meta{VersionID: itoa(p.Version), LastUpdated: instant(p.Updated)}}
	if p.Identifier != "" {
		r.Identifier = []Identifier{{System: SystemIdentifier, Value: p.Identifier}}
	}
	if p.Family != "" || p.Given != "" {
		n := HumanName{Use: "official", Family: p.Family}
		if p.Given != "" {
			n.Given = []string{p.Given}
		}
		r.Name = []HumanName{n}
	}
	return r
}

// DeviceResource renders a device; patientID is its current assignment.
func DeviceResource(d *vigil.Device, patientID string) *Device {
	r := &Device{ResourceType: "Device", ID: d.ID, Status: "active", Manufacturer: d.Manufacturer, SerialNumber: d.Serial, ModelNumber: d.Model,
		Meta: &Meta{VersionID: itoa(d.Version), LastUpdated: instant(d.Updated)}}
	if d.Serial != "" {
		r.Identifier = []Identifier{{System: SystemSerial, Value: d.Serial}}
	}
	if d.Kind != "" {
		r.Type = &CodeableConcept{Text: d.Kind}
	}
	if d.Firmware != "" {
		r.Version = []DeviceVersion{{Type: &CodeableConcept{Text: "firmware"}, Value: d.Firmware}}
	}
	if patientID != "" {
		r.Patient = &Reference{Reference: "Patient/" + patientID}
	}
	return r
}

type DeviceMetric struct {
	ResourceType      string           `json:"resourceType"`
	ID                string           `json:"id"`
	Type              CodeableConcept  `json:"type"`
	Unit              *CodeableConcept `json:"unit,omitempty"`
	Source            Reference        `json:"source"`
	OperationalStatus string           `json:"operationalStatus"`
	Category          string           `json:"category"`
}

// DeviceMetricID is the id of a device's metric for a code: the device
// id and the code joined by a dot (both are safe in FHIR ids).
func DeviceMetricID(deviceID, code string) string { return deviceID + "." + code }

// DeviceMetricResource renders one channel of a device: a kind of
// measurement it has sent Vigil. Vigil knows what a device reported, not
// its power state, so operationalStatus is "on" for an active device.
func DeviceMetricResource(c vigil.Channel, revoked bool) *DeviceMetric {
	status := "on"
	if revoked {
		status = "off"
	}
	t := concept(c.Code)
	t.Coding = t.Coding[:1] // the code itself, not profile extras
	var unit *CodeableConcept
	if c.Unit != "" { // text channels have none
		unit = &CodeableConcept{Coding: []Coding{{System: vigil.SystemUCUM, Code: c.Unit}}, Text: c.Unit}
	}
	return &DeviceMetric{
		ResourceType:      "DeviceMetric",
		ID:                DeviceMetricID(c.Device, c.Code),
		Type:              t,
		Unit:              unit,
		Source:            Reference{Reference: "Device/" + c.Device},
		OperationalStatus: status,
		Category:          "measurement",
	}
}

// DetectedIssue is how Vigil serves an alert: status preliminary while it
// is open (firing or acknowledged), final once resolved; severity from the
// alert's priority; each acknowledgement, escalation and snooze a
// mitigation.
type DetectedIssue struct {
	ResourceType       string           `json:"resourceType"`
	ID                 string           `json:"id"`
	Meta               *Meta            `json:"meta,omitempty"`
	Identifier         []Identifier     `json:"identifier,omitempty"`
	Status             string           `json:"status"`
	Code               *CodeableConcept `json:"code,omitempty"`
	Severity           string           `json:"severity,omitempty"`
	Patient            *Reference       `json:"patient,omitempty"`
	IdentifiedDateTime string           `json:"identifiedDateTime,omitempty"`
	Detail             string           `json:"detail,omitempty"`
	Mitigation         []Mitigation     `json:"mitigation,omitempty"`
	Extension          []Extension      `json:"extension,omitempty"`
}

type Mitigation struct {
	Action CodeableConcept `json:"action"`
	Date   string          `json:"date,omitempty"`
}

// Alert identifiers and extensions.
const (
	// SystemAlert is the identifier system of Vigil's alert ids (stable:
	// outbound sync updates an EHR's copy by it).
	SystemAlert = "urn:vigil:alert"
	// SystemRule is the code system of Vigil's alert rules.
	SystemRule = "urn:vigil:rule"
	// ExtAlertState carries the alert's own state (firing, acknowledged,
	// resolved), finer than DetectedIssue.status.
	ExtAlertState = "https://vigil-iomt.github.io/fhir/StructureDefinition/alert-state"
)

// AlertResource renders an alert as a DetectedIssue.
func AlertResource(a *vigil.Alert) *DetectedIssue {
	r := &DetectedIssue{ResourceType: "DetectedIssue", ID: a.ID, Status: "preliminary",
		Meta:       &Meta{VersionID: itoa(max(1, len(a.History))), LastUpdated: instant(a.Updated)},
		Identifier: []Identifier{{System: SystemAlert, Value: a.ID}},
		Code:       &CodeableConcept{Coding: []Coding{{System: SystemRule, Code: a.RuleID, Display: a.Title}}, Text: a.Title},
		Severity:   map[string]string{vigil.PriorityHigh: "high", vigil.PriorityMedium: "moderate", vigil.PriorityLow: "low"}[a.Priority],
		Patient:    &Reference{Reference: "Patient/" + a.PatientID},
		Extension:  []Extension{{URL: ExtAlertState, ValueString: a.State}},
	}
	if !a.Raised.IsZero() {
		r.IdentifiedDateTime = instant(a.Raised)
	}
	if a.State == vigil.AlertResolved {
		r.Status = "final"
	}
	r.Detail = a.Title
	if a.Detail != "" {
		r.Detail += ": " + a.Detail
	}
	for _, e := range a.History {
		switch e.State {
		case vigil.AlertAcknowledged, vigil.EventEscalated, vigil.EventSnoozed:
			text := e.State
			if e.By != "" {
				text += " by " + e.By
			}
			if e.Note != "" {
				text += ": " + e.Note
			}
			r.Mitigation = append(r.Mitigation, Mitigation{Action: CodeableConcept{Text: text}, Date: instant(e.Time)})
		}
	}
	return r
}
