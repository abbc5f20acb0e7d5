// Package storerec holds what both stores (internal/pebble and
// internal/pgstore) write for registry records whose secrets vigil's
// types keep out of JSON — argon2id and SHA-256 hashes only, never a
// secret — and the keyed paging both apply to registry listings.
package storerec

import (
	"sort"

	"github.com/vigil-iomt/vigil"
)

// DefaultLimit is a listing's page size when none is asked for.
const DefaultLimit = 100

// Device is a device as stored: with its secret's and enrollment code's
// hashes.
type Device struct {
	vigil.Device
	SecretHash string `json:"secretHash,omitempty"`
	EnrollHash []byte `json:"enrollHash,omitempty"`
}

// NewDevice is d's stored form.
func NewDevice(d *vigil.Device) Device {
	return Device{Device: *d, SecretHash: d.SecretHash, EnrollHash: d.EnrollHash}
}

// Get returns the device with its hashes.
func (r *Device) Get() *vigil.Device {
	r.Device.SecretHash, r.Device.EnrollHash = r.SecretHash, r.EnrollHash
	return &r.Device
}

// User is a user as stored: with the password hash and the TOTP secret.
type User struct {
	vigil.User
	PasswordHash string `json:"passwordHash,omitempty"`
	TOTPSecret   string `json:"totpSecret,omitempty"`
}

// NewUser is u's stored form.
func NewUser(u *vigil.User) User {
	return User{User: *u, PasswordHash: u.PasswordHash, TOTPSecret: u.TOTPSecret}
}

// Get returns the user with the password hash and TOTP secret.
func (r *User) Get() *vigil.User {
	r.User.PasswordHash, r.User.TOTPSecret = r.PasswordHash, r.TOTPSecret
	return &r.User
}

// Token is an API token as stored: with the SHA-256 of its secret part.
type Token struct {
	vigil.Token
	Hash []byte `json:"hash"`
}

// NewToken is t's stored form.
func NewToken(t *vigil.Token) Token { return Token{Token: *t, Hash: t.Hash} }

// Get returns the token with its hash.
func (r *Token) Get() *vigil.Token {
	r.Token.Hash = r.Hash
	return &r.Token
}

// Page returns one page of all (sorted by id) and the total: the items
// with an id above after, from offset, at most limit (0: DefaultLimit).
func Page[T any](all []T, after string, offset, limit int, id func(T) string) ([]T, int, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	total := len(all)
	if after != "" {
		all = all[sort.Search(len(all), func(i int) bool { return id(all[i]) > after }):]
	}
	if offset >= len(all) {
		return nil, total, nil
	}
	all = all[offset:]
	if len(all) > limit {
		all = all[:limit]
	}
	return all, total, nil
}
