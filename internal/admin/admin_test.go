package admin

import (
	"context"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/auth"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

var ctx = context.Background()

func setup(t *testing.T) (*Service, *pebble.Store, *[]string) {
	o := pebble.DefaultOptions()
	o.CompactInterval = -1
	st, err := pebble.Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var changed []string
	return &Service{Store: st, Auth: auth.NewAuthenticator(st, auth.Options{}), Now: time.Now,
		OnDeviceChanged: func(id string) { changed = append(changed, id) }}, st, &changed
}

func field(t *testing.T, err error, want string) {
	t.Helper()
	e, ok := err.(*vigil.Error)
	if !ok || e.Code != vigil.EINVALID || e.Field != want {
		t.Fatalf("got %v, want EINVALID on field %q", err, want)
	}
}

func TestRegistry(t *testing.T) {
	s, st, changed := setup(t)
	field(t, s.AddPatient(ctx, &vigil.Patient{ID: "a b"}), "id")
	field(t, s.AddPatient(ctx, &vigil.Patient{ID: "p1", Sex: "f"}), "sex")
	field(t, s.AddPatient(ctx, &vigil.Patient{ID: "p1", BirthDate: "1950-13-01"}), "birthDate")
	field(t, s.AddPatient(ctx, &vigil.Patient{ID: "p1", BirthDate: "3000-01-01"}), "birthDate")
	if err := s.AddPatient(ctx, &vigil.Patient{ID: "p1", BirthDate: "1950-02-03", Sex: "female"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPatient(ctx, &vigil.Patient{ID: "p1"}); vigil.ErrorCode(err) != vigil.ECONFLICT {
		t.Fatalf("duplicate patient: %v", err)
	}

	_, err := s.AddDevice(ctx, &vigil.Device{ID: "d1", Kind: "toaster"})
	field(t, err, "kind")
	secret, err := s.AddDevice(ctx, &vigil.Device{ID: "d1", Kind: vigil.DeviceWearable})
	if err != nil || len(secret) < 40 {
		t.Fatalf("add device: %q %v", secret, err)
	}
	d, _ := st.FindDeviceByID(ctx, "d1")
	if d.SecretHash == "" || d.SecretHash == secret {
		t.Fatal("secret not hashed")
	}
	if _, err := s.Auth.Device(ctx, "d1", secret); err != nil {
		t.Fatal(err)
	}
	s2, err := s.RotateDeviceSecret(ctx, "d1")
	if err != nil || s2 == secret {
		t.Fatal(err)
	}
	if _, err := s.Auth.Device(ctx, "d1", secret); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
		t.Fatalf("old secret works after rotation: %v", err)
	}
	if _, err := s.Auth.Device(ctx, "d1", s2); err != nil {
		t.Fatal(err)
	}
	if err := s.Assign(ctx, "d1", "p1", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Assign(ctx, "d1", "nobody", time.Time{}); vigil.ErrorCode(err) != vigil.ENOTFOUND {
		t.Fatalf("assign to unknown patient: %v", err)
	}
	if len(*changed) != 2 {
		t.Fatalf("OnDeviceChanged calls: %v", *changed)
	}

	field(t, s.AddUser(ctx, &vigil.User{ID: "n1", Role: "janitor"}, "long enough password"), "role")
	field(t, s.AddUser(ctx, &vigil.User{ID: "n1", Role: vigil.RoleNurse}, "short"), "password")
	field(t, s.AddUser(ctx, &vigil.User{ID: "pt", Role: vigil.RolePatient}, "long enough password"), "patient")
	field(t, s.AddUser(ctx, &vigil.User{ID: "n1", Role: vigil.RoleNurse, PatientID: "p1"}, "long enough password"), "patient")
	if err := s.AddUser(ctx, &vigil.User{ID: "n1", Role: vigil.RoleNurse}, "long enough password"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser(ctx, &vigil.User{ID: "pt", Role: vigil.RolePatient, PatientID: "p1"}, "long enough password"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Auth.Login(ctx, "n1", "long enough password"); err != nil {
		t.Fatal(err)
	}
	tok, rec, err := s.CreateToken(ctx, "n1", TokenSpec{Name: "cli", TTL: time.Hour})
	if err != nil || rec.Kind != "api" {
		t.Fatal(err)
	}
	if p, err := s.Auth.Principal(ctx, tok); err != nil || p.Role != vigil.RoleNurse {
		t.Fatalf("principal: %v %v", p, err)
	}
}

// An enrollment code works once, before it expires.
func TestEnrollmentCodeExpires(t *testing.T) {
	s, _, _ := setup(t)
	now := time.Now()
	s.Now = func() time.Time { return now }
	if _, err := s.AddDevice(ctx, &vigil.Device{ID: "w1", Kind: vigil.DeviceWearable}); err != nil {
		t.Fatal(err)
	}
	code, exp, err := s.EnrollmentCode(ctx, "w1", time.Hour)
	if err != nil || !exp.Equal(now.Add(time.Hour).UTC()) {
		t.Fatalf("code: %v %v", exp, err)
	}
	now = now.Add(61 * time.Minute)
	if _, err := s.Enroll(ctx, "w1", code); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
		t.Fatalf("expired code: %v", err)
	}
	if _, _, err := s.EnrollmentCode(ctx, "w1", 31*24*time.Hour); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Fatalf("31 days: %v", err)
	}
	code, _, _ = s.EnrollmentCode(ctx, "w1", 0)
	secret, err := s.Enroll(ctx, "w1", code)
	if err != nil || secret == "" {
		t.Fatalf("enroll: %v", err)
	}
	if d, err := s.Auth.Device(ctx, "w1", secret); err != nil || d.ID != "w1" {
		t.Fatalf("the enrolled secret: %v", err)
	}
}
