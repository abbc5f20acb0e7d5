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
	RoleDevice    = "device"
)

// ValidUserRole reports whether r is a role a person may have.
func ValidUserRole(r string) bool {
	switch r {
	case RoleAdmin, RoleClinician, RoleNurse, RolePatient:
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
	// TOTPSecret is the base32 secret of the user's authenticator app
	// (RFC 6238), when a second factor is enrolled.
	TOTPSecret string    `json:"-"`
	Version    int       `json:"version"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
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
}

// Principal is who is making a request, after authentication.
type Principal struct {
	UserID    string // user id, or device id for RoleDevice
	Role      string
	PatientID string // for RolePatient
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
