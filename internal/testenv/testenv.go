// Package testenv gives tests the servers this machine runs — PostgreSQL
// and NATS with JetStream — each test with a schema or stream of its own,
// removed afterwards. Without the server a test is skipped, unless
// VIGIL_REQUIRE_ALL is set (as .ci/run does), when it fails.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// unavailable skips the test, or fails it under VIGIL_REQUIRE_ALL.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("VIGIL_REQUIRE_ALL") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

func name(stem string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return stem + hex.EncodeToString(b)
}

// PostgresURL is the PostgreSQL tests use: this machine's (127.0.0.1:5432,
// trust auth, database test) unless VIGIL_TEST_POSTGRES names another.
func PostgresURL() string {
	if u := os.Getenv("VIGIL_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// PostgresSchema returns the database URL and a fresh schema name (the
// schema itself is made by whoever opens it first), dropped after the
// test with everything in it.
func PostgresSchema(t testing.TB) (url, schema string) {
	t.Helper()
	url = PostgresURL()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		unavailable(t, "no PostgreSQL at %s (%v); set VIGIL_TEST_POSTGRES", url, err)
	}
	schema = name("vigil_test_")
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		conn.Close(context.Background())
	})
	return url, schema
}

// NATSPrefix returns the NATS server (this machine's, or VIGIL_TEST_NATS)
// and a subject prefix of the test's own, whose stream is deleted after.
func NATSPrefix(t testing.TB) (url, prefix string) {
	t.Helper()
	url = os.Getenv("VIGIL_TEST_NATS")
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
	if err != nil {
		unavailable(t, "no NATS at %s (%v); set VIGIL_TEST_NATS", url, err)
	}
	prefix = name("vigiltest")
	t.Cleanup(func() {
		if js, err := jetstream.New(nc); err == nil {
			js.DeleteStream(context.Background(), prefix+"_READINGS")
			js.DeleteKeyValue(context.Background(), prefix+"_READINGS_WORKERS")
			js.DeleteKeyValue(context.Background(), prefix+"_READINGS_LEASES")
		}
		nc.Close()
	})
	return url, prefix
}
