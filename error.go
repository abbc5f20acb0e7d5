package vigil

import (
	"errors"
	"fmt"
)

// Application error codes. Each protocol maps them to its wire form in one
// place: HTTP statuses and problem+json (internal/httpapi), FHIR
// OperationOutcome issue codes (internal/fhir), MQTT v5 reason codes
// (internal/broker) and HL7 ACK codes (internal/hl7).
const (
	ECONFLICT     = "conflict"     // the resource exists or changed concurrently
	EINTERNAL     = "internal"     // a fault of Vigil's, not of the caller
	EINVALID      = "invalid"      // the input is malformed or not acceptable
	ENOTFOUND     = "not_found"    // the named resource does not exist
	EUNAUTHORIZED = "unauthorized" // no or bad credentials
	EFORBIDDEN    = "forbidden"    // authenticated, but not allowed
	ETOOLARGE     = "too_large"    // the payload exceeds a configured limit
	EUNAVAILABLE  = "unavailable"  // shutting down or overloaded; retry later
	ETOOMANY      = "too_many"     // the caller exceeded its rate limit; retry later
	EFULL         = "storage_full" // the server's disk is (nearly) full; nothing was stored; retry later
)

// Retryable reports whether err means nothing was stored and the sender
// must send the same data again later (EUNAVAILABLE or EFULL): such data
// is never acknowledged and never dead-lettered.
func Retryable(err error) bool {
	c := ErrorCode(err)
	return c == EUNAVAILABLE || c == EFULL
}

// Error is Vigil's application error. Code is one of the E* constants;
// Message is safe to show to the caller (it never contains PHI such as a
// patient's name); Field, when set, names the offending input field as a
// JSON pointer-like path (for example "values[1].unit"); Reason is a short
// machine-readable cause used for metrics labels and dead letters (for
// example "unknown_code", "implausible_value").
type Error struct {
	Code    string
	Message string
	Field   string
	Reason  string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("vigil error: code=%s field=%s message=%s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("vigil error: code=%s message=%s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code string, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldErrorf returns an EINVALID *Error naming the offending field and a
// machine-readable reason.
func FieldErrorf(field, reason, format string, args ...any) *Error {
	return &Error{Code: EINVALID, Field: field, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if e := asError(err); e != nil {
		return e.Code
	} else if err != nil {
		return EINTERNAL
	}
	return ""
}

// asError is the first *Error in err's chain, or nil. It allocates
// nothing for nil or an *Error itself (the usual cases: the ingest path
// asks of every message).
func asError(err error) *Error {
	if err == nil {
		return nil
	}
	if e, ok := err.(*Error); ok {
		return e
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// ErrorMessage returns the message of the first *Error in err's chain, and
// a generic message for any other error, so internal details never reach
// a caller.
func ErrorMessage(err error) string {
	if e := asError(err); e != nil {
		return e.Message
	} else if err != nil {
		return "internal error"
	}
	return ""
}

// ErrorReason returns the Reason of the first *Error in err's chain, or its
// Code when no reason is set, or "internal" for other errors.
func ErrorReason(err error) string {
	if e := asError(err); e != nil {
		if e.Reason != "" {
			return e.Reason
		}
		return e.Code
	} else if err != nil {
		return EINTERNAL
	}
	return ""
}
