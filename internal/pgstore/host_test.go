package pgstore_test

import (
	"testing"

	"github.com/vigil-iomt/vigil/internal/pgstore"
)

func TestOnThisMachine(t *testing.T) {
	for url, want := range map[string]bool{
		"postgres://127.0.0.1:5432/test":                       true,
		"postgres://vigil@localhost/vigil?sslmode=verify-full": true,
		"postgres://[::1]:5432/test":                           true,
		"postgres:///vigil?host=/var/run/postgresql":           true,
		"host=/tmp dbname=vigil":                               true,
		"postgres://127.0.0.1,127.0.0.2/test":                  true,
		"postgres://db.ward.example:5432/vigil":                false,
		"postgres://10.0.0.5/vigil":                            false,
		"postgres://127.0.0.1,10.0.0.5/vigil":                  false, // a fallback elsewhere
		"postgres://%zz":                                       false, // not a URL
	} {
		if got := pgstore.OnThisMachine(url); got != want {
			t.Errorf("OnThisMachine(%q) = %v, want %v", url, got, want)
		}
	}
}
