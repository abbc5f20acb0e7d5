// Package auth authenticates devices (id and secret), users (id and
// password) and API or session tokens. Secrets and passwords are stored
// only as argon2id hashes; tokens only as SHA-256 hashes of their secret
// part (they are long random strings, so a fast hash is safe for them).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/argon2"
	"golang.org/x/sync/singleflight"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/certs"
	"github.com/vigil-iomt/vigil/internal/smart"
)

// Store is what the Authenticator reads.
type Store interface {
	FindDeviceByID(ctx context.Context, id string) (*vigil.Device, error)
	FindUserByID(ctx context.Context, id string) (*vigil.User, error)
	UpdateUser(ctx context.Context, u *vigil.User, version int) error
	CreateToken(ctx context.Context, t *vigil.Token) error
	FindTokenByID(ctx context.Context, id string) (*vigil.Token, error)
	DeleteToken(ctx context.Context, id string) error
}

// Argon2id parameters: OWASP's recommended minimum (19 MiB, 2 passes, 1
// lane). They are recorded in every hash, so raising them later keeps old
// hashes verifiable.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
	saltLen      = 16
)

// Device secrets are 256-bit random strings Vigil makes (NewSecret), never
// chosen by a person. Memory-hard parameters slow down guessing of
// low-entropy passwords; against 2^256 candidates they add nothing, while
// they cost 38 ms of CPU per verification here — 6 minutes of both cores
// for 10,000 devices reconnecting after a restart. So device secrets get
// argon2id with its minimum cost (64 KiB, 1 pass: 0.14 ms), which keeps
// a stolen registry as useless as before (preimage resistance) and lets a
// fleet reconnect in seconds (docs/decisions/0003-device-secret-hashing.md).
const (
	deviceArgonTime   = 1
	deviceArgonMemory = 64
)

// HashSecret returns the argon2id hash of a person's password or secret
// in PHC string form: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
// (unpadded base64).
func HashSecret(secret string) (string, error) {
	return hashArgon2id(secret, argonTime, argonMemory)
}

// HashDeviceSecret returns the argon2id hash of a device secret from
// NewSecret (PHC string form, minimum cost: see deviceArgonTime). Only
// for secrets Vigil generated.
func HashDeviceSecret(secret string) (string, error) {
	if len(secret) < 43 {
		return "", errors.New("device secrets must come from NewSecret (256 random bits)")
	}
	return hashArgon2id(secret, deviceArgonTime, deviceArgonMemory)
}

func hashArgon2id(secret string, t, m uint32) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(secret), salt, t, m, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, m, t, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// verifySecret is VerifySecret (a variable so tests can count calls).
var verifySecret = VerifySecret

// VerifySecret reports whether secret matches hash (from HashSecret), in
// constant time with respect to the secret.
func VerifySecret(hash, secret string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errors.New("not an argon2id hash")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return false, errors.New("unsupported argon2 version")
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false, errors.New("bad argon2id parameters")
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false, errors.New("bad argon2id salt")
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, errors.New("bad argon2id hash")
	}
	got := argon2.IDKey([]byte(secret), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// NewSecret returns a new random device secret: 32 bytes, base64url.
func NewSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Options configure an Authenticator.
type Options struct {
	Now        func() time.Time
	Registerer prometheus.Registerer
	// LoginFailures is how many failed logins per user are allowed within
	// LockoutWindow before the account is locked (default 5) — and stays
	// locked until the oldest of them is LockoutWindow old.
	LoginFailures int
	// LockoutWindow: default 15 minutes.
	LockoutWindow time.Duration
}

// Authenticator checks credentials. It is safe for concurrent use.
type Authenticator struct {
	store Store
	now   func() time.Time
	max   int
	win   time.Duration

	mu       sync.Mutex
	devices  map[string][32]byte // device id → SHA-256 of a verified secret
	failures map[string][]time.Time
	// usedCodes: the last authenticator code each user gave, with its time
	// step, so that a code cannot be replayed.
	usedCodes map[string]string

	failed *prometheus.CounterVec
	// verifying shares one argon2id verification among concurrent
	// requests with the same device and secret (a device's first burst of
	// HTTP requests, each 64 ms of CPU and memory otherwise).
	verifying singleflight.Group
}

// NewAuthenticator returns an Authenticator over st.
func NewAuthenticator(st Store, o Options) *Authenticator {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LoginFailures <= 0 {
		o.LoginFailures = 5
	}
	if o.LockoutWindow <= 0 {
		o.LockoutWindow = 15 * time.Minute
	}
	a := &Authenticator{
		store: st, now: o.Now, max: o.LoginFailures, win: o.LockoutWindow,
		devices:   make(map[string][32]byte),
		failures:  make(map[string][]time.Time),
		usedCodes: make(map[string]string),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_auth_failures_total", Help: "Refused credentials by kind (device, login, token).",
		}, []string{"kind"}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(a.failed)
	}
	return a
}

