package vigil

import (
	"context"
	"regexp"
	"strings"
	"time"
)

// idPattern is the shape of every Vigil identifier (patients, devices,
// users): it is safe in MQTT topics, URLs and FHIR ids.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,47}$`)

// ValidID reports whether s can be used as a patient, device or user id:
// 1–48 characters of ASCII letters, digits and '-', not starting with '-'.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// Patient is a person whose readings Vigil keeps. Name, Identifier and
// BirthDate are PHI and must never be logged.
type Patient struct {
	ID         string `json:"id"`
	Identifier string `json:"identifier,omitempty"` // hospital MRN or programme id
	Family     string `json:"family,omitempty"`
	Given      string `json:"given,omitempty"`
	BirthDate  string `json:"birthDate,omitempty"` // YYYY-MM-DD
	// PostalCode of the home address: its first characters are the
	// region of public-health aggregates (internal/pubhealth).
	PostalCode string `json:"postalCode,omitempty"`
	Sex        string `json:"sex,omitempty"` // FHIR administrative gender: male, female, other, unknown
	Ward       string `json:"ward,omitempty"`
	Bed        string `json:"bed,omitempty"`
	// NEWS2 inputs a nurse records (they have no device).
	SpO2Scale     int       `json:"spo2Scale,omitempty"`     // 2 when prescribed (hypercapnic respiratory failure); else scale 1
	Consciousness string    `json:"consciousness,omitempty"` // ACVPU: A, C, V, P or U
	ConsciousAt   time.Time `json:"consciousAt,omitzero"`
	OnOxygen      *bool     `json:"onOxygen,omitempty"`
	OxygenAt      time.Time `json:"oxygenAt,omitzero"`
	// Overrides are patient-specific alert limits (expired ones are kept
	// for the record until replaced).
	Overrides []ThresholdOverride `json:"overrides,omitempty"`
	// Medications are the home programme's prescriptions whose doses a
	// pill bottle reports (see MedicationSchedule).
	Medications []MedicationSchedule `json:"medications,omitempty"`
	Version     int                  `json:"version"` // starts at 1, incremented on every update
	Created     time.Time            `json:"created"`
	Updated     time.Time            `json:"updated"`
}

var datePattern = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)

// Validate checks the fields a person enters: sex is a FHIR
// administrative gender, the birth date a date YYYY-MM-DD not after now.
func (p *Patient) Validate(now time.Time) error {
	switch p.Sex {
	case "", "male", "female", "other", "unknown":
	default:
		return FieldErrorf("sex", "invalid", "sex must be male, female, other or unknown")
	}
	if p.BirthDate != "" {
		d, err := time.Parse(time.DateOnly, p.BirthDate)
		if !datePattern.MatchString(p.BirthDate) || err != nil {
			return FieldErrorf("birthDate", "invalid", "birth date %q is not a date YYYY-MM-DD", p.BirthDate)
		}
		if d.After(now) {
			return FieldErrorf("birthDate", "invalid", "birth date is in the future")
		}
	}
	return nil
}

// Device kinds known to the simulator and the web app. Any non-empty kind
// is accepted.
const (
	DeviceBedsideMonitor = "bedside-monitor"
	DeviceWearable       = "wearable"
	DeviceBPCuff         = "bp-cuff"
	DeviceGlucometer     = "glucometer"
	DeviceThermometer    = "thermometer"
	DeviceScale          = "scale"
	DeviceGateway        = "gateway" // relays other devices' data (HL7 gateways, BLE hubs)
	// DeviceEdge is an edge gateway (vigil edge): it runs ingest, rules and
	// alerts near the devices and forwards their readings upstream for the
	// patients its Serves names.
	DeviceEdge = "edge"
	// DeviceNurseCall is a nurse-call system: it sends no readings but may
	// subscribe to the alert topics (vigil/v1/alerts/#) over MQTT.
	DeviceNurseCall = "nurse-call"
)

