package edge_test

import (
	"context"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/edge"
)

// A bundle built on the server carries the served patients only, checks
// its own version, and applied to an empty edge store brings it to the
// server's registry; applying it again changes nothing; a reassignment
// on the server follows.
func TestBundleBuildAndApply(t *testing.T) {
	ctx := context.Background()
	srv, loc := openOutbox(t), openOutbox(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	must(srv.CreatePatient(ctx, &vigil.Patient{ID: "p1", Ward: "7"}))
	must(srv.CreatePatient(ctx, &vigil.Patient{ID: "p2", Ward: "7"}))
	must(srv.CreatePatient(ctx, &vigil.Patient{ID: "p3", Ward: "8"}))
	must(srv.CreateDevice(ctx, &vigil.Device{ID: "m1", Kind: vigil.DeviceBedsideMonitor, SecretHash: "$argon2id$x"}))
	must(srv.CreateDevice(ctx, &vigil.Device{ID: "m3", Kind: vigil.DeviceBedsideMonitor}))
	must(srv.CreateDevice(ctx, &vigil.Device{ID: "e1", Kind: vigil.DeviceEdge, Serves: &vigil.EdgeScope{Wards: []string{"7"}}}))
	must(srv.AssignDevice(ctx, "m1", "p1", t0))
	must(srv.AssignDevice(ctx, "m3", "p3", t0))
	must(srv.SaveRule(ctx, &vigil.Rule{ID: "r1", Title: "x", Expr: `value("8867-4") > 1`, Priority: vigil.PriorityLow, Enabled: true}))

	b, err := edge.Build(ctx, srv, "e1", time.Now())
	must(err)
	must(b.Verify("e1"))
	if len(b.Patients) != 2 || len(b.Devices) != 1 || b.Devices[0].SecretHash != "$argon2id$x" || len(b.Rules) != 1 {
		t.Fatalf("bundle: %d patients, %d devices, %d rules", len(b.Patients), len(b.Devices), len(b.Rules))
	}
	if err := b.Verify("e2"); err == nil {
		t.Fatal("bundle of e1 accepted by e2")
	}
	tampered := *b
	tampered.Patients = tampered.Patients[:1]
	if err := tampered.Verify("e1"); err == nil {
		t.Fatal("tampered bundle verified")
	}
	if _, err := edge.Build(ctx, srv, "m1", time.Now()); vigil.ErrorCode(err) != vigil.EFORBIDDEN {
		t.Fatalf("bundle for a monitor: %v", err)
	}

	c, err := edge.Apply(ctx, loc, b, edge.Hooks{})
	must(err)
	if c.Patients != 2 || c.Devices != 1 || c.Assignments != 1 || c.Rules != 1 {
		t.Fatalf("first apply: %+v", c)
	}
	d, err := loc.FindDeviceByID(ctx, "m1")
	must(err)
	if d.SecretHash != "$argon2id$x" {
		t.Fatal("device secret hash not applied")
	}
	c, err = edge.Apply(ctx, loc, b, edge.Hooks{})
	must(err)
	if c != (edge.Changes{}) {
		t.Fatalf("second apply changed %+v", c)
	}
	// m1 moves to p2 on the server.
	must(srv.AssignDevice(ctx, "m1", "p2", t0.Add(30*time.Minute)))
	b2, err := edge.Build(ctx, srv, "e1", time.Now())
	must(err)
	if b2.Version == b.Version {
		t.Fatal("version unchanged after a reassignment")
	}
	_, err = edge.Apply(ctx, loc, b2, edge.Hooks{})
	must(err)
	want, err := srv.Assignments(ctx, "m1")
	must(err)
	got, err := loc.Assignments(ctx, "m1")
	must(err)
	if len(got) != len(want) || got[1].PatientID != "p2" || !got[0].To.Equal(want[0].To) {
		t.Fatalf("edge assignments %+v, server %+v", got, want)
	}
}
