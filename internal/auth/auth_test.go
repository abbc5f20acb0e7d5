package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

var ctx = context.Background()

func setup(t testing.TB) (*pebble.Store, *Authenticator, *time.Time) {
	t.Helper()
	o := pebble.DefaultOptions()
	o.CompactInterval = -1
	st, err := pebble.Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	return st, NewAuthenticator(st, Options{Now: func() time.Time { return now }}), &now
}

func TestHashAndVerify(t *testing.T) {
	h, err := HashSecret("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q", h)
	}
	h2, _ := HashSecret("s3cret")
	if h == h2 {
		t.Fatal("two hashes of one secret are equal: no salt")
	}
	for secret, want := range map[string]bool{"s3cret": true, "s3cre": false, "": false, "S3cret": false} {
		if ok, err := VerifySecret(h, secret); err != nil || ok != want {
			t.Errorf("verify %q = %v %v", secret, ok, err)
		}
	}
	for _, bad := range []string{"", "plain", "$argon2i$v=19$m=1,t=1,p=1$AA$AA", "$argon2id$v=19$m=x$AA$AA"} {
		if _, err := VerifySecret(bad, "x"); err == nil {
			t.Errorf("malformed hash %q accepted", bad)
		}
	}
}

func TestDevice(t *testing.T) {
	st, a, _ := setup(t)
	secret := NewSecret()
	h, _ := HashSecret(secret)
	if err := st.CreateDevice(ctx, &vigil.Device{ID: "mon-1", Kind: vigil.DeviceBedsideMonitor, SecretHash: h}); err != nil {
		t.Fatal(err)
	}
	if d, err := a.Device(ctx, "mon-1", secret); err != nil || d.ID != "mon-1" {
		t.Fatalf("good secret: %v %v", d, err)
	}
	// Cached path, then rotation: the old secret stops working once the
	// hash changes, even though it was cached.
	if _, err := a.Device(ctx, "mon-1", secret); err != nil {
		t.Fatal(err)
	}
	d, _ := st.FindDeviceByID(ctx, "mon-1")
	d.SecretHash, _ = HashSecret("new-secret")
	if err := st.UpdateDevice(ctx, d, d.Version); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Device(ctx, "mon-1", secret); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
		t.Fatalf("old secret after rotation: %v", err)
	}
	if _, err := a.Device(ctx, "mon-1", "new-secret"); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"mon-1", "wrong"}, {"ghost", secret}, {"mon-1", ""}, {"", ""}} {
		_, err := a.Device(ctx, c[0], c[1])
		if vigil.ErrorCode(err) != vigil.EUNAUTHORIZED || strings.Contains(vigil.ErrorMessage(err), "ghost") {
			t.Errorf("Device(%q, %q) = %v", c[0], c[1], err)
		}
	}
}

func TestLoginAndTokens(t *testing.T) {
	st, a, now := setup(t)
	h, _ := HashSecret("correct horse battery")
	if err := st.CreateUser(ctx, &vigil.User{ID: "dr", Role: vigil.RoleClinician, PasswordHash: h}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateUser(ctx, &vigil.User{ID: "svc", Role: vigil.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	if u, err := a.Login(ctx, "dr", "correct horse battery"); err != nil || u.ID != "dr" {
		t.Fatalf("login: %v", err)
	}
	for _, c := range [][2]string{{"dr", "wrong"}, {"nobody", "x"}, {"svc", ""}} {
		if _, err := a.Login(ctx, c[0], c[1]); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
			t.Errorf("Login(%q) = %v", c[0], err)
		}
	}
	// Locked after 5 failures within 15 minutes, even with the right
	// password, until the oldest failure is 15 minutes old.
	for i := 0; i < 4; i++ {
		a.Login(ctx, "dr", "wrong")
	}
	*now = now.Add(5 * time.Minute)
	a.Login(ctx, "dr", "wrong")
	if _, err := a.Login(ctx, "dr", "correct horse battery"); !strings.Contains(vigil.ErrorMessage(err), "account locked after 5 failed attempts") {
		t.Fatalf("no lockout: %v", err)
	}
	*now = now.Add(9 * time.Minute)
	if _, err := a.Login(ctx, "dr", "correct horse battery"); err == nil {
		t.Fatal("unlocked before 15 minutes")
	}
	*now = now.Add(61 * time.Second)
	if _, err := a.Login(ctx, "dr", "correct horse battery"); err != nil {
		t.Fatalf("after lockout: %v", err)
	}

	tok, rec, err := a.IssueToken(ctx, "dr", "api", "laptop", time.Hour)
	if err != nil || rec.UserID != "dr" || !strings.HasPrefix(tok, "vgl_"+rec.ID+"_") || TokenID(tok) != rec.ID {
		t.Fatalf("issue: %q %+v %v", tok, rec, err)
	}
	stored, _ := st.FindTokenByID(ctx, rec.ID)
	if strings.Contains(tok, string(stored.Hash)) || len(stored.Hash) != 32 {
		t.Fatal("token stored in the clear")
	}
	p, err := a.Principal(ctx, tok)
	if err != nil || p.UserID != "dr" || p.Role != vigil.RoleClinician {
		t.Fatalf("principal: %+v %v", p, err)
	}
	last := "A"
	if strings.HasSuffix(tok, "A") {
		last = "B"
	}
	for _, bad := range []string{"", "vgl_", "Bearer x", tok[:len(tok)-1] + last, "vgl_aaaaaaaaaaaaaaaaaa_x", "vgl__x", "vgl_ab_"} {
		if _, err := a.Principal(ctx, bad); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
			t.Errorf("Principal(%q) = %v", bad, err)
		}
	}
	*now = now.Add(time.Hour)
	if _, err := a.Principal(ctx, tok); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
		t.Fatalf("expired token accepted: %v", err)
	}
	// Token ids survive the round trip whatever random bytes they hold
	// (the web app revokes sessions by the id it parses from the cookie).
	for i := 0; i < 200; i++ {
		tok, rec, err := a.IssueToken(ctx, "dr", "session", "", 0)
		if err != nil || TokenID(tok) != rec.ID {
			t.Fatalf("token %q: id %q, parsed %q (%v)", tok, rec.ID, TokenID(tok), err)
		}
	}
	tok2, rec2, _ := a.IssueToken(ctx, "dr", "session", "", 0)
	if _, err := a.Principal(ctx, tok2); err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeToken(ctx, rec2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Principal(ctx, tok2); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
		t.Fatalf("revoked token accepted: %v", err)
	}
	if _, _, err := a.IssueToken(ctx, "ghost", "api", "", 0); vigil.ErrorCode(err) != vigil.ENOTFOUND {
		t.Fatalf("token for unknown user: %v", err)
	}
}

