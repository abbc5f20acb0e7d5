// Package admin holds the registry operations an administrator performs:
// patients, devices and their secrets, assignments, users and API tokens.
// The CLI uses it directly on a data directory when the server is stopped;
// the admin API (internal/httpapi) uses it when the server runs, so both
// validate the same way.
package admin

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"github.com/vigil-iomt/vigil/internal/devcmd"
	"slices"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/auth"
)

// Store is what the service changes.
type Store interface {
	vigil.PatientStore
	vigil.DeviceStore
	vigil.UserStore
}

// Service performs registry operations.
type Service struct {
	Store Store
	Auth  *auth.Authenticator
	Now   func() time.Time
	// OnDeviceChanged, if set, is called after a device's secret or
	// assignment changed (the node drops its caches).
	OnDeviceChanged func(id string)
	// OnCredentialChanged, if set, is called after a device's secret was
	// rotated or the device revoked (the node disconnects its sessions).
	OnCredentialChanged func(id string)
	// CommandKey signs device commands; PublishCommand sends one to a
	// device (nil: commands cannot be sent).
	CommandKey     ed25519.PrivateKey
	PublishCommand func(deviceID string, payload []byte) error
}

// MinPasswordLen is the shortest password AddUser accepts.
const MinPasswordLen = 12

func (s *Service) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Service) changed(id string) {
	if s.OnDeviceChanged != nil {
		s.OnDeviceChanged(id)
	}
}

// credentialChanged tells everyone holding the device's credential that
// it changed: the authenticator's cache, the device observers, and the
// broker (which closes the device's sessions).
func (s *Service) credentialChanged(id string) {
	if s.Auth != nil {
		s.Auth.ForgetDevice(id)
	}
	s.changed(id)
	if s.OnCredentialChanged != nil {
		s.OnCredentialChanged(id)
	}
}

// AddPatient validates and registers a patient.
func (s *Service) AddPatient(ctx context.Context, p *vigil.Patient) error {
	if !vigil.ValidID(p.ID) {
		return vigil.FieldErrorf("id", "invalid", "patient id %q: use letters, digits and '-', up to 48 characters, starting with a letter or digit", p.ID)
	}
	if err := p.Validate(s.now()); err != nil {
		return err
	}
	return s.Store.CreatePatient(ctx, p)
}

func validKind(k string) bool {
	switch k {
	case vigil.DeviceBedsideMonitor, vigil.DeviceWearable, vigil.DeviceBPCuff, vigil.DeviceGlucometer, vigil.DeviceThermometer, vigil.DeviceScale, vigil.DeviceGateway, vigil.DeviceNurseCall, vigil.DevicePillBottle, vigil.DeviceEdge:
		return true
	}
	return false
}

// AddDevice registers a device and returns its new secret. Only an
// argon2id hash of the secret is stored; the secret cannot be shown again
// (RotateDeviceSecret makes a new one).
func (s *Service) AddDevice(ctx context.Context, d *vigil.Device) (string, error) {
	if !vigil.ValidID(d.ID) {
		return "", vigil.FieldErrorf("id", "invalid", "device id %q: use letters, digits and '-', up to 48 characters, starting with a letter or digit", d.ID)
	}
	if !validKind(d.Kind) {
		return "", vigil.FieldErrorf("kind", "invalid", "device kind %q: use bedside-monitor, wearable, bp-cuff, glucometer, thermometer, scale, gateway, nurse-call, pill-bottle or edge", d.Kind)
	}
	if (d.Kind == vigil.DeviceEdge) != (d.Serves != nil) {
		return "", vigil.FieldErrorf("serves", "invalid", "an edge gateway (kind edge) says which wards or patients it serves (serves), and only an edge does")
	}
	secret := auth.NewSecret()
	h, err := auth.HashDeviceSecret(secret)
	if err != nil {
		return "", err
	}
	d.SecretHash = h
	if err := s.Store.CreateDevice(ctx, d); err != nil {
		return "", err
	}
	return secret, nil
}

// RotateDeviceSecret gives a device a new secret and returns it; the old
// one stops working at once.
func (s *Service) RotateDeviceSecret(ctx context.Context, id string) (string, error) {
	d, err := s.Store.FindDeviceByID(ctx, id)
	if err != nil {
		return "", err
	}
	secret := auth.NewSecret()
	if d.SecretHash, err = auth.HashDeviceSecret(secret); err != nil {
		return "", err
	}
	d.Revoked = false
	if err := s.Store.UpdateDevice(ctx, d, d.Version); err != nil {
		return "", err
	}
	s.credentialChanged(id)
	return secret, nil
}

