// Package smart parses SMART on FHIR scopes (App Launch 1.0 and 2.0) and
// answers whether a set of them allows an interaction.
//
// A resource scope is context/Type.permissions:
//
//	context      patient (the launch patient's compartment), user (what
//	             the user may do), system (a backend service)
//	Type         a FHIR resource type or *
//	permissions  SMART 1: read (read and search), write (create, update,
//	             delete) or *; SMART 2: letters from c r u d s in that
//	             order (e.g. rs)
//
// Other scopes a SMART client sends (openid, fhirUser, profile, launch,
// launch/patient, offline_access, online_access) are accepted and grant no
// access to resources.
package smart

import (
	"fmt"
	"regexp"
	"strings"
)

// Interactions, as SMART 2's letters.
const (
	Create = 'c'
	Read   = 'r'
	Update = 'u'
	Delete = 'd'
	Search = 's'
)

// Contexts.
const (
	Patient = "patient"
	User    = "user"
	System  = "system"
)

// Scope is one parsed resource scope.
type Scope struct {
	Context string // patient, user or system
	Type    string // a resource type or "*"
	Allowed string // interaction letters, e.g. "rs"
}

var (
	resourceScope = regexp.MustCompile(`^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|c?r?u?d?s?)$`)
	otherScopes   = map[string]bool{"openid": true, "fhirUser": true, "profile": true, "launch": true, "launch/patient": true, "launch/encounter": true, "offline_access": true, "online_access": true}
)

// Parse parses one scope. ok is false for a scope that grants nothing
// (openid, launch, ...); err is set for one that is not a SMART scope.
func Parse(s string) (sc Scope, ok bool, err error) {
	if otherScopes[s] {
		return Scope{}, false, nil
	}
	m := resourceScope.FindStringSubmatch(s)
	if m == nil || m[3] == "" {
		return Scope{}, false, fmt.Errorf("%q is not a SMART scope: use context/Type.permissions, e.g. user/Observation.read, patient/*.read or user/Patient.rs", s)
	}
	sc = Scope{Context: m[1], Type: m[2]}
	switch m[3] {
	case "read":
		sc.Allowed = "rs"
	case "write":
		sc.Allowed = "cud"
	case "*":
		sc.Allowed = "cruds"
	default:
		sc.Allowed = m[3]
	}
	return sc, true, nil
}

// Check parses every scope and returns the first error.
func Check(scopes []string) error {
	for _, s := range scopes {
		if _, _, err := Parse(s); err != nil {
			return err
		}
	}
	return nil
}

// HasContext reports whether any scope is of the given context.
func HasContext(scopes []string, context string) bool {
	for _, s := range scopes {
		if sc, ok, _ := Parse(s); ok && sc.Context == context {
			return true
		}
	}
	return false
}

// Grant returns the context that allows the interaction on the resource
// type: user or system when any such scope allows it (the user's own
// permissions then apply), else patient when a patient scope does (the
// caller is confined to the launch patient), else "" (refused).
func Grant(scopes []string, typ string, interaction byte) string {
	best := ""
	for _, s := range scopes {
		sc, ok, _ := Parse(s)
		if !ok || (sc.Type != "*" && sc.Type != typ) || !strings.ContainsRune(sc.Allowed, rune(interaction)) {
			continue
		}
		if sc.Context != Patient {
			return sc.Context
		}
		best = Patient
	}
	return best
}

// Needed names a scope that would allow the interaction, for errors.
func Needed(typ string, interaction byte) string {
	perm := "read"
	if interaction == Create || interaction == Update || interaction == Delete {
		perm = "write"
	}
	return "user/" + typ + "." + perm
}
