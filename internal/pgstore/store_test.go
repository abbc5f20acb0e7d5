package pgstore_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/pgstore"
	"github.com/vigil-iomt/vigil/internal/storetest"
	"github.com/vigil-iomt/vigil/internal/testenv"
)

func dbURL() string { return testenv.PostgresURL() }

// open returns a store on a fresh schema, dropped after the test.
func open(t testing.TB) *pgstore.Store { return openWith(t, pgstore.Options{}) }

// openWith is open with opts (their Schema is the fresh one's).
func openWith(t testing.TB, opts pgstore.Options) *pgstore.Store {
	t.Helper()
	url, schema := testenv.PostgresSchema(t)
	opts.Schema = schema
	s, err := pgstore.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{Open: func(t *testing.T) vigil.Store { return open(t) },
		OpenRetaining: func(t *testing.T, r vigil.Retention) vigil.Store { return openWith(t, pgstore.Options{Retention: r}) }})
}

// Opening again migrates nothing twice; samples land in the partition of
// their month; a database written by a newer Vigil is refused.
func TestSchema(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	defer s.Close()
	schema := s.Schema()
	again, err := pgstore.Open(ctx, dbURL(), pgstore.Options{Schema: schema})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer again.Close()
	at := func(month int) *vigil.Reading {
		return &vigil.Reading{DeviceID: "d1", ID: "r" + string(rune('0'+month)), PatientID: "p1",
			Time: time.Date(2026, time.Month(month), 15, 8, 0, 0, 0, time.UTC), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 60, Unit: "/min"}}}
	}
	if _, err := again.AppendReadings(ctx, []*vigil.Reading{at(10), at(11)}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dbURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var parts []string
	rows, _ := conn.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
		JOIN pg_namespace n ON n.oid = p.relnamespace WHERE p.relname = 'samples' AND n.nspname = $1 ORDER BY 1`, schema)
	for rows.Next() {
		var n string
		rows.Scan(&n)
		parts = append(parts, n)
	}
	if len(parts) != 2 || parts[0] != "samples_y2026m10" || parts[1] != "samples_y2026m11" {
		t.Fatalf("partitions: %v", parts)
	}
	var versions int
	files, _ := filepath.Glob("migrations/*.sql")
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+schema+".schema_version").Scan(&versions); err != nil || versions != len(files) {
		t.Fatalf("schema versions: %d %v", versions, err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO "+schema+".schema_version (version) VALUES (99)"); err != nil {
		t.Fatal(err)
	}
	_, err = pgstore.Open(ctx, dbURL(), pgstore.Options{Schema: schema})
	if vigil.ErrorCode(err) != vigil.EINVALID || !strings.Contains(err.Error(), "newer Vigil") {
		t.Fatalf("a newer schema: %v", err)
	}
}

// The audit log verifies on PostgreSQL and refuses a rewrite; the change
// feed holds each new reading and saved alert once until trimmed.
func TestAuditAndFeed(t *testing.T) {
	ctx := context.Background()
	base := open(t)
	base.Close()
	s, err := pgstore.Open(ctx, dbURL(), pgstore.Options{Schema: base.Schema(), ChangeFeed: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	log, err := audit.Open(ctx, s.AuditLog("node-a"), key, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1200 { // more than one ScanAudit page
		if err := log.Record(ctx, audit.Entry{Actor: "dr", Action: "GET /fhir/R4/Patient", Outcome: "success", Detail: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := audit.Verify(ctx, s.AuditLog("node-a"), key.Public().(ed25519.PublicKey))
	if err != nil || !rep.OK || rep.Records != 1200 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	if err := s.AuditLog("node-a").AppendAudit(ctx, 5, []byte("{}"), []byte("{}")); vigil.ErrorCode(err) != vigil.ECONFLICT {
		t.Fatalf("rewriting record 5: %v", err)
	}
	// Another node's log is its own.
	if _, ok, err := s.AuditLog("node-b").AuditHead(ctx); ok || err != nil {
		t.Fatalf("node-b's log is not empty: %v", err)
	}

	r := &vigil.Reading{DeviceID: "d1", ID: "r1", PatientID: "p1", Time: time.Now().UTC(), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 60, Unit: "/min"}}}
	for range 2 { // the second is a duplicate: no second entry
		if _, err := s.AppendReadings(ctx, []*vigil.Reading{r}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveAlert(ctx, &vigil.Alert{ID: "a1", PatientID: "p1", State: vigil.AlertFiring, Raised: time.Now()}); err != nil {
		t.Fatal(err)
	}
	es, err := s.FeedAfter(ctx, 0, 10)
	if err != nil || len(es) != 2 || es[0].Kind != vigil.FeedReading || es[0].ReadingID != "r1" || es[1].Kind != vigil.FeedAlert || es[1].AlertID != "a1" {
		t.Fatalf("feed: %+v %v", es, err)
	}
	if err := s.TrimFeed(ctx, []uint64{es[0].Seq}); err != nil {
		t.Fatal(err)
	}
	if es, _ = s.FeedAfter(ctx, 0, 10); len(es) != 1 || es[0].AlertID != "a1" {
		t.Fatalf("after trim: %+v", es)
	}
	days, err := s.ReadingDays(ctx, "p1", time.Now().Add(-48*time.Hour), time.Now().Add(time.Hour))
	if err != nil || len(days) != 1 || !days[0].Equal(r.Time.Truncate(24*time.Hour)) {
		t.Fatalf("reading days: %v %v", days, err)
	}
}

// Reading ids older than the retention are forgotten; newer ones still
// make a re-send a duplicate.
func TestExpireReadingIDs(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	defer s.Close()
	old, recent := time.Now().Add(-10*24*time.Hour), time.Now().Add(-time.Hour)
	r := func(id string, at time.Time) *vigil.Reading {
		return &vigil.Reading{DeviceID: "d1", ID: id, PatientID: "p1", Time: at, Received: at, Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 60, Unit: "/min"}}}
	}
	if _, err := s.AppendReadings(ctx, []*vigil.Reading{r("old", old), r("new", recent)}); err != nil {
		t.Fatal(err)
	}
	n, err := s.ExpireReadingIDs(ctx, time.Now().Add(-7*24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("expired %d, %v; want 1", n, err)
	}
	res, err := s.AppendReadings(ctx, []*vigil.Reading{r("old", old), r("new", recent)})
	if err != nil || res[0].Duplicate || !res[1].Duplicate {
		t.Fatalf("after expiry: %+v %v", res, err)
	}
}