// EnrollmentCode issues a one-time code the device exchanges for its
// secret (Enroll) within ttl (default 24 h, at most 30 days): give it to
// whoever sets the device up instead of the secret. A new code replaces
// an unused one.
func (s *Service) EnrollmentCode(ctx context.Context, id string, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	if ttl > 30*24*time.Hour {
		return "", time.Time{}, vigil.FieldErrorf("ttl", "invalid", "an enrollment code lasts at most 30 days")
	}
	d, err := s.Store.FindDeviceByID(ctx, id)
	if err != nil {
		return "", time.Time{}, err
	}
	code := "vge_" + auth.NewSecret()
	sum := sha256.Sum256([]byte(code))
	d.EnrollHash, d.EnrollExpires = sum[:], s.now().Add(ttl).UTC()
	if err := s.Store.UpdateDevice(ctx, d, d.Version); err != nil {
		return "", time.Time{}, err
	}
	return code, d.EnrollExpires, nil
}

// Enroll exchanges a device's one-time enrollment code for a new secret
// (returned once); the code is spent. EUNAUTHORIZED for a wrong, used or
// expired code.
func (s *Service) Enroll(ctx context.Context, id, code string) (string, error) {
	bad := vigil.Errorf(vigil.EUNAUTHORIZED, "unknown, used or expired enrollment code: ask for a new one (vigil device enroll)")
	d, err := s.Store.FindDeviceByID(ctx, id)
	if vigil.ErrorCode(err) == vigil.ENOTFOUND {
		return "", bad
	}
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(code))
	if len(d.EnrollHash) == 0 || subtle.ConstantTimeCompare(sum[:], d.EnrollHash) != 1 || !s.now().Before(d.EnrollExpires) {
		return "", bad
	}
	secret := auth.NewSecret()
	if d.SecretHash, err = auth.HashDeviceSecret(secret); err != nil {
		return "", err
	}
	d.EnrollHash, d.EnrollExpires, d.Revoked = nil, time.Time{}, false
	if err := s.Store.UpdateDevice(ctx, d, d.Version); err != nil { // the version check spends the code once
		return "", err
	}
	s.credentialChanged(id)
	return secret, nil
}

// SetDeviceCert makes the certificate with serial (hex, issued by Vigil's
// CA) the device's current one: the device may connect with it, any
// earlier certificate stops working and its sessions are closed.
func (s *Service) SetDeviceCert(ctx context.Context, id, serial string) error {
	d, err := s.Store.FindDeviceByID(ctx, id)
	if err != nil {
		return err
	}
	d.CertSerial = serial
	if err := s.Store.UpdateDevice(ctx, d, d.Version); err != nil {
		return err
	}
	s.credentialChanged(id)
	return nil
}

// RevokeDevice takes a device's credential away at once: its secret is
// deleted, it is marked revoked, and connected sessions are closed. A
// later RotateDeviceSecret re-admits it with a new secret.
func (s *Service) RevokeDevice(ctx context.Context, id string) error {
	d, err := s.Store.FindDeviceByID(ctx, id)
	if err != nil {
		return err
	}
	d.SecretHash, d.CertSerial, d.Revoked = "", "", true
	if err := s.Store.UpdateDevice(ctx, d, d.Version); err != nil {
		return err
	}
	s.credentialChanged(id)
	return nil
}

// Assign assigns a device to a patient from the given time on (zero: now).
func (s *Service) Assign(ctx context.Context, deviceID, patientID string, from time.Time) error {
	if from.IsZero() {
		from = s.now()
	}
	if err := s.Store.AssignDevice(ctx, deviceID, patientID, from); err != nil {
		return err
	}
	s.changed(deviceID)
	return nil
}

