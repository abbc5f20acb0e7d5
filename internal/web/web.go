// Package web serves Vigil's embedded web app: the login form, the live
// ward view a nurse reads across a room, and the JSON and Server-Sent
// Events endpoints behind it.
//
// Everything the browser loads (HTML templates, one script, one style
// sheet) is embedded with go:embed; the app makes no request outside its
// own origin, and its Content-Security-Policy forbids it to.
//
// Routes (NewHandler mounts them; it claims nothing under /api/v1, /fhir,
// /metrics, /healthz or /readyz):
//
//	GET  /login                     login form
//	POST /login                     sign in: sets the session cookie
//	POST /logout                    sign out (session + CSRF)
//	GET  /                          ward view (redirects to /login without a session)
//	GET  /web/static/...            embedded script and style sheet
//	GET  /web/api/ward              JSON snapshot of the visible patients
//	GET  /web/api/patients/{id}     JSON snapshot of one patient (403 if not visible)
//	GET  /patients/{id}             a patient's page: charts, devices
//	GET  /web/api/patients/{id}/series  chart data of a patient (?range=)
//	GET  /web/api/events            Server-Sent Events: reading, alert and NEWS2 events
//	GET  /alerts, /web/api/alerts   the alert inbox (care staff)
//	GET  /devices, /web/api/devices the device fleet (care staff; a patient: ?patient=own id)
//	POST /web/api/alerts/{id}/ack   acknowledge an alert (session + CSRF)
//	POST /web/api/alerts/{id}/snooze, …/escalate  snooze; escalate one tier
//	GET  /admin                     the admin page (admins)
//	     /web/api/v1/...            the HTTP API for the admin page, as the session's user
//
// # Sessions and CSRF
//
// POST /login issues a "session" token through the Authenticator and sets
// it as the HttpOnly, SameSite=Strict cookie SessionCookie. The CSRF token
// of a session is an HMAC of the session token (so it is stable for the
// session, survives a restart and cannot be computed without the cookie);
// the ward page carries it in a meta element and the script sends it as
// the X-CSRF-Token header. State-changing requests also refuse a foreign
// Origin header.
//
// # Visibility
//
// Admins, clinicians and nurses see every patient (care teams come later);
// a patient sees only their own record and gets 403 for anyone else's.
// The SSE stream is filtered the same way. Only staff may acknowledge.
package web

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/live"
	"github.com/vigil-iomt/vigil/internal/news2"
)

// SessionCookie is the name of the cookie that carries a web session
// token.
const SessionCookie = "vigil_session"

// csrfHeader is the request header that carries the CSRF token.
const csrfHeader = "X-CSRF-Token"

//go:embed assets
var assets embed.FS

// AlertService lists and acknowledges alerts; *alerting.Engine implements
// it.
type AlertService interface {
	// Alerts returns matching alerts, newest Raised first.
	Alerts(ctx context.Context, f vigil.AlertFilter) ([]*vigil.Alert, error)
	// Acknowledge returns ENOTFOUND for an unknown alert, EINVALID for a
	// resolved one.
	Acknowledge(ctx context.Context, id, by, note string) (*vigil.Alert, error)
	// Snooze silences an open alert for d (1 minute to 24 hours).
	Snooze(ctx context.Context, id, by string, d time.Duration, note string) (*vigil.Alert, error)
	// Escalate raises an open alert one tier by hand.
	Escalate(ctx context.Context, id, by, note string) (*vigil.Alert, error)
}

// Authenticator checks passwords and session tokens; *auth.Authenticator
// implements it.
type Authenticator interface {
	// Login returns EUNAUTHORIZED for an unknown user or a wrong password.
	Login(ctx context.Context, userID, password string) (*vigil.User, error)
	// IssueToken creates a token of kind ("session" here) for the user,
	// valid for ttl, and returns its string form and record.
	IssueToken(ctx context.Context, userID, kind, name string, ttl time.Duration) (string, *vigil.Token, error)
	// Principal returns EUNAUTHORIZED for an unknown, expired or revoked
	// token.
	Principal(ctx context.Context, token string) (*vigil.Principal, error)
	// RevokeToken deletes the token with the given id.
	RevokeToken(ctx context.Context, id string) error
	// SecondFactor checks an authenticator code (see auth).
	SecondFactor(u *vigil.User, code string, required bool) error
}

