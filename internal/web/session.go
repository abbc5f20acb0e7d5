package web

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/auth"
	"github.com/vigil-iomt/vigil/internal/live"
)

// session is the authenticated caller of a request.
type session struct {
	token string // the session token (the cookie's value)
	p     *vigil.Principal
	// visible holds the patients a clinician or nurse with wards may see
	// (their wards' and break-glass ones), worked out when the request
	// starts; nil: every patient (staff without wards).
	visible map[string]bool
}

// staff reports whether the caller sees every patient.
func (s *session) staff() bool {
	switch s.p.Role {
	case vigil.RoleAdmin, vigil.RoleClinician, vigil.RoleNurse:
		return true
	}
	return false
}

// canSee reports whether the caller may see the patient's data.
func (s *session) canSee(patientID string) bool {
	if s.staff() {
		return s.visible == nil || s.visible[patientID]
	}
	return s.p.Role == vigil.RolePatient && s.p.PatientID != "" && s.p.PatientID == patientID
}

// scope works out which patients a clinician or nurse with wards sees.
func (h *handler) scope(ctx context.Context, s *session) error {
	if !s.staff() || s.p.Role == vigil.RoleAdmin || len(s.p.Wards) == 0 {
		return nil
	}
	s.visible = map[string]bool{}
	for off := 0; ; {
		ps, total, err := h.opts.Store.FindPatients(ctx, vigil.PatientFilter{Offset: off, Limit: 500})
		if err != nil {
			return err
		}
		for _, p := range ps {
			if s.p.Sees(p.ID, p.Ward) {
				s.visible[p.ID] = true
			}
		}
		off += len(ps)
		if len(ps) == 0 || off >= total {
			return nil
		}
	}
}

// authenticate returns the request's session, or nil with the error.
func (h *handler) authenticate(r *http.Request) (*session, error) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "sign in first")
	}
	p, err := h.opts.Auth.Principal(r.Context(), c.Value)
	if err != nil {
		return nil, err
	}
	if len(p.Scopes) > 0 {
		return nil, vigil.Errorf(vigil.EFORBIDDEN, "a token with SMART scopes works on the FHIR API only, not as a web session")
	}
	switch p.Role {
	case vigil.RoleAdmin, vigil.RoleClinician, vigil.RoleNurse, vigil.RolePatient:
	default:
		return nil, vigil.Errorf(vigil.EFORBIDDEN, "this account cannot use the web app")
	}
	if err := h.touch(r.Context(), c.Value, r.URL.Path != "/web/api/events"); err != nil {
		return nil, err
	}
	s := &session{token: c.Value, p: p}
	if err := h.scope(r.Context(), s); err != nil {
		return nil, err
	}
	return s, nil
}

// touch enforces the idle timeout: a session unused for longer is revoked
// (automatic logoff). activity records this request as the user's.
func (h *handler) touch(ctx context.Context, token string, activity bool) error {
	if h.opts.IdleTimeout < 0 {
		return nil
	}
	id := auth.TokenID(token)
	now := h.opts.Now()
	if v, ok := h.active.Load(id); ok && now.Sub(v.(time.Time)) > h.opts.IdleTimeout {
		h.active.Delete(id)
		_ = h.opts.Auth.RevokeToken(ctx, id)
		return vigil.Errorf(vigil.EUNAUTHORIZED, "signed out after %s without activity: sign in again", h.opts.IdleTimeout)
	} else if !ok || activity {
		h.active.Store(id, now)
	}
	return nil
}

// session wraps an API handler: it requires a session (401 otherwise)
// and, for state-changing methods, a same-origin request with the
// session's CSRF token (403 otherwise).
func (h *handler) session(fn func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := h.authenticate(r)
		if err != nil {
			h.audit(r, "", "", "", err)
			h.error(w, r, err)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if !sameOrigin(r) {
				err := vigil.Errorf(vigil.EFORBIDDEN, "cross-origin request refused")
				h.audit(r, "", s.p.UserID, s.p.Role, err)
				h.error(w, r, err)
				return
			}
			got := r.Header.Get(csrfHeader)
			if got == "" && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
				got = r.PostFormValue("csrf")
			}
			if !validCSRF(s.token, got) {
				err := vigil.Errorf(vigil.EFORBIDDEN, "missing or wrong CSRF token; reload the page")
				h.audit(r, "", s.p.UserID, s.p.Role, err)
				h.error(w, r, err)
				return
			}
		}
		h.audit(r, "", s.p.UserID, s.p.Role, nil)
		fn(w, r, s)
	}
}