// AddUser validates and registers a user with a password (argon2id).
// Patients' accounts must name their patient record.
func (s *Service) AddUser(ctx context.Context, u *vigil.User, password string) error {
	if !vigil.ValidID(u.ID) {
		return vigil.FieldErrorf("id", "invalid", "user id %q: use letters, digits and '-', up to 48 characters", u.ID)
	}
	if !vigil.ValidUserRole(u.Role) {
		return vigil.FieldErrorf("role", "invalid", "role %q: use admin, clinician, nurse, patient or auditor", u.Role)
	}
	if u.Role == vigil.RolePatient {
		if u.PatientID == "" {
			return vigil.FieldErrorf("patient", "required", "a patient's account needs --patient with their patient id")
		}
		if _, err := s.Store.FindPatientByID(ctx, u.PatientID); err != nil {
			return err
		}
	} else if u.PatientID != "" {
		return vigil.FieldErrorf("patient", "invalid", "only accounts with role patient name a patient")
	}
	if len(u.Wards) > 0 && u.Role != vigil.RoleClinician && u.Role != vigil.RoleNurse {
		return vigil.FieldErrorf("wards", "invalid", "only clinicians and nurses have wards (care teams)")
	}
	u.BreakGlass = nil
	if len([]rune(password)) < MinPasswordLen {
		return vigil.FieldErrorf("password", "too-short", "the password must have at least %d characters", MinPasswordLen)
	}
	h, err := auth.HashSecret(password)
	if err != nil {
		return err
	}
	u.PasswordHash = h
	return s.Store.CreateUser(ctx, u)
}

// TokenSpec describes an API token to issue.
type TokenSpec struct {
	Name string
	TTL  time.Duration // 0: no expiry
	// Scopes limit the token to the FHIR API and what they allow (SMART on
	// FHIR, e.g. user/Observation.read); Patient is the launch patient of
	// patient/ scopes.
	Scopes  []string
	Patient string
}

// CreateToken issues an API token for a user. The token string is
// returned once; only its hash is stored.
func (s *Service) CreateToken(ctx context.Context, userID string, spec TokenSpec) (string, *vigil.Token, error) {
	if len(spec.Scopes) == 0 {
		if spec.Patient != "" {
			return "", nil, vigil.FieldErrorf("patient", "invalid", "a launch patient goes with patient/ scopes (--scope patient/*.read)")
		}
		return s.Auth.IssueToken(ctx, userID, "api", spec.Name, spec.TTL)
	}
	if spec.Patient != "" {
		if _, err := s.Store.FindPatientByID(ctx, spec.Patient); err != nil {
			return "", nil, err
		}
	}
	return s.Auth.IssueScopedToken(ctx, userID, spec.Name, spec.TTL, spec.Scopes, spec.Patient)
}

// EnrollTOTP gives a user a new authenticator secret: the otpauth:// URL
// (for a QR code) and the secret, shown once.
func (s *Service) EnrollTOTP(ctx context.Context, userID string) (url, secret string, err error) {
	return s.Auth.EnrollTOTP(ctx, userID, "Vigil")
}

// ShareLink is a time-limited link that shows one patient, read-only, to a
// named external clinician (a remote consultation). URL is shown once.
type ShareLink struct {
	ID      string    `json:"id"`
	Patient string    `json:"patient"`
	Guest   string    `json:"guest"`
	Reason  string    `json:"reason"`
	Expires time.Time `json:"expires"`
	Token   string    `json:"token,omitempty"` // the link's secret: /share/{token}
}

// CreateShare makes a share link for hours (1 to 72) on behalf of maker.
func (s *Service) CreateShare(ctx context.Context, maker, patientID, guest, reason string, hours int) (*ShareLink, error) {
	if len(strings.TrimSpace(guest)) < 3 {
		return nil, vigil.FieldErrorf("guest", "required", "name the clinician the link is for (for example \"Dr Ana Silva, St Elsewhere cardiology\"): it is audited")
	}
	if len(strings.TrimSpace(reason)) < 10 {
		return nil, vigil.FieldErrorf("reason", "required", "say why the patient is shared (at least 10 characters): it is audited")
	}
	if hours == 0 {
		hours = 4
	}
	if hours < 1 || hours > 72 {
		return nil, vigil.FieldErrorf("hours", "invalid", "a share link lasts 1 to 72 hours")
	}
	if _, err := s.Store.FindPatientByID(ctx, patientID); err != nil {
		return nil, err
	}
	tok, t, err := s.Auth.IssueShare(ctx, maker, patientID, guest, reason, time.Duration(hours)*time.Hour)
	if err != nil {
		return nil, err
	}
	return &ShareLink{ID: t.ID, Patient: patientID, Guest: guest, Reason: reason, Expires: t.Expires, Token: tok}, nil
}