var errBadCredentials = vigil.Errorf(vigil.EUNAUTHORIZED, "unknown device or wrong secret")

// Device returns the device if secret is its secret; EUNAUTHORIZED
// otherwise (without saying which part was wrong). A verified secret is
// remembered (as a SHA-256 hash) so that reconnects and per-request HTTP
// Basic authentication do not pay argon2id's deliberate cost each time;
// ForgetDevice drops it when the secret changes.
func (a *Authenticator) Device(ctx context.Context, deviceID, secret string) (*vigil.Device, error) {
	if deviceID == "" || secret == "" {
		a.failed.WithLabelValues("device").Inc()
		return nil, errBadCredentials
	}
	d, err := a.admittedDevice(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(d.SecretHash + "\x00" + secret))
	a.mu.Lock()
	cached, ok := a.devices[deviceID]
	a.mu.Unlock()
	if ok && subtle.ConstantTimeCompare(cached[:], sum[:]) == 1 {
		return d, nil
	}
	if d.SecretHash == "" {
		a.failed.WithLabelValues("device").Inc()
		return nil, errBadCredentials
	}
	v, err, _ := a.verifying.Do(deviceID+"\x00"+string(sum[:]), func() (any, error) { return verifySecret(d.SecretHash, secret) })
	good, _ := v.(bool)
	if err != nil {
		return nil, vigil.Errorf(vigil.EINTERNAL, "device %s has an unreadable secret hash: rotate its secret", deviceID)
	}
	if !good {
		a.failed.WithLabelValues("device").Inc()
		return nil, errBadCredentials
	}
	if u, ok := a.store.(deviceUpdater); ok && !strings.Contains(d.SecretHash, fmt.Sprintf("$m=%d,t=%d,", deviceArgonMemory, deviceArgonTime)) {
		// A hash made with the password cost before device secrets had
		// their own: replace it, so the next reconnect after a restart is
		// cheap. Losing a race with an admin change is fine: it stays.
		if h, err := HashDeviceSecret(secret); err == nil {
			nd := *d
			nd.SecretHash = h
			if u.UpdateDevice(ctx, &nd, d.Version) == nil {
				if fresh, err := a.store.FindDeviceByID(ctx, deviceID); err == nil {
					d = fresh
				}
				sum = sha256.Sum256([]byte(d.SecretHash + "\x00" + secret))
			}
		}
	}
	a.mu.Lock()
	a.devices[deviceID] = sum
	a.mu.Unlock()
	return d, nil
}

// deviceUpdater is the store's device update, when it has one: used to
// move device secret hashes to the device cost.
type deviceUpdater interface {
	UpdateDevice(ctx context.Context, d *vigil.Device, version int) error
}

// ForgetDevice drops the remembered secret of a device.
func (a *Authenticator) ForgetDevice(id string) {
	a.mu.Lock()
	delete(a.devices, id)
	a.mu.Unlock()
}