// sameOrigin reports whether the request's Origin header, when present,
// names this host. Browsers send Origin on every cross-origin POST.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

type loginData struct {
	Error string
	User  string
	SSO   string // the single sign-on button's label ("" without SSO)
}

func (h *handler) loginData(msg, user string) loginData {
	d := loginData{Error: msg, User: user}
	if h.oidc != nil {
		d.SSO = h.oidc.cfg.Label
	}
	return d
}

func (h *handler) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, err := h.authenticate(r); err == nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	h.render(w, http.StatusOK, "login.html", h.loginData("", ""))
}

// login checks the form's credentials and starts a session. Every
// failure shows the same message, so the form does not reveal which user
// names exist.
func (h *handler) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		h.render(w, http.StatusForbidden, "login.html", h.loginData("Sign-in refused: the form was sent from another site.", ""))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	userID, password := r.PostFormValue("user"), r.PostFormValue("password")
	fail := func(status int, msg string) {
		h.render(w, status, "login.html", h.loginData(msg, userID))
	}
	u, err := h.opts.Auth.Login(r.Context(), userID, password)
	h.audit(r, "login", userID, "", err)
	if err != nil {
		if code := vigil.ErrorCode(err); code != vigil.EUNAUTHORIZED && code != vigil.ENOTFOUND && code != vigil.EINVALID {
			h.log.Error("web login", "err", err)
			fail(http.StatusInternalServerError, "Sign-in is not possible right now. Try again, or call IT support.")
			return
		}
		fail(http.StatusUnauthorized, "Wrong user name or password.")
		return
	}
	switch u.Role {
	case vigil.RoleAdmin, vigil.RoleClinician, vigil.RoleNurse, vigil.RolePatient:
	case vigil.RoleAuditor:
		h.audit(r, "login", userID, u.Role, vigil.Errorf(vigil.EFORBIDDEN, "auditors have no ward view"))
		fail(http.StatusForbidden, "Auditors have no ward view: read the audit log with an API token (GET /api/v1/audit).")
		return
	case vigil.RoleAnalyst:
		h.audit(r, "login", userID, u.Role, vigil.Errorf(vigil.EFORBIDDEN, "analysts have no ward view"))
		fail(http.StatusForbidden, "Analysts see no patient's data, so there is no ward view for them: anonymised aggregates come through the analyst API.")
		return
	default:
		fail(http.StatusUnauthorized, "Wrong user name or password.")
		return
	}
	required := h.opts.RequireTOTP && (u.Role == vigil.RoleAdmin || u.Role == vigil.RoleClinician)
	if err := h.opts.Auth.SecondFactor(u, r.PostFormValue("code"), required); err != nil {
		h.audit(r, "login second factor", userID, u.Role, err)
		if vigil.ErrorCode(err) == vigil.EFORBIDDEN {
			fail(http.StatusForbidden, vigil.ErrorMessage(err))
			return
		}
		fail(http.StatusUnauthorized, "Wrong or reused authenticator code: enter the 6-digit code your authenticator app shows now.")
		return
	}
	if err := h.startSession(w, r, u); err != nil {
		fail(http.StatusInternalServerError, "Sign-in is not possible right now. Try again, or call IT support.")
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// startSession issues a session token for u and sets its cookie.
func (h *handler) startSession(w http.ResponseWriter, r *http.Request, u *vigil.User) error {
	tok, _, err := h.opts.Auth.IssueToken(r.Context(), u.ID, "session", "web", h.opts.SessionTTL)
	if err != nil {
		h.log.Error("web login: issue session", "err", err)
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name:     SessionCookie,
		Value:    tok,
		Path:     "/",
		MaxAge:   int(h.opts.SessionTTL.Seconds()),
		HttpOnly: true,
		Secure:   h.opts.SecureCookies,
		SameSite: http.SameSiteStrictMode,
	})
	return nil
}