// Options configure the web app. Store, Auth, Hub and Alerts are
// required.
type Options struct {
	Store  vigil.Store
	Auth   Authenticator
	Hub    *live.Hub
	Alerts AlertService
	// Audit records logins and every session request (nil: none).
	Audit audit.Recorder
	// NEWS2 computes a patient's score for the tiles; NEWS2Record stores
	// a nurse's ACVPU and oxygen inputs and recomputes. nil: not shown.
	NEWS2       func(ctx context.Context, patientID string) (news2.Result, error)
	NEWS2Record func(ctx context.Context, patientID string, in news2.Inputs, prescriber bool) (news2.Result, error)
	// API is Vigil's HTTP API (/api/v1), which the admin page reaches
	// through /web/api/v1/...: the web app checks the session, its idle
	// timeout, the origin and the CSRF token, then passes the request on
	// with the session's token as its bearer token, so the API applies
	// the user's role as for any client. nil: no admin page.
	API http.Handler
	// Thresholds returns the alert thresholds as they apply to a patient,
	// drawn on the patient's charts (nil: none drawn).
	Thresholds func(patientID string) []vigil.Threshold
	// DeviceState reports a device's live state for the device fleet
	// (nil: every device shows as not heard from).
	DeviceState func(deviceID string) DeviceState
	// Connected returns the devices with an MQTT connection open now
	// (nil: none known).
	Connected func() map[string]bool
	// Notices returns the system notices in force, shown across the top
	// of every page and updated live (TypeNotice events); nil: none.
	Notices func() []live.Notice
	// OIDC enables hospital single sign-on (nil: passwords only).
	OIDC *OIDC
	// SessionTTL is how long a login lasts; 0 means 12 hours.
	SessionTTL time.Duration
	// RequireTOTP demands an authenticator code from clinicians and
	// admins (others give one when they have enrolled).
	RequireTOTP bool
	// IdleTimeout signs a session out after this long without a request
	// from the user (automatic logoff); the live stream does not count as
	// activity. 0 means 15 minutes; negative: never (a wall display).
	IdleTimeout time.Duration
	// SecureCookies marks the session cookie Secure (serve over HTTPS).
	SecureCookies bool
	// Heartbeat is the period of SSE heartbeat comments, at which the
	// stream also re-checks its session; 0 means 15 seconds.
	Heartbeat time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives request failures (never patient data or
	// credentials); nil discards.
	Logger *slog.Logger
}

// DefaultOptions returns the defaults for the optional fields.
func DefaultOptions() Options {
	return Options{SessionTTL: 12 * time.Hour, Heartbeat: 15 * time.Second, Now: time.Now}
}

// handler serves the web app. It holds no mutable state; it is safe for
// concurrent use.
type handler struct {
	opts   Options
	log    *slog.Logger
	pages  *template.Template
	static http.Handler
	mux    *http.ServeMux
	routes []string    // registered patterns, for the authorization-matrix test
	active sync.Map    // session token id → time.Time of the last request
	oidc   *oidcClient // nil without single sign-on
}

func (h *handler) now() time.Time { return h.opts.Now() }

// NewHandler returns the web app's handler, to be mounted at "/". It is
// safe for concurrent use.
func NewHandler(opts Options) http.Handler {
	d := DefaultOptions()
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 15 * time.Minute
	}
	if opts.SessionTTL == 0 {
		opts.SessionTTL = d.SessionTTL
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = d.Heartbeat
	}
	if opts.Now == nil {
		opts.Now = d.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	h := &handler{
		opts:   opts,
		log:    opts.Logger,
		pages:  template.Must(template.ParseFS(assets, "assets/*.html")),
		static: http.StripPrefix("/web/static/", http.FileServerFS(static)),
		mux:    http.NewServeMux(),
	}
	m := h.mux
	h.handle("GET /login", h.loginPage)
	h.handle("GET /share/{token}", h.openShare)
	h.handle("POST /login", h.login)
	if opts.OIDC != nil {
		h.oidc = newOIDCClient(*opts.OIDC)
		h.handle("GET /login/oidc", h.oidcStart)
		h.handle("GET /login/oidc/callback", h.oidcCallback)
	}
	h.handle("POST /logout", h.session(h.logout))
	h.handle("GET /{$}", h.wardPage)
	h.routes = append(h.routes, "GET /web/static/")
	m.Handle("GET /web/static/", h.static)
	h.handle("GET /web/api/ward", h.session(h.ward))
	h.handle("GET /web/api/patients/{id}", h.session(h.patient))
	h.handle("GET /web/api/patients/{id}/series", h.session(h.series))
	h.handle("GET /patients/{id}", h.patientPage)
	h.handle("GET /web/api/events", h.session(h.events))
	h.handle("GET /alerts", h.staffPage("alerts"))
	h.handle("GET /web/api/alerts", h.session(h.alerts))
	h.handle("GET /admin", h.adminPage)
	h.handle("/web/api/v1/", h.session(h.proxyAPI))
	h.handle("GET /devices", h.staffPage("devices"))
	h.handle("GET /web/api/devices", h.session(h.devices))
	h.handle("POST /web/api/alerts/{id}/ack", h.session(h.alertAction("acknowledge",
		func(ctx context.Context, id, by string, req alertRequest) (*vigil.Alert, error) {
			return h.opts.Alerts.Acknowledge(ctx, id, by, req.Note)
		})))
	h.handle("POST /web/api/alerts/{id}/snooze", h.session(h.alertAction("snooze",
		func(ctx context.Context, id, by string, req alertRequest) (*vigil.Alert, error) {
			return h.opts.Alerts.Snooze(ctx, id, by, time.Duration(req.Minutes)*time.Minute, req.Note)
		})))
	h.handle("POST /web/api/alerts/{id}/escalate", h.session(h.alertAction("escalate",
		func(ctx context.Context, id, by string, req alertRequest) (*vigil.Alert, error) {
			return h.opts.Alerts.Escalate(ctx, id, by, req.Note)
		})))
	h.handle("POST /web/api/patients/{id}/news2-inputs", h.session(h.news2Inputs))
	return h
}

// ServeHTTP sets the security headers and routes the request.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin") // not no-referrer: that makes browsers send "Origin: null" on same-origin form posts
	hd.Set("Cache-Control", "no-store")
	if h.opts.SecureCookies {
		hd.Set("Strict-Transport-Security", "max-age=31536000")
	}
	h.mux.ServeHTTP(w, r)
}

// csrfToken derives the CSRF token of a session token.
func csrfToken(session string) string {
	m := hmac.New(sha256.New, []byte(session))
	m.Write([]byte("vigil web csrf v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// validCSRF reports whether got is the CSRF token of session.
func validCSRF(session, got string) bool {
	return got != "" && hmac.Equal([]byte(got), []byte(csrfToken(session)))
}

func (h *handler) handle(pattern string, fn http.HandlerFunc) {
	h.routes = append(h.routes, pattern)
	h.mux.HandleFunc(pattern, fn)
}

// Routes returns the patterns a handler made by NewHandler routes.
func Routes(h http.Handler) []string {
	if x, ok := h.(*handler); ok {
		return slices.Clone(x.routes)
	}
	return nil
}
