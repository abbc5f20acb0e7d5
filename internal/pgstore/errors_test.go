package pgstore

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vigil-iomt/vigil"
)

// PostgreSQL's error classes become Vigil's codes: a full disk is EFULL
// (devices send again later: MQTT 0x97, HTTP 507), a lost connection or
// an administrator shutdown EUNAVAILABLE, anything else EINTERNAL.
func TestStoreErrCodes(t *testing.T) {
	for code, want := range map[string]string{
		"53100": vigil.EFULL,        // disk_full
		"08006": vigil.EUNAVAILABLE, // connection_failure
		"57P01": vigil.EUNAVAILABLE, // admin_shutdown
		"53300": vigil.EUNAVAILABLE, // too_many_connections
		"23505": vigil.EINTERNAL,    // unique_violation
	} {
		if got := vigil.ErrorCode(storeErr(&pgconn.PgError{Code: code, Message: "x"})); got != want {
			t.Errorf("SQLSTATE %s: %s, want %s", code, got, want)
		}
	}
}
