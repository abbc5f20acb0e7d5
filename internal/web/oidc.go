package web

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/vigil-iomt/vigil"
)

// OIDC is hospital single sign-on with OpenID Connect (authorization code
// flow with PKCE, state and nonce). The identity provider says who a
// person is; Vigil's own user record (found by UserClaim) says what they
// may do, so an account the hospital's directory knows but Vigil does
// not gets no access. Clinicians and admins must have used a second
// factor at the provider (the ID token's amr) when RequireTOTP is set.
type OIDC struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	// RedirectURL is Vigil's /login/oidc/callback as the browser reaches
	// it; empty: derived from each request's host.
	RedirectURL string
	// UserClaim names the ID-token claim holding the Vigil user id
	// (default preferred_username; email is another common choice).
	UserClaim string
	// Label is the button's text (default "Hospital sign-in").
	Label string
}

// secondFactors are amr values (RFC 8176) that show more than a password.
var secondFactors = []string{"mfa", "otp", "hwk", "swk", "sms", "tel", "fpt", "face", "iris", "retina", "vbm", "pop", "sc"}

// oidcState is one sign-in in progress: it binds the browser (a cookie
// holding the state) to the nonce and the PKCE verifier.
type oidcState struct {
	nonce, verifier, redirect string
	expires                   time.Time
}

type oidcClient struct {
	cfg OIDC

	mu       sync.Mutex
	provider *oidc.Provider // discovered on first use, then kept
	pending  map[string]oidcState
}

const oidcStateCookie = "vigil_oidc_state"

func newOIDCClient(cfg OIDC) *oidcClient {
	if cfg.UserClaim == "" {
		cfg.UserClaim = "preferred_username"
	}
	if cfg.Label == "" {
		cfg.Label = "Hospital sign-in"
	}
	return &oidcClient{cfg: cfg, pending: map[string]oidcState{}}
}