// RevokeShare ends a share link at once; its maker or an admin may.
func (s *Service) RevokeShare(ctx context.Context, p *vigil.Principal, id string) error {
	t, err := s.Store.FindTokenByID(ctx, id)
	if err != nil || t.Kind != "share" {
		return vigil.Errorf(vigil.ENOTFOUND, "no share link %s", id)
	}
	if t.UserID != p.UserID && p.Role != vigil.RoleAdmin {
		return vigil.Errorf(vigil.EFORBIDDEN, "only the clinician who made share link %s, or an admin, may end it", id)
	}
	return s.Auth.RevokeToken(ctx, id)
}

// SendCommand signs a command for a device with the next counter, records
// it on the device and publishes it. The device applies it only if the
// signature verifies and the counter is above the last it applied.
func (s *Service) SendCommand(ctx context.Context, by, deviceID, typ string, params json.RawMessage, ttl time.Duration) (*vigil.DeviceCommand, error) {
	if s.CommandKey == nil || s.PublishCommand == nil {
		return nil, vigil.Errorf(vigil.EUNAVAILABLE, "this server sends no device commands")
	}
	if typ == "" || len(typ) > 64 || strings.ContainsAny(typ, " \n") {
		return nil, vigil.FieldErrorf("type", "invalid", "a command type is a short word such as set-interval")
	}
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	if ttl > 24*time.Hour {
		return nil, vigil.FieldErrorf("ttl", "invalid", "a command may wait at most 24 hours for its device")
	}
	for attempt := 0; ; attempt++ {
		d, err := s.Store.FindDeviceByID(ctx, deviceID)
		if err != nil {
			return nil, err
		}
		if d.Revoked {
			return nil, vigil.Errorf(vigil.EINVALID, "device %s is revoked", deviceID)
		}
		now := s.now().UTC()
		c := &devcmd.Command{Device: d.ID, Seq: d.CommandSeq + 1, Type: typ, Params: params, Issued: now, Expires: now.Add(ttl)}
		raw, err := devcmd.Sign(s.CommandKey, c)
		if err != nil {
			return nil, vigil.FieldErrorf("params", "invalid", "%v", err)
		}
		dc := vigil.DeviceCommand{Seq: c.Seq, Type: typ, Params: string(c.Params), By: by, Issued: c.Issued, Expires: c.Expires, Status: vigil.CommandSent}
		d.CommandSeq = c.Seq
		d.Commands = append(d.Commands, dc)
		if n := len(d.Commands); n > 50 {
			d.Commands = d.Commands[n-50:]
		}
		// The counter is durable before the command leaves: a restart
		// never reuses one.
		err = s.Store.UpdateDevice(ctx, d, d.Version)
		if vigil.ErrorCode(err) == vigil.ECONFLICT && attempt < 3 {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := s.PublishCommand(d.ID, raw); err != nil {
			return nil, err
		}
		return &dc, nil
	}
}

// CommandAck records a device's answer to a command it was sent; an
// answer for a counter that is not waiting is ignored (and reported).
func (s *Service) CommandAck(ctx context.Context, deviceID string, payload []byte) error {
	var a devcmd.Ack
	if err := json.Unmarshal(payload, &a); err != nil || (a.Status != vigil.CommandApplied && a.Status != vigil.CommandRejected) {
		return vigil.Errorf(vigil.EINVALID, "a command ack is {\"seq\": N, \"status\": \"applied\" | \"rejected\", \"reason\": \"...\"}")
	}
	for attempt := 0; ; attempt++ {
		d, err := s.Store.FindDeviceByID(ctx, deviceID)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(d.Commands, func(c vigil.DeviceCommand) bool { return c.Seq == a.Seq })
		if i < 0 || d.Commands[i].Status != vigil.CommandSent {
			return vigil.Errorf(vigil.EINVALID, "device %s answered command %d, which is not waiting for an answer", deviceID, a.Seq)
		}
		d.Commands[i].Status, d.Commands[i].Reason, d.Commands[i].Answered = a.Status, a.Reason, s.now().UTC()
		err = s.Store.UpdateDevice(ctx, d, d.Version)
		if vigil.ErrorCode(err) == vigil.ECONFLICT && attempt < 3 {
			continue
		}
		return err
	}
}