func TestBearer(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer abc")
	r.AddCookie(&http.Cookie{Name: "vigil_session", Value: "cookie-token"})
	if got := Bearer(r); got != "abc" {
		t.Fatalf("bearer: %q", got)
	}
	r.Header.Set("Authorization", "Basic abc")
	if got := Bearer(r); got != "" {
		t.Fatalf("basic taken as bearer: %q", got)
	}
	r.Header.Del("Authorization")
	if got := Bearer(r); got != "" {
		t.Fatalf("a session cookie taken as a bearer token: %q", got)
	}
}

// BenchmarkDeviceAuth compares a full argon2id verification (first
// connect) with the cached path (reconnects, HTTP Basic per request).
func BenchmarkDeviceAuth(b *testing.B) {
	st, a, _ := setup(b)
	h, _ := HashSecret("secret")
	st.CreateDevice(ctx, &vigil.Device{ID: "d", Kind: vigil.DeviceWearable, SecretHash: h})
	b.Run("argon2id", func(b *testing.B) {
		for b.Loop() {
			a.ForgetDevice("d")
			if _, err := a.Device(ctx, "d", "secret"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := a.Device(ctx, "d", "secret"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestSecondFactor(t *testing.T) {
	st, a, now := setup(t)
	h, _ := HashSecret("correct horse battery")
	if err := st.CreateUser(ctx, &vigil.User{ID: "dr", Role: vigil.RoleClinician, PasswordHash: h}); err != nil {
		t.Fatal(err)
	}
	u, _ := st.FindUserByID(ctx, "dr")
	if err := a.SecondFactor(u, "", false); err != nil {
		t.Fatalf("not enrolled, not required: %v", err)
	}
	if err := a.SecondFactor(u, "", true); vigil.ErrorCode(err) != vigil.EFORBIDDEN || !strings.Contains(err.Error(), "vigil user totp dr") {
		t.Fatalf("not enrolled, required: %v", err)
	}
	url, secret, err := a.EnrollTOTP(ctx, "dr", "Vigil")
	if err != nil || !strings.HasPrefix(url, "otpauth://totp/Vigil:dr?") || secret == "" {
		t.Fatalf("enroll: %q %v", url, err)
	}
	u, _ = st.FindUserByID(ctx, "dr")
	if u.TOTPSecret != secret {
		t.Fatal("secret not stored")
	}
	if err := a.SecondFactor(u, "000000", false); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
		t.Fatalf("wrong code: %v", err)
	}
	code, _ := totp.GenerateCode(secret, *now)
	if err := a.SecondFactor(u, code, true); err != nil {
		t.Fatalf("right code: %v", err)
	}
	if err := a.SecondFactor(u, code, true); err == nil {
		t.Fatal("a code was accepted twice")
	}
	*now = now.Add(30 * time.Second)
	code, _ = totp.GenerateCode(secret, *now)
	if err := a.SecondFactor(u, code, true); err != nil {
		t.Fatalf("next code: %v", err)
	}
}

// Misuse of tokens: malformed, forged, expired and revoked ones are all
// refused with EUNAUTHORIZED, never another error or a panic.
func TestTokenMisuse(t *testing.T) {
	st, a, now := setup(t)
	if err := st.CreateUser(ctx, &vigil.User{ID: "dr", Role: vigil.RoleClinician}); err != nil {
		t.Fatal(err)
	}
	good, rec, err := a.IssueToken(ctx, "dr", "api", "t", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, orec, _ := a.IssueToken(ctx, "dr", "api", "t2", time.Hour)
	id, secret, _ := strings.Cut(strings.TrimPrefix(good, "vgl_"), "_")
	for _, tok := range []string{
		"", "vgl_", "vgl__", "vgl_" + id, "vgl_" + id + "_", "Bearer " + good, good + "x", strings.ToUpper(good),
		"vgl_" + id + "_" + strings.Repeat("A", len(secret)), // right id, forged secret
		"vgl_" + orec.ID + "_" + secret,                      // another token's id with this secret
		"vgl_" + strings.Repeat("f", 4096) + "_" + secret,    // oversized
		"vgl_../../u/dr_" + secret, "vgl_\x00_\x00",
	} {
		if _, err := a.Principal(ctx, tok); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
			t.Errorf("token %q: %v, want unauthorized", tok, err)
		}
	}
	if _, err := a.Principal(ctx, other); err != nil {
		t.Fatalf("a good token: %v", err)
	}
	*now = now.Add(61 * time.Minute)
	if _, err := a.Principal(ctx, good); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	*now = now.Add(-61 * time.Minute)
	if err := a.RevokeToken(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Principal(ctx, good); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
		t.Fatalf("revoked token: %v", err)
	}
	// Device credentials: unknown device, empty or wrong secret.
	for _, c := range [][2]string{{"", "x"}, {"nobody", "x"}, {"nobody", ""}} {
		if _, err := a.Device(ctx, c[0], c[1]); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
			t.Errorf("device %q: %v", c[0], err)
		}
	}
}

func FuzzPrincipal(f *testing.F) {
	f.Add("vgl_0123abcd_c2VjcmV0")
	f.Add("vgl__")
	f.Add("")
	_, a, _ := setup(f)
	f.Fuzz(func(t *testing.T, tok string) {
		if _, err := a.Principal(ctx, tok); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
			t.Fatalf("token %q: %v", tok, err)
		}
	})
}

// A device's first burst of concurrent requests shares one argon2id
// verification (each costs tens of milliseconds and its memory).
func TestConcurrentFirstVerificationShared(t *testing.T) {
	st, a, _ := setup(t)
	secret := "a device secret of some length"
	h, err := HashSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateDevice(context.Background(), &vigil.Device{ID: "w1", Kind: vigil.DeviceWearable, SecretHash: h}); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	release := make(chan struct{})
	verifySecret = func(hash, s string) (bool, error) {
		calls.Add(1)
		<-release // every caller arrives while this one is verifying
		return VerifySecret(hash, s)
	}
	defer func() { verifySecret = VerifySecret }()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := a.Device(context.Background(), "w1", secret)
			errs <- err
		}()
	}
	time.Sleep(300 * time.Millisecond) // generous: the callers are all waiting
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n > 2 {
		t.Fatalf("%d verifications for 16 concurrent requests, want them shared", n)
	}
	if _, err := a.Device(context.Background(), "w1", "a wrong secret of some length"); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
		t.Fatalf("wrong secret: %v", err)
	}
}

