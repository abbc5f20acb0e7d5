package vigil

import (
	"context"
	"time"
)

// Roles of people and of devices.
const (
	RoleAdmin     = "admin"
	RoleClinician = "clinician"
	RoleNurse     = "nurse"
	RolePatient   = "patient"
	// RoleAuditor reads the audit log and the break-glass report, and no
	// patient's data.
	RoleAuditor = "auditor"
	// RoleAnalyst is for public-health and research analysts: no
	// patient's data anywhere (records, readings, the web app); only
	// anonymised aggregates, which come with the public-health issue.
	RoleAnalyst = "analyst"
	RoleDevice  = "device"
)

// ValidUserRole reports whether r is a role a person may have.
func ValidUserRole(r string) bool {
	switch r {
	case RoleAdmin, RoleClinician, RoleNurse, RolePatient, RoleAuditor, RoleAnalyst:
		return true
	}
	return false
}

// User is a person who logs in. PasswordHash is argon2id in PHC string
// form. PatientID links a patient-role user to their own record.
type User struct {
	ID           string `json:"id"` // the login name
	Name         string `json:"name,omitempty"`
	Role         string `json:"role"`
	PatientID    string `json:"patient,omitempty"`
	PasswordHash string `json:"-"`
	// Wards are the care teams of a clinician or nurse: they see only
	// patients on these wards (and those they break the glass for).
	// Empty: every patient (a hospital-wide role such as an outreach team).
	Wards []string `json:"wards,omitempty"`
	// BreakGlass are emergency accesses to patients outside their wards,
	// each with its reason and end; kept for the record.
	BreakGlass []BreakGlass `json:"breakGlass,omitempty"`
	// TOTPSecret is the base32 secret of the user's authenticator app
	// (RFC 6238), when a second factor is enrolled.
	TOTPSecret string `json:"-"`
	// PrivacySpent is the differential-privacy budget an analyst's
	// aggregate queries have used (internal/pubhealth's ledger).
	PrivacySpent *PrivacySpent `json:"privacySpent,omitempty"`
	Version      int           `json:"version"`
	Created      time.Time     `json:"created"`
	Updated      time.Time     `json:"updated"`
}

// PrivacySpent totals the (ε, δ) of a user's differentially private
// queries, by sequential composition.
type PrivacySpent struct {
	Epsilon float64 `json:"epsilon"`
	Delta   float64 `json:"delta"`
	Queries int     `json:"queries"`
}

// Token is an API bearer token or a web session. Only the SHA-256 of the
// token's secret is stored (the secret has 256 bits of entropy, so a fast
// hash is safe; argon2id is for human-chosen secrets).
type Token struct {
	ID      string    `json:"id"`   // public id, also the prefix of the token string
	Hash    []byte    `json:"-"`    // SHA-256 of the secret part
	UserID  string    `json:"user"` //
	Name    string    `json:"name,omitempty"`
	Kind    string    `json:"kind"` // "api" or "session"
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"` // zero: never
	// Scopes are SMART on FHIR scopes (user/Observation.read,
	// patient/*.read, ...). A token with scopes works on the FHIR API only
	// and only for what they allow; without scopes it acts with its user's
	// role everywhere.
	Scopes []string `json:"scopes,omitempty"`
	// Patient is the launch patient of patient/ scopes: the one patient
	// whose compartment they open; for a share link, the shared patient.
	Patient string `json:"patient,omitempty"`
	// Reason is why a share link was made (kind "share"; Name is the
	// external clinician it is for, UserID who made it).
	Reason string `json:"reason,omitempty"`
}

// BreakGlass is one emergency access: a user reads a patient outside
// their wards, with a stated reason, until Until.
type BreakGlass struct {
	Patient string    `json:"patient"`
	Reason  string    `json:"reason"`
	From    time.Time `json:"from"`
	Until   time.Time `json:"until"`
}

// Principal is who is making a request, after authentication.
type Principal struct {
	UserID    string // user id, or device id for RoleDevice
	Role      string
	PatientID string   // for RolePatient
	Wards     []string // care teams of a clinician or nurse (empty: all patients)
	Glass     []string // patients open to them now through break-glass
	// Scopes and LaunchPatient come from a scoped token (see Token).
	Scopes        []string
	LaunchPatient string
	// Guest is the external clinician a share link is for: such a
	// principal has the patient role for the shared patient (read-only,
	// that patient only) in the web app, and nothing elsewhere.
	Guest string
}

// Sees reports whether the principal may see a patient on ward: admins
// every patient, a patient themself, clinicians and nurses the patients
// of their wards (all when they have none) and those they broke the
// glass for.
func (p *Principal) Sees(patientID, ward string) bool {
	switch p.Role {
	case RoleAdmin:
		return true
	case RolePatient:
		return p.PatientID != "" && p.PatientID == patientID
	case RoleClinician, RoleNurse:
		if len(p.Wards) == 0 {
			return true
		}
		for _, w := range p.Wards {
			if w == ward {
				return true
			}
		}
		for _, id := range p.Glass {
			if id == patientID {
				return true
			}
		}
	}
	return false
}

// UserStore keeps users and tokens. Implementations are safe for
// concurrent use.
type UserStore interface {
	// CreateUser returns ECONFLICT if the id is taken, EINVALID for a bad
	// id or role.
	CreateUser(ctx context.Context, u *User) error
	// UpdateUser replaces the user, with the same version rule as
	// UpdatePatient.
	UpdateUser(ctx context.Context, u *User, version int) error
	// FindUserByID returns ENOTFOUND if there is no such user.
	FindUserByID(ctx context.Context, id string) (*User, error)
	// FindUsers returns all users ordered by id.
	FindUsers(ctx context.Context) ([]*User, error)
	// CreateToken stores t; ECONFLICT if t.ID is taken.
	CreateToken(ctx context.Context, t *Token) error
	// FindTokenByID returns ENOTFOUND if there is no such token.
	FindTokenByID(ctx context.Context, id string) (*Token, error)
	// DeleteToken removes the token; deleting a missing token is not an error.
	DeleteToken(ctx context.Context, id string) error
}