// Device is a medical device or gateway with its own credential.
// SecretHash is an argon2id hash in PHC string form; the secret itself is
// never stored.
type Device struct {
	ID           string `json:"id"`
	Kind         string `json:"kind"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Model        string `json:"model,omitempty"`
	Serial       string `json:"serial,omitempty"`
	// Firmware is the device's firmware version as registered.
	Firmware string `json:"firmware,omitempty"`
	// Serves, for an edge gateway (kind DeviceEdge), is whom it serves:
	// the patients of these wards and these patients, with the devices
	// assigned to them. The edge receives their registry entries, rules
	// and mapping templates, and may forward only their readings.
	Serves     *EdgeScope `json:"serves,omitempty"`
	SecretHash string     `json:"-"`
	// Revoked devices may not connect or send anything (their secret is
	// gone); a new secret (rotation) lets them back in.
	Revoked bool `json:"revoked,omitempty"`
	// EnrollHash is the SHA-256 of a one-time enrollment code the device
	// exchanges for its secret (POST /api/v1/devices/{id}/enroll) before
	// EnrollExpires; both are cleared when it is used.
	EnrollHash []byte `json:"-"`
	// CertSerial is the serial (hex) of the device's client certificate
	// issued by Vigil's CA (vigil device cert); only that one is accepted.
	CertSerial    string    `json:"certSerial,omitempty"`
	EnrollExpires time.Time `json:"enrollExpires,omitzero"`
	// CommandSeq is the counter of the last command sent to the device
	// (each command carries the next one, against replay); Commands are
	// the latest commands with their outcome (at most 50 kept).
	CommandSeq uint64          `json:"commandSeq,omitempty"`
	Commands   []DeviceCommand `json:"commands,omitempty"`
	Version    int             `json:"version"`
	Created    time.Time       `json:"created"`
	Updated    time.Time       `json:"updated"`
	LastSeen   time.Time       `json:"lastSeen,omitzero"`
}

// EdgeScope is what an edge gateway serves (Device.Serves).
type EdgeScope struct {
	Wards    []string `json:"wards,omitempty"`
	Patients []string `json:"patients,omitempty"`
}

// Covers reports whether the scope includes the patient.
func (s *EdgeScope) Covers(p *Patient) bool {
	if s == nil || p == nil {
		return false
	}
	for _, w := range s.Wards {
		if p.Ward == w {
			return true
		}
	}
	for _, id := range s.Patients {
		if p.ID == id {
			return true
		}
	}
	return false
}

// Device command states.
const (
	CommandSent     = "sent"
	CommandApplied  = "applied"
	CommandRejected = "rejected"
)

// DeviceCommand is a command Vigil sent a device (signed, with its
// counter; see internal/devcmd) and what the device answered.
type DeviceCommand struct {
	Seq      uint64    `json:"seq"`
	Type     string    `json:"type"`
	Params   string    `json:"params,omitempty"` // JSON
	By       string    `json:"by"`
	Issued   time.Time `json:"issued"`
	Expires  time.Time `json:"expires"`
	Status   string    `json:"status"`
	Reason   string    `json:"reason,omitempty"` // the device's, when it rejected it
	Answered time.Time `json:"answered,omitzero"`
}

// Assignment records that a device measured a patient from From
// (inclusive) until To (exclusive). A zero To means the assignment is
// still open. A device has at most one assignment at any instant.
type Assignment struct {
	DeviceID  string    `json:"device"`
	PatientID string    `json:"patient"`
	From      time.Time `json:"from"`
	To        time.Time `json:"to,omitzero"`
}

// Covers reports whether the assignment holds at t.
func (a Assignment) Covers(t time.Time) bool {
	return !t.Before(a.From) && (a.To.IsZero() || t.Before(a.To))
}

// PatientFilter selects patients. Zero fields match everything.
type PatientFilter struct {
	ID         string
	Identifier string
	Ward       string
	Family     string // case-insensitive prefix
	Given      string // case-insensitive prefix
	// Name is a case-insensitive prefix of the family or the given name.
	Name   string
	Gender string // exact: male, female, other, unknown
	// Born holds the birth dates (at midnight UTC) that match: every
	// period must contain the birth date; NotBorn excludes. A patient
	// without a birth date matches neither.
	Born    []Period
	NotBorn []Period
	// After skips to the patients with an id above it (keyset paging:
	// a page never repeats or skips one when patients are added).
	After  string
	Offset int
	Limit  int // 0 means the store's default (100)
}

// Matches reports whether p passes the filter's fields other than ID,
// After, Offset and Limit; stores use it so every store matches alike.
func (f PatientFilter) Matches(p *Patient) bool {
	if f.Identifier != "" && p.Identifier != f.Identifier {
		return false
	}
	if f.Ward != "" && p.Ward != f.Ward {
		return false
	}
	if f.Family != "" && !hasFoldPrefix(p.Family, f.Family) {
		return false
	}
	if f.Given != "" && !hasFoldPrefix(p.Given, f.Given) {
		return false
	}
	if f.Name != "" && !hasFoldPrefix(p.Family, f.Name) && !hasFoldPrefix(p.Given, f.Name) {
		return false
	}
	if f.Gender != "" && p.Sex != f.Gender {
		return false
	}
	if len(f.Born) > 0 || len(f.NotBorn) > 0 {
		b, err := time.Parse(time.DateOnly, p.BirthDate)
		if err != nil {
			return false
		}
		for _, r := range f.Born {
			if !r.Contains(b) {
				return false
			}
		}
		for _, r := range f.NotBorn {
			if r.Contains(b) {
				return false
			}
		}
	}
	return true
}

func hasFoldPrefix(s, prefix string) bool {
	return strings.HasPrefix(strings.ToLower(s), strings.ToLower(prefix))
}

// DeviceFilter selects devices. Zero fields match everything.
type DeviceFilter struct {
	ID        string
	Serial    string // the maker's serial number, exact
	PatientID string // devices currently assigned to this patient
	After     string // ids above this one only (keyset paging)
	Offset    int
	Limit     int
}

// PatientStore keeps patients. Implementations are safe for concurrent use.
type PatientStore interface {
	// CreatePatient stores p with Version 1 and Created/Updated set.
	// Returns ECONFLICT if the id or the identifier is taken, EINVALID if
	// the id is not ValidID.
	CreatePatient(ctx context.Context, p *Patient) error
	// UpdatePatient replaces the patient with p.ID. If version is not 0 it
	// must equal the stored version, else ECONFLICT. Returns ENOTFOUND.
	// On success p.Version and p.Updated are set to the new values.
	UpdatePatient(ctx context.Context, p *Patient, version int) error
	// FindPatientByID returns ENOTFOUND if there is no such patient.
	FindPatientByID(ctx context.Context, id string) (*Patient, error)
	// FindPatients returns the matching patients ordered by id and the total
	// number of matches ignoring After, Offset and Limit.
	FindPatients(ctx context.Context, f PatientFilter) ([]*Patient, int, error)
}

// DeviceStore keeps devices and their assignments to patients.
// Implementations are safe for concurrent use.
type DeviceStore interface {
	// CreateDevice stores d with Version 1. Returns ECONFLICT if the id is
	// taken, EINVALID if it is not ValidID.
	CreateDevice(ctx context.Context, d *Device) error
	// UpdateDevice replaces the device with d.ID (including SecretHash),
	// with the same version rule as UpdatePatient.
	UpdateDevice(ctx context.Context, d *Device, version int) error
	// FindDeviceByID returns ENOTFOUND if there is no such device.
	FindDeviceByID(ctx context.Context, id string) (*Device, error)
	// FindDevices returns matching devices ordered by id and the total.
	FindDevices(ctx context.Context, f DeviceFilter) ([]*Device, int, error)
	// AssignDevice assigns the device to the patient from the given time,
	// closing the device's assignment open at that time (if any) at from.
	// An empty patientID only closes the open assignment (unassign).
	// Returns ENOTFOUND for an unknown device or patient, EINVALID if from
	// is before the start of the device's latest assignment.
	AssignDevice(ctx context.Context, deviceID, patientID string, from time.Time) error
	// Assignments returns the device's assignments, oldest first.
	Assignments(ctx context.Context, deviceID string) ([]Assignment, error)
	// PatientAssignments returns the assignments of all devices to the
	// patient, oldest first.
	PatientAssignments(ctx context.Context, patientID string) ([]Assignment, error)
}