// discover finds the provider's endpoints and keys (retried on the next
// sign-in when the provider cannot be reached).
func (c *oidcClient) discover(ctx context.Context) (*oidc.Provider, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.provider != nil {
		return c.provider, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(ctx, c.cfg.Issuer)
	if err != nil {
		return nil, err
	}
	c.provider = p
	return p, nil
}

func (c *oidcClient) oauth(p *oidc.Provider, redirect string) *oauth2.Config {
	return &oauth2.Config{ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret, Endpoint: p.Endpoint(), RedirectURL: redirect, Scopes: []string{oidc.ScopeOpenID, "profile", "email"}}
}

func randomString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (h *handler) oidcRedirectURL(r *http.Request) string {
	if u := h.oidc.cfg.RedirectURL; u != "" {
		return u
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/login/oidc/callback"
}

// oidcStart sends the browser to the identity provider.
func (h *handler) oidcStart(w http.ResponseWriter, r *http.Request) {
	c := h.oidc
	p, err := c.discover(r.Context())
	if err != nil {
		h.log.Error("OIDC discovery", "issuer", c.cfg.Issuer, "err", err)
		h.render(w, http.StatusBadGateway, "login.html", h.loginData("The hospital sign-in service cannot be reached. Sign in with your Vigil password, or call IT support.", ""))
		return
	}
	st := oidcState{nonce: randomString(), verifier: oauth2.GenerateVerifier(), redirect: h.oidcRedirectURL(r), expires: h.now().Add(10 * time.Minute)}
	state := randomString()
	c.mu.Lock()
	for k, v := range c.pending {
		if h.now().After(v.expires) {
			delete(c.pending, k)
		}
	}
	c.pending[state] = st
	c.mu.Unlock()
	// Lax, not Strict: the provider sends the browser back with a
	// cross-site redirect, which must carry this cookie.
	http.SetCookie(w, &http.Cookie{Name: oidcStateCookie, Value: state, Path: "/login/oidc", MaxAge: 600, HttpOnly: true, Secure: h.opts.SecureCookies, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, c.oauth(p, st.redirect).AuthCodeURL(state, oidc.Nonce(st.nonce), oauth2.S256ChallengeOption(st.verifier)), http.StatusFound)
}

// oidcCallback finishes a sign-in: the state matches the browser's, the
// code is exchanged (with the PKCE verifier), the ID token is verified
// (signature, issuer, audience, expiry, nonce), and the person is a Vigil
// user allowed to use the web app.
func (h *handler) oidcCallback(w http.ResponseWriter, r *http.Request) {
	c := h.oidc
	fail := func(status int, actor, role string, err error, msg string) {
		h.audit(r, "login (single sign-on)", actor, role, err)
		h.render(w, status, "login.html", h.loginData(msg, ""))
	}
	q := r.URL.Query()
	state := q.Get("state")
	cookie, _ := r.Cookie(oidcStateCookie)
	http.SetCookie(w, &http.Cookie{Name: oidcStateCookie, Value: "", Path: "/login/oidc", MaxAge: -1, HttpOnly: true, Secure: h.opts.SecureCookies, SameSite: http.SameSiteLaxMode})
	c.mu.Lock()
	st, ok := c.pending[state]
	delete(c.pending, state)
	c.mu.Unlock()
	if !ok || cookie == nil || cookie.Value != state || h.now().After(st.expires) {
		fail(http.StatusBadRequest, "", "", vigil.Errorf(vigil.EUNAUTHORIZED, "unknown or expired OIDC state"), "This sign-in was not started here or took too long. Start again.")
		return
	}
	if e := q.Get("error"); e != "" {
		fail(http.StatusUnauthorized, "", "", vigil.Errorf(vigil.EUNAUTHORIZED, "identity provider: %s", e), "The hospital sign-in did not let you in ("+e+"). Start again, or call IT support.")
		return
	}
	p, err := c.discover(r.Context())
	if err != nil {
		fail(http.StatusBadGateway, "", "", err, "The hospital sign-in service cannot be reached. Try again, or call IT support.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	tok, err := c.oauth(p, st.redirect).Exchange(ctx, q.Get("code"), oauth2.VerifierOption(st.verifier))
	if err != nil {
		h.log.Warn("OIDC code exchange failed", "err", err)
		fail(http.StatusUnauthorized, "", "", vigil.Errorf(vigil.EUNAUTHORIZED, "code exchange failed"), "The hospital sign-in could not be completed. Start again.")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := p.Verifier(&oidc.Config{ClientID: c.cfg.ClientID, Now: h.now}).Verify(ctx, raw)
	if err != nil || idt.Nonce != st.nonce {
		h.log.Warn("OIDC ID token refused", "err", err)
		fail(http.StatusUnauthorized, "", "", vigil.Errorf(vigil.EUNAUTHORIZED, "ID token refused"), "The hospital sign-in's answer could not be verified. Start again, or call IT support.")
		return
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		fail(http.StatusUnauthorized, "", "", err, "The hospital sign-in's answer could not be read.")
		return
	}
	userID, _ := claims[c.cfg.UserClaim].(string)
	u, err := h.opts.Store.FindUserByID(r.Context(), userID)
	if err != nil {
		fail(http.StatusForbidden, userID, "", vigil.Errorf(vigil.EFORBIDDEN, "no Vigil user for this sign-in"), "You signed in at the hospital, but Vigil has no account for you ("+userID+"). Ask an administrator to add one.")
		return
	}
	switch u.Role {
	case vigil.RoleAdmin, vigil.RoleClinician, vigil.RoleNurse, vigil.RolePatient:
	default:
		fail(http.StatusForbidden, u.ID, u.Role, vigil.Errorf(vigil.EFORBIDDEN, "role %s has no web app", u.Role), "Your account has no ward view.")
		return
	}
	if h.opts.RequireTOTP && (u.Role == vigil.RoleAdmin || u.Role == vigil.RoleClinician) && !usedSecondFactor(claims) {
		fail(http.StatusForbidden, u.ID, u.Role, vigil.Errorf(vigil.EFORBIDDEN, "no second factor at the identity provider"),
			"Clinicians and administrators need a second factor: the hospital sign-in did not use one (its amr claim shows none). Sign in again with your second factor, or with your Vigil password and authenticator code.")
		return
	}
	if err := h.startSession(w, r, u); err != nil {
		fail(http.StatusInternalServerError, u.ID, u.Role, err, "Sign-in is not possible right now. Try again, or call IT support.")
		return
	}
	h.audit(r, "login (single sign-on)", u.ID, u.Role, nil)
	// The session cookie is SameSite=Strict: a browser does not send it on
	// the rest of this cross-site redirect chain, so go on from a page of
	// our own.
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Refresh", "0; url=/")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=/"><title>Signed in — Vigil</title></head><body><p>Signed in. <a href="/">Open your ward</a>.</p></body></html>`))
}

// usedSecondFactor reports whether the ID token's amr (RFC 8176) names
// anything beyond a password.
func usedSecondFactor(claims map[string]any) bool {
	amr, _ := claims["amr"].([]any)
	for _, a := range amr {
		if s, ok := a.(string); ok && slices.Contains(secondFactors, strings.ToLower(s)) {
			return true
		}
	}
	return false
}
