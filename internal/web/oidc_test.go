package web

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/audit"
)

// provider is an OpenID Connect provider started inside the test: the
// authorization code flow with PKCE, RS256 ID tokens. It signs in
// whichever user the test sets, with the amr and nonce behaviour the test
// chooses.
type provider struct {
	*httptest.Server
	key    *rsa.PrivateKey
	signer jose.Signer

	mu        sync.Mutex
	user      string
	amr       []string
	badNonce  bool
	otherKey  bool
	codes     map[string]grant
	exchanges int
}

type grant struct{ nonce, challenge, redirect, client string }

func newProvider(t *testing.T) *provider {
	p := &provider{codes: map[string]grant{}}
	var err error
	if p.key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if p.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: p.key, KeyID: "k1"}}, nil); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	p.Server = httptest.NewServer(mux)
	t.Cleanup(p.Close)
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": p.URL, "authorization_endpoint": p.URL + "/authorize", "token_endpoint": p.URL + "/token", "jwks_uri": p.URL + "/jwks",
			"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"RS256"},
			"code_challenge_methods_supported": []string{"S256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p.key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" || !strings.Contains(q.Get("scope"), "openid") {
			http.Error(w, "bad authorization request", 400)
			return
		}
		code := make([]byte, 16)
		rand.Read(code)
		c := base64.RawURLEncoding.EncodeToString(code)
		p.mu.Lock()
		p.codes[c] = grant{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri"), client: q.Get("client_id")}
		p.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?code="+c+"&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		id, secret, ok := r.BasicAuth()
		if !ok {
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		p.mu.Lock()
		g, found := p.codes[r.PostForm.Get("code")]
		delete(p.codes, r.PostForm.Get("code"))
		p.exchanges++
		user, amr, badNonce, otherKey := p.user, p.amr, p.badNonce, p.otherKey
		p.mu.Unlock()
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if !found || id != "vigil" || secret != "s3cret" || g.client != id || r.PostForm.Get("redirect_uri") != g.redirect ||
			base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
			w.WriteHeader(400)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant"})
			return
		}
		nonce := g.nonce
		if badNonce {
			nonce = "replayed"
		}
		claims := map[string]any{"iss": p.URL, "sub": "dir-" + user, "aud": "vigil", "exp": time.Now().Add(5 * time.Minute).Unix(), "iat": time.Now().Unix(),
			"nonce": nonce, "preferred_username": user, "amr": amr}
		payload, _ := json.Marshal(claims)
		signer := p.signer
		if otherKey {
			k, _ := rsa.GenerateKey(rand.Reader, 2048)
			signer, _ = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k, KeyID: "k1"}}, nil)
		}
		jws, _ := signer.Sign(payload)
		idt, _ := jws.CompactSerialize()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": idt})
	})
	return p
}

func (p *provider) set(user string, amr []string, badNonce, otherKey bool) {
	p.mu.Lock()
	p.user, p.amr, p.badNonce, p.otherKey = user, amr, badNonce, otherKey
	p.mu.Unlock()
}

// sso runs the single sign-on flow in a fresh browser-like client
// (following redirects, keeping cookies) and returns the client, the final
// status and body.
func (e *env) sso(t *testing.T) (*http.Client, int, string) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	res, err := c.Get(e.srv.URL + "/login/oidc")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return c, res.StatusCode, string(b)
}

// Hospital single sign-on with OpenID Connect against a provider started
// in the test: a known user gets a session; unknown users, clinicians
// without a second factor, a replayed nonce, a forged signature and a
// state the browser did not start are refused — and audited.
func TestOIDCSingleSignOn(t *testing.T) {
	p := newProvider(t)
	var audited []string
	var auditMu sync.Mutex
	e := newEnv(t, func(o *Options) {
		o.OIDC = &OIDC{Issuer: p.URL, ClientID: "vigil", ClientSecret: "s3cret"}
		o.RequireTOTP = true
		o.Audit = func(_ context.Context, en audit.Entry) {
			auditMu.Lock()
			audited = append(audited, en.Action+" "+en.Actor+" "+en.Outcome)
			auditMu.Unlock()
		}
	})
	e.addPatient("p1", "Ann", "Lee", "W1", "1")
	e.addUser("nurse-kim", vigil.RoleNurse, "", "correct horse battery")
	e.addUser("dr-ray", vigil.RoleClinician, "", "correct horse battery")
	if body := e.get(e.client(), "/login", 200); !strings.Contains(body, `href="/login/oidc"`) {
		t.Fatal("the sign-in page has no single sign-on button")
	}

	p.set("nurse-kim", []string{"pwd"}, false, false)
	c, st, body := e.sso(t)
	if st != 200 || !strings.Contains(body, "Signed in") {
		t.Fatalf("nurse SSO: %d %s", st, body)
	}
	if ward := e.get(c, "/", 200); !csrfMeta.MatchString(ward) {
		t.Fatal("no ward page after SSO")
	}

	for _, c := range []struct {
		name               string
		user               string
		amr                []string
		badNonce, otherKey bool
		status             int
		says               string
	}{
		{"clinician without a second factor", "dr-ray", []string{"pwd"}, false, false, 403, "second factor"},
		{"unknown to Vigil", "someone-else", []string{"pwd", "otp"}, false, false, 403, "no account"},
		{"replayed nonce", "nurse-kim", nil, true, false, 401, "could not be verified"},
		{"forged signature", "nurse-kim", nil, false, true, 401, "could not be verified"},
	} {
		p.set(c.user, c.amr, c.badNonce, c.otherKey)
		if _, st, body := e.sso(t); st != c.status || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d, want %d saying %q: %s", c.name, st, c.status, c.says, body)
		}
	}
	p.set("dr-ray", []string{"pwd", "otp"}, false, false)
	if _, st, body := e.sso(t); st != 200 {
		t.Fatalf("clinician with a second factor: %d %s", st, body)
	}
	// A callback the browser did not start (no state cookie) is refused.
	res, err := e.client().Get(e.srv.URL + "/login/oidc/callback?code=x&state=forged")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Fatalf("forged state: %d", res.StatusCode)
	}
	auditMu.Lock()
	defer auditMu.Unlock()
	joined := strings.Join(audited, "\n")
	if !strings.Contains(joined, "login (single sign-on) nurse-kim success") || !strings.Contains(joined, "login (single sign-on) dr-ray denied") {
		t.Fatalf("audit:\n%s", joined)
	}
}