// logout revokes the session token and clears the cookie.
func (h *handler) logout(w http.ResponseWriter, r *http.Request, s *session) {
	if id, ok := tokenID(s.token); ok {
		if err := h.opts.Auth.RevokeToken(r.Context(), id); err != nil {
			h.error(w, r, err)
			return
		}
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: h.opts.SecureCookies, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// tokenID returns the public id of a token string "vgl_<id>_<secret>".
func tokenID(tok string) (string, bool) {
	rest, ok := strings.CutPrefix(tok, "vgl_")
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, "_")
	if !ok || id == "" {
		return "", false
	}
	return id, true
}

type wardData struct {
	CSRF string
	User string
	Role string
	// View names the page, for the navigation ("ward", "alerts",
	// "devices", "patient").
	View string
	// Staff: the navigation to the inbox and the fleet is shown.
	Staff bool
	// Forbidden: the page says the user may not see it (403).
	Forbidden bool
	// Notices are the system notices in force (shown across the top).
	Notices []live.Notice
}

func (h *handler) pageData(s *session, view string) wardData {
	d := wardData{CSRF: csrfToken(s.token), User: s.p.UserID, Role: s.p.Role, View: view, Staff: s.staff()}
	if h.opts.Notices != nil {
		d.Notices = h.opts.Notices()
	}
	return d
}

// staffPage serves a page for care staff (the alert inbox, the device
// fleet), or sends the browser to the login form; others get a 403 page
// that says so.
func (h *handler) staffPage(view string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := h.authenticate(r)
		if err != nil {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		d := h.pageData(s, view)
		if !s.staff() {
			h.audit(r, "", s.p.UserID, s.p.Role, vigil.Errorf(vigil.EFORBIDDEN, "not care staff"))
			d.Forbidden = true
			h.render(w, http.StatusForbidden, view+".html", d)
			return
		}
		h.audit(r, "", s.p.UserID, s.p.Role, nil)
		h.render(w, http.StatusOK, view+".html", d)
	}
}

// wardPage serves the ward view, or sends the browser to the login form.
func (h *handler) wardPage(w http.ResponseWriter, r *http.Request) {
	s, err := h.authenticate(r)
	if err != nil {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	h.render(w, http.StatusOK, "ward.html", h.pageData(s, "ward"))
}

type patientData struct {
	wardData
	Patient string
}

// patientPage serves a patient's detail page (charts, devices), or sends
// the browser to the login form; a patient the user may not see gets a
// 403 page that says so.
func (h *handler) patientPage(w http.ResponseWriter, r *http.Request) {
	s, err := h.authenticate(r)
	if err != nil {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	id := r.PathValue("id")
	d := patientData{wardData: h.pageData(s, "patient"), Patient: id}
	if !s.canSee(id) {
		err := vigil.Errorf(vigil.EFORBIDDEN, "you may not see this patient")
		h.audit(r, "", s.p.UserID, s.p.Role, err)
		d.Forbidden = true
		h.render(w, http.StatusForbidden, "patient.html", d)
		return
	}
	h.audit(r, "", s.p.UserID, s.p.Role, nil)
	h.render(w, http.StatusOK, "patient.html", d)
}

func (h *handler) render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := h.pages.ExecuteTemplate(&buf, name, data); err != nil {
		h.log.Error("render web page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// statusOf maps an error code to its HTTP status: the web app's one
// place for that mapping.
func statusOf(err error) int {
	switch vigil.ErrorCode(err) {
	case vigil.EINVALID:
		return http.StatusBadRequest
	case vigil.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case vigil.EFORBIDDEN:
		return http.StatusForbidden
	case vigil.ENOTFOUND:
		return http.StatusNotFound
	case vigil.ECONFLICT:
		return http.StatusConflict
	case vigil.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case vigil.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	case vigil.EFULL:
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

// error writes err as JSON {"error": message, "code": code}; internal
// errors are logged and shown as a generic message.
func (h *handler) error(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	if status == http.StatusInternalServerError {
		h.log.Error("web request", "method", r.Method, "route", r.Pattern, "err", err)
	}
	code := vigil.ErrorCode(err)
	h.json(w, status, map[string]string{"error": vigil.ErrorMessage(err), "code": code})
}

func (h *handler) json(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// audit records a request (action "": the route) when an audit log is set.
func (h *handler) audit(r *http.Request, action, actor, role string, err error) {
	if h.opts.Audit == nil {
		return
	}
	if strings.HasPrefix(actor, "share:") {
		role = "guest" // a share link's external clinician (patient-role view of one patient)
	}
	e := audit.FromRequest(r, actor, role, err)
	if action != "" {
		e.Action = action
	}
	h.opts.Audit(r.Context(), e)
}

// adminPage serves the admin page (users, devices and enrollment codes,
// mapping templates with the dry run, rules with the backtest) to admins;
// others get a 403 page.
func (h *handler) adminPage(w http.ResponseWriter, r *http.Request) {
	s, err := h.authenticate(r)
	if err != nil {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	d := h.pageData(s, "admin")
	if s.p.Role != vigil.RoleAdmin || h.opts.API == nil {
		h.audit(r, "", s.p.UserID, s.p.Role, vigil.Errorf(vigil.EFORBIDDEN, "not an admin"))
		d.Forbidden = true
		h.render(w, http.StatusForbidden, "admin.html", d)
		return
	}
	h.audit(r, "", s.p.UserID, s.p.Role, nil)
	h.render(w, http.StatusOK, "admin.html", d)
}

// proxyAPI passes a session's request under /web/api/v1/ to the API as
// /api/v1/..., authenticated with the session's token (the session
// wrapper has checked it, the idle timeout, the origin and the CSRF
// token). The API applies the user's role and audits the call.
func (h *handler) proxyAPI(w http.ResponseWriter, r *http.Request, s *session) {
	if h.opts.API == nil {
		h.error(w, r, vigil.Errorf(vigil.ENOTFOUND, "the API is not available here"))
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = strings.TrimPrefix(r.URL.Path, "/web")
	r2.URL.RawPath = ""
	r2.RequestURI = ""
	r2.Header.Del("Cookie")
	r2.Header.Del(csrfHeader)
	r2.Header.Set("Authorization", "Bearer "+s.token)
	h.opts.API.ServeHTTP(w, r2)
}

// openShare is a share link: it opens the web app's read-only view of one
// patient to the external clinician it names, as a session that ends with
// the link (or earlier, when idle or revoked).
func (h *handler) openShare(w http.ResponseWriter, r *http.Request) {
	tok := r.PathValue("token")
	// The token is the link's secret: keep it out of the audit log and of
	// any Referer.
	redacted := r.Clone(r.Context())
	redacted.URL.Path, redacted.URL.RawPath = "/share/(secret)", ""
	w.Header().Set("Referrer-Policy", "no-referrer")
	p, err := h.opts.Auth.Principal(r.Context(), tok)
	if err != nil || p.Guest == "" {
		if err == nil {
			err = vigil.Errorf(vigil.EUNAUTHORIZED, "not a share link")
		}
		h.audit(redacted, "open share link", "", "", err)
		h.render(w, http.StatusNotFound, "login.html", h.loginData("This share link has ended or is not valid. Ask the clinician who sent it for a new one.", ""))
		return
	}
	h.audit(redacted, "open share link", p.UserID, p.Role, nil)
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: tok, Path: "/", HttpOnly: true, Secure: h.opts.SecureCookies, SameSite: http.SameSiteStrictMode})
	// The link comes from an e-mail or another site: the Strict cookie is
	// not sent on the rest of a cross-site redirect, so go on from here.
	target := "/patients/" + url.PathEscape(p.PatientID)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Refresh", "0; url="+target)
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=%s"><title>Shared patient — Vigil</title></head><body><p>Opening the shared patient for %s. <a href="%s">Continue</a>.</p></body></html>`,
		template.HTMLEscapeString(target), template.HTMLEscapeString(p.Guest), template.HTMLEscapeString(target))
}