// Login checks a user's password. EUNAUTHORIZED for an unknown user, a
// wrong password, a user without a password, or too many recent failures.
func (a *Authenticator) Login(ctx context.Context, userID, password string) (*vigil.User, error) {
	bad := vigil.Errorf(vigil.EUNAUTHORIZED, "unknown user or wrong password")
	now := a.now()
	a.mu.Lock()
	recent := a.failures[userID][:0]
	for _, t := range a.failures[userID] {
		if now.Sub(t) < a.win {
			recent = append(recent, t)
		}
	}
	a.failures[userID] = recent
	locked := len(recent) >= a.max
	var until time.Time
	if locked {
		until = recent[0].Add(a.win)
	}
	a.mu.Unlock()
	if locked {
		a.failed.WithLabelValues("login").Inc()
		return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "account locked after %d failed attempts: try again in %s, or ask an administrator", a.max, until.Sub(now).Round(time.Minute)+time.Minute)
	}
	fail := func() (*vigil.User, error) {
		a.failed.WithLabelValues("login").Inc()
		a.mu.Lock()
		a.failures[userID] = append(a.failures[userID], now)
		a.mu.Unlock()
		return nil, bad
	}
	u, err := a.store.FindUserByID(ctx, userID)
	if vigil.ErrorCode(err) == vigil.ENOTFOUND {
		// Spend the same time as a real check so timing does not reveal
		// which user ids exist.
		VerifySecret(dummyHash, password)
		return fail()
	}
	if err != nil {
		return nil, err
	}
	if u.PasswordHash == "" {
		VerifySecret(dummyHash, password)
		return fail()
	}
	ok, err := VerifySecret(u.PasswordHash, password)
	if err != nil || !ok {
		return fail()
	}
	a.mu.Lock()
	delete(a.failures, userID)
	a.mu.Unlock()
	return u, nil
}

var dummyHash, _ = HashSecret("timing equaliser")

// Token strings are "vgl_" + id + "_" + secret.
const tokenPrefix = "vgl_"

// IssueToken creates a token of the given kind ("api" or "session") for
// the user, valid for ttl (0: no expiry), and returns its string form
// (shown once) and its stored record.
func (a *Authenticator) IssueToken(ctx context.Context, userID, kind, name string, ttl time.Duration) (string, *vigil.Token, error) {
	return a.issue(ctx, &vigil.Token{UserID: userID, Kind: kind, Name: name}, ttl)
}

// IssueScopedToken creates an API token limited to SMART on FHIR scopes
// (see package smart). patient/ scopes need a launch patient: a patient's
// own account gets its own; anyone else's token must name one. system/
// scopes are for admins' backend services.
func (a *Authenticator) IssueScopedToken(ctx context.Context, userID, name string, ttl time.Duration, scopes []string, patient string) (string, *vigil.Token, error) {
	if len(scopes) == 0 {
		return "", nil, vigil.FieldErrorf("scopes", "required", "a scoped token needs at least one scope, e.g. user/Observation.read")
	}
	if err := smart.Check(scopes); err != nil {
		return "", nil, vigil.FieldErrorf("scopes", "invalid", "%v", err)
	}
	u, err := a.store.FindUserByID(ctx, userID)
	if err != nil {
		return "", nil, err
	}
	if u.Role == vigil.RolePatient {
		if patient != "" && patient != u.PatientID {
			return "", nil, vigil.FieldErrorf("patient", "invalid", "a patient's token can open only their own record (%s)", u.PatientID)
		}
		patient = u.PatientID
	}
	if smart.HasContext(scopes, smart.Patient) && patient == "" {
		return "", nil, vigil.FieldErrorf("patient", "required", "patient/ scopes open one patient's record: name the launch patient (--patient ID)")
	}
	if smart.HasContext(scopes, smart.System) && u.Role != vigil.RoleAdmin {
		return "", nil, vigil.FieldErrorf("scopes", "invalid", "system/ scopes are for backend services and need an admin user; use user/ scopes for %s", u.ID)
	}
	return a.issue(ctx, &vigil.Token{UserID: userID, Kind: "api", Name: name, Scopes: scopes, Patient: patient}, ttl)
}

func (a *Authenticator) issue(ctx context.Context, t *vigil.Token, ttl time.Duration) (string, *vigil.Token, error) {
	userID, kind := t.UserID, t.Kind
	if kind != "api" && kind != "session" && kind != "share" {
		return "", nil, vigil.FieldErrorf("kind", "invalid", "token kind must be api or session")
	}
	if ttl < 0 {
		return "", nil, vigil.FieldErrorf("ttl", "invalid", "a token's lifetime cannot be negative")
	}
	if _, err := a.store.FindUserByID(ctx, userID); err != nil {
		return "", nil, err
	}
	idb := make([]byte, 9)
	rand.Read(idb)
	secret := make([]byte, 32)
	rand.Read(secret)
	id := hex.EncodeToString(idb) // never contains '_', the separator
	sec := base64.RawURLEncoding.EncodeToString(secret)
	h := sha256.Sum256([]byte(sec))
	now := a.now().UTC()
	t.ID, t.Hash, t.Created = id, h[:], now
	if ttl > 0 {
		t.Expires = now.Add(ttl)
	}
	if err := a.store.CreateToken(ctx, t); err != nil {
		return "", nil, err
	}
	return tokenPrefix + id + "_" + sec, t, nil
}

