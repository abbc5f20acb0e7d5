package vigil

import (
	"errors"
	"fmt"
	"testing"
)

// The accessors find the first *Error in a chain, say EINTERNAL (and a
// generic message) for any other error, and allocate nothing for nil or
// an *Error itself: the ingest path asks of every message.
func TestErrorAccessors(t *testing.T) {
	e := &Error{Code: EUNAVAILABLE, Reason: "overloaded", Message: "busy"}
	plain := &Error{Code: EINVALID, Message: "bad"}
	for _, c := range []struct {
		err                   error
		code, reason, message string
	}{
		{nil, "", "", ""},
		{e, EUNAVAILABLE, "overloaded", "busy"},
		{plain, EINVALID, EINVALID, "bad"},
		{fmt.Errorf("storing: %w", e), EUNAVAILABLE, "overloaded", "busy"},
		{errors.Join(errors.New("x"), fmt.Errorf("y: %w", plain)), EINVALID, EINVALID, "bad"},
		{errors.New("disk on fire"), EINTERNAL, EINTERNAL, "internal error"},
	} {
		if got := ErrorCode(c.err); got != c.code {
			t.Errorf("ErrorCode(%v) = %q, want %q", c.err, got, c.code)
		}
		if got := ErrorReason(c.err); got != c.reason {
			t.Errorf("ErrorReason(%v) = %q, want %q", c.err, got, c.reason)
		}
		if got := ErrorMessage(c.err); got != c.message {
			t.Errorf("ErrorMessage(%v) = %q, want %q", c.err, got, c.message)
		}
	}
	if !Retryable(fmt.Errorf("w: %w", e)) || Retryable(plain) || Retryable(nil) {
		t.Error("Retryable: want true only for unavailable and storage_full")
	}
	var err error = e
	if n := testing.AllocsPerRun(100, func() { ErrorCode(nil); ErrorCode(err); Retryable(nil) }); n != 0 {
		t.Errorf("%v allocations for nil and an *Error, want none", n)
	}
}