// Device secrets (256 random bits from NewSecret) are hashed with
// argon2id at its minimum cost, so a fleet can reconnect at once; a hash
// made at the password cost is moved to it on the next good connect.
func TestDeviceSecretCost(t *testing.T) {
	secret := NewSecret()
	h, err := HashDeviceSecret(secret)
	if err != nil || !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("device hash %q %v", h, err)
	}
	if ok, err := VerifySecret(h, secret); !ok || err != nil {
		t.Fatalf("verify: %v %v", ok, err)
	}
	if _, err := HashDeviceSecret("chosen-by-a-person"); err == nil {
		t.Fatal("a short, person-chosen secret got the device cost")
	}

	st, a, _ := setup(t)
	old, _ := HashSecret(secret)
	if err := st.CreateDevice(ctx, &vigil.Device{ID: "w-1", Kind: vigil.DeviceWearable, SecretHash: old}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Device(ctx, "w-1", "wrong"); err == nil {
		t.Fatal("wrong secret accepted")
	}
	if d, _ := st.FindDeviceByID(ctx, "w-1"); d.SecretHash != old {
		t.Fatal("a failed connect changed the hash")
	}
	if _, err := a.Device(ctx, "w-1", secret); err != nil {
		t.Fatal(err)
	}
	d, _ := st.FindDeviceByID(ctx, "w-1")
	if !strings.HasPrefix(d.SecretHash, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash not moved to the device cost: %q", d.SecretHash)
	}
	// A new authenticator (a restart) verifies against the new hash.
	b := NewAuthenticator(st, Options{})
	if _, err := b.Device(ctx, "w-1", secret); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Device(ctx, "w-1", "wrong"); err == nil {
		t.Fatal("wrong secret accepted after the move")
	}
}