// Principal returns who a token belongs to. EUNAUTHORIZED for a malformed,
// unknown, expired or revoked token, or one whose user is gone.
func (a *Authenticator) Principal(ctx context.Context, token string) (*vigil.Principal, error) {
	bad := func(msg string) (*vigil.Principal, error) {
		a.failed.WithLabelValues("token").Inc()
		return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "%s", msg)
	}
	id, sec, ok := splitToken(token)
	if !ok {
		return bad("malformed token")
	}
	t, err := a.store.FindTokenByID(ctx, id)
	if vigil.ErrorCode(err) == vigil.ENOTFOUND {
		return bad("unknown or revoked token")
	}
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(sec))
	if subtle.ConstantTimeCompare(h[:], t.Hash) != 1 {
		return bad("unknown or revoked token")
	}
	if !t.Expires.IsZero() && !a.now().Before(t.Expires) {
		return bad("token expired at " + t.Expires.Format(time.RFC3339) + ": log in again or create a new token")
	}
	p, err := a.UserPrincipal(ctx, t.UserID)
	if vigil.ErrorCode(err) == vigil.ENOTFOUND {
		return bad("the token's user no longer exists")
	}
	if err != nil {
		return nil, err
	}
	if t.Kind == "share" {
		// A share link opens one patient, read-only, to the external
		// clinician it names, while its maker's account exists.
		return &vigil.Principal{UserID: "share:" + t.ID, Role: vigil.RolePatient, PatientID: t.Patient, Guest: t.Name}, nil
	}
	p.Scopes, p.LaunchPatient = t.Scopes, t.Patient
	return p, nil
}

// IssueShare creates a share link's token: the named external clinician
// sees one patient, read-only, in the web app until ttl has passed.
func (a *Authenticator) IssueShare(ctx context.Context, maker, patientID, guest, reason string, ttl time.Duration) (string, *vigil.Token, error) {
	if ttl <= 0 {
		return "", nil, vigil.FieldErrorf("hours", "invalid", "a share link must end")
	}
	return a.issue(ctx, &vigil.Token{UserID: maker, Kind: "share", Name: guest, Patient: patientID, Reason: reason}, ttl)
}

// UserPrincipal returns what a user may do now (role, wards, open
// break-glass accesses), for work done on their behalf without a request
// (a subscription's notifications). ENOTFOUND for an unknown user.
func (a *Authenticator) UserPrincipal(ctx context.Context, userID string) (*vigil.Principal, error) {
	u, err := a.store.FindUserByID(ctx, userID)
	if err != nil {
		return nil, err
	}
	p := &vigil.Principal{UserID: u.ID, Role: u.Role, PatientID: u.PatientID, Wards: u.Wards}
	now := a.now()
	for _, g := range u.BreakGlass {
		if now.Before(g.Until) {
			p.Glass = append(p.Glass, g.Patient)
		}
	}
	return p, nil
}

// TokenID returns the id part of a token string, or "".
func TokenID(token string) string {
	id, _, _ := splitToken(token)
	return id
}

// splitToken splits "vgl_" + id + "_" + secret; ids are hex, secrets
// base64url (which may contain '_').
func splitToken(token string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || id == "" || secret == "" {
		return "", "", false
	}
	return id, secret, true
}

// RevokeToken deletes a token; ENOTFOUND if there is none.
func (a *Authenticator) RevokeToken(ctx context.Context, id string) error {
	return a.store.DeleteToken(ctx, id)
}

// Bearer returns the token of a request's Authorization Bearer header,
// or "". The API and FHIR take no cookies: a web session reaches the API
// only through the web app, which checks its CSRF token and idle timeout.
func Bearer(r *http.Request) string {
	if scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(tok)
	}
	return ""
}

// totpOpts are RFC 6238's defaults, as authenticator apps use them, with
// one period of clock skew either way.
var totpOpts = totp.ValidateOpts{Period: 30, Skew: 1, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// EnrollTOTP gives the user a new authenticator secret (replacing any)
// and returns the otpauth:// URL to show as a QR code, and the secret for
// typing in. Both are shown once.
func (a *Authenticator) EnrollTOTP(ctx context.Context, userID, issuer string) (url, secret string, err error) {
	u, err := a.store.FindUserByID(ctx, userID)
	if err != nil {
		return "", "", err
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: issuer, AccountName: userID, Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return "", "", err
	}
	u.TOTPSecret = key.Secret()
	if err := a.store.UpdateUser(ctx, u, u.Version); err != nil {
		return "", "", err
	}
	return key.URL(), key.Secret(), nil
}

// SecondFactor checks a signed-in user's authenticator code. A user with
// a second factor enrolled must give a valid code, used at most once;
// required (for clinicians and admins on a server that demands it) makes
// a user without one refused with how to enroll. A wrong code counts as a
// failed login (lockout).
func (a *Authenticator) SecondFactor(u *vigil.User, code string, required bool) error {
	if u.TOTPSecret == "" {
		if required {
			a.failed.WithLabelValues("login").Inc()
			return vigil.Errorf(vigil.EFORBIDDEN, "your account needs a second factor: ask an administrator to enroll one (vigil user totp %s)", u.ID)
		}
		return nil
	}
	now := a.now()
	code = strings.TrimSpace(code)
	ok, err := totp.ValidateCustom(code, u.TOTPSecret, now, totpOpts)
	a.mu.Lock()
	defer a.mu.Unlock()
	step := now.Unix() / 30
	if err == nil && ok && a.usedCodes[u.ID] != code+"@"+strconv.FormatInt(step, 10) && a.usedCodes[u.ID] != code+"@"+strconv.FormatInt(step-1, 10) {
		a.usedCodes[u.ID] = code + "@" + strconv.FormatInt(step, 10)
		return nil
	}
	a.failed.WithLabelValues("login").Inc()
	a.failures[u.ID] = append(a.failures[u.ID], now)
	return vigil.Errorf(vigil.EUNAUTHORIZED, "wrong or reused authenticator code")
}

// admittedDevice returns a registered device that is not revoked;
// unknown and revoked devices count as failed authentications.
func (a *Authenticator) admittedDevice(ctx context.Context, deviceID string) (*vigil.Device, error) {
	d, err := a.store.FindDeviceByID(ctx, deviceID)
	if vigil.ErrorCode(err) == vigil.ENOTFOUND {
		a.failed.WithLabelValues("device").Inc()
		return nil, errBadCredentials
	}
	if err != nil {
		return nil, err
	}
	if d.Revoked {
		a.failed.WithLabelValues("device").Inc()
		return nil, vigil.Errorf(vigil.EFORBIDDEN, "device %s is revoked", deviceID)
	}
	return d, nil
}

// DeviceByCert authenticates a device by the verified client certificate
// it connected with: the device must exist, not be revoked, and have that
// certificate (its serial) as its current one.
func (a *Authenticator) DeviceByCert(ctx context.Context, deviceID, serialHex string) (*vigil.Device, error) {
	d, err := a.admittedDevice(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	if d.CertSerial == "" || subtle.ConstantTimeCompare([]byte(d.CertSerial), []byte(serialHex)) != 1 {
		a.failed.WithLabelValues("device").Inc()
		return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "this certificate is not device %s's current one", deviceID)
	}
	return d, nil
}

// DeviceFromRequest authenticates the device making an HTTP request: by
// the verified client certificate it connected with (issued by Vigil's
// CA), else by HTTP Basic (device id and secret). It returns the device
// id; EUNAUTHORIZED when there are no or bad credentials.
func (a *Authenticator) DeviceFromRequest(r *http.Request) (string, error) {
	if id, serial, ok := certs.ClientIdentity(r.TLS); ok {
		if _, _, basic := r.BasicAuth(); !basic {
			if _, err := a.DeviceByCert(r.Context(), id, serial); err != nil {
				return "", err
			}
			return id, nil
		}
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", vigil.Errorf(vigil.EUNAUTHORIZED, "send the device id and secret with HTTP Basic authentication, or connect with the device's certificate")
	}
	if _, err := a.Device(r.Context(), user, pass); err != nil {
		return "", err
	}
	return user, nil
}
