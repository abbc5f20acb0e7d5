// Package httpapi is Vigil's HTTP server: device reading ingest, the
// admin and alerts API under /api/v1, health and metrics, with the FHIR
// API and the web app mounted. Errors are RFC 9457 problem+json. It also
// has a Go client for the admin API, used by the CLI when a server runs.
//
// API reference: docs/api.md.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/auth"
	"github.com/vigil-iomt/vigil/internal/backup"
	"github.com/vigil-iomt/vigil/internal/netlimit"
	"github.com/vigil-iomt/vigil/internal/news2"
	"github.com/vigil-iomt/vigil/internal/pubhealth"
	"github.com/vigil-iomt/vigil/internal/ratelimit"
)

// AlertService lists and acknowledges alerts; *alerting.Engine implements it.
type AlertService interface {
	Alerts(ctx context.Context, f vigil.AlertFilter) ([]*vigil.Alert, error)
	Acknowledge(ctx context.Context, id, by, note string) (*vigil.Alert, error)
	Snooze(ctx context.Context, id, by string, d time.Duration, note string) (*vigil.Alert, error)
	Escalate(ctx context.Context, id, by, note string) (*vigil.Alert, error)
	SetOverrides(patientID string, os []vigil.ThresholdOverride) error
	SaveRule(ctx context.Context, r vigil.Rule) (*vigil.Rule, error)
	Adopt(ctx context.Context, edge string, a *vigil.Alert) (*vigil.Alert, error)
	Backtest(ctx context.Context, req alerting.BacktestRequest) (*alerting.BacktestReport, error)
	DeviceStatus(id string) (alerting.DeviceStatus, bool)
}

// Options configure a Server.
type Options struct {
	Store    vigil.Store
	Auth     *auth.Authenticator
	Admin    *admin.Service
	Ingester vigil.Ingester
	Alerts   AlertService
	// NEWS2 returns a patient's current NEWS2 breakdown (nil: not served).
	NEWS2 func(ctx context.Context, patientID string) (any, error)
	// NEWS2Record stores a nurse's NEWS2 inputs and recomputes
	// (prescriber: may set SpO2 scale 2).
	NEWS2Record func(ctx context.Context, patientID string, in news2.Inputs, prescriber bool) (news2.Result, error)
	// Aggregate computes public-health aggregates (GET /api/v1/aggregates).
	Aggregate func(ctx context.Context, o pubhealth.Options) (*pubhealth.Table, error)
	// ChargePrivacy spends (ε, δ) of a user's privacy budget before a
	// differentially private export, or refuses it.
	ChargePrivacy func(ctx context.Context, userID string, epsilon, delta float64) (*vigil.PrivacySpent, error)
	// Signals computes the biosurveillance series and EARS signals.
	Signals func(ctx context.Context, o pubhealth.SignalOptions) (*pubhealth.Surveillance, error)
	// Extract writes a study's pseudonymised research extract as CSV.
	Extract func(ctx context.Context, o pubhealth.ExtractOptions, w io.Writer) (int, error)
	// Baselines returns a patient's current values scored against their
	// personal baselines (nil: not served).
	Baselines func(patientID string) any
	// Backup writes a consistent snapshot of the node's data as a tar
	// stream (internal/backup; nil: not served).
	Backup func(ctx context.Context, w io.Writer, base *backup.Manifest, withMasterKey bool) (*backup.Manifest, error)
	// ErasePatient erases a patient's data and says what went (nil: not
	// served).
	ErasePatient func(ctx context.Context, id string) (any, error)
	// EdgeStatus is an edge gateway's forwarding and configuration state
	// (nil: this node is no edge).
	EdgeStatus func() any
	// IssueDeviceCert makes a client certificate for a device with the
	// node's CA (nil: not served).
	IssueDeviceCert func(deviceID string) (certPEM, keyPEM []byte, serial string, err error)
	// Limits are the rate limits (zero fields: the defaults of
	// DefaultLimits; negative: none).
	Limits Limits
	// Audit records every authenticated request (nil: none).
	Audit audit.Recorder
	// AuditVerify checks the audit log (nil: not served).
	AuditVerify func(ctx context.Context) (*audit.Report, error)
	// AuditFind reads the audit log (nil: not served).
	AuditFind func(ctx context.Context, q audit.Query) (*audit.Page, error)
	// Opened is told of each newly stored device event (nil: nobody).
	Opened        func(ctx context.Context, p *vigil.Patient, ev *vigil.DeviceEvent)
	FHIR          http.Handler // mounted at /fhir/R4/
	Web           http.Handler // mounted at / (login, ward view, /web/...)
	Gatherer      prometheus.Gatherer
	Ready         func() error
	MaxBody       int  // bytes of a request body (default 256 KiB)
	PublicMetrics bool // serve /metrics without a token
	Now           func() time.Time
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Server serves Vigil's HTTP API.
type Server struct {
	o        Options
	log      *slog.Logger
	mux      *http.ServeMux
	duration *prometheus.HistogramVec

	routes []string // registered patterns, for the authorization-matrix test

	byAddress, byUser, byDevice, logins *ratelimit.Keyed
	limited                             *prometheus.CounterVec

	// edgeSkews remembers each edge's last logged clock skew, so a steady
	// skew is logged once, not with every batch.
	edgeSkews sync.Map
}

// Limits are requests per second (and bursts) allowed per client address
// (every request, including FHIR and the web app), per user (API calls),
// per device (HTTP ingest) and per address for sign-ins.
type Limits struct {
	Address, User, Device, Login                     float64
	AddressBurst, UserBurst, DeviceBurst, LoginBurst int
}

// DefaultLimits: 200/s per address, 50/s per user, 50/s per device, 10
// sign-ins per address per minute.
func DefaultLimits() Limits {
	return Limits{Address: 200, AddressBurst: 400, User: 50, UserBurst: 200, Device: 50, DeviceBurst: 200, Login: 10.0 / 60, LoginBurst: 10}
}

// New returns a server.
func New(o Options) *Server {
	if o.MaxBody <= 0 {
		o.MaxBody = 256 << 10
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Ready == nil {
		o.Ready = func() error { return nil }
	}
	s := &Server{o: o, log: o.Logger, mux: http.NewServeMux()}
	def := DefaultLimits()
	pick := func(v, d float64, b, db int) (float64, int) {
		if v == 0 {
			return d, db
		}
		return v, max(b, 1)
	}
	l := o.Limits
	ar, ab := pick(l.Address, def.Address, l.AddressBurst, def.AddressBurst)
	ur, ub := pick(l.User, def.User, l.UserBurst, def.UserBurst)
	dr, db := pick(l.Device, def.Device, l.DeviceBurst, def.DeviceBurst)
	lr, lb := pick(l.Login, def.Login, l.LoginBurst, def.LoginBurst)
	s.byAddress, s.byUser = ratelimit.New(ar, ab, o.Now), ratelimit.New(ur, ub, o.Now)
	s.byDevice, s.logins = ratelimit.New(dr, db, o.Now), ratelimit.New(lr, lb, o.Now)
	s.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_rate_limited_total", Help: "Requests refused with 429 because the caller exceeded its rate limit, by kind (address, user, device, login).",
	}, []string{"kind"})
	if o.Registerer != nil {
		o.Registerer.MustRegister(s.limited)
	}
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "vigil_http_request_seconds", Help: "HTTP request duration by route and status class.",
		Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
	}, []string{"route", "status"})
	if o.Registerer != nil {
		o.Registerer.MustRegister(s.duration)
	}
	m := &routes{mux: s.mux, list: &s.routes}
	m.HandleFunc("POST /api/v1/devices/{id}/readings", s.ingestFormat(""))
	m.HandleFunc("GET /api/v1/edges/{id}/config", s.edgeConfig)
	m.HandleFunc("POST /api/v1/edges/{id}/readings", s.edgeReadings)
	m.HandleFunc("POST /api/v1/edges/{id}/alerts", s.edgeAlerts)
	m.HandleFunc("GET /api/v1/patients/{id}/export", s.with([]string{vigil.RoleAdmin}, s.subjectExport))
	m.HandleFunc("POST /api/v1/patients/{id}/erase", s.with([]string{vigil.RoleAdmin}, s.erasePatient))
	m.HandleFunc("POST /api/v1/backup", s.with([]string{vigil.RoleAdmin}, s.backup))
	m.HandleFunc("GET /api/v1/edge/status", s.with([]string{vigil.RoleAdmin}, s.edgeStatus))
	m.HandleFunc("POST /api/v1/devices/{id}/gatt", s.ingestFormat("gatt"))
	m.HandleFunc("POST /api/v1/devices/{id}/events", s.postEvents)
	m.HandleFunc("POST /api/v1/devices/{id}/omh", s.ingestFormat("omh"))
	m.HandleFunc("POST /api/v1/devices/{id}/medtech", s.ingestFormat("medtech"))
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	m.HandleFunc("GET /readyz", s.ready)
	m.HandleFunc("GET /metrics", s.metrics)

	adminOnly := []string{vigil.RoleAdmin}
	care := []string{vigil.RoleAdmin, vigil.RoleClinician, vigil.RoleNurse}
	m.HandleFunc("POST /api/v1/patients", s.with(adminOnly, s.addPatient))
	m.HandleFunc("GET /api/v1/patients", s.with(care, s.listPatients))
	m.HandleFunc("GET /api/v1/patients/{id}", s.with(care, s.getPatient))
	m.HandleFunc("GET /api/v1/patients/{id}/news2", s.with(care, s.patientNEWS2))
	m.HandleFunc("GET /api/v1/patients/{id}/series", s.with(care, s.patientSeries))
	m.HandleFunc("GET /api/v1/patients/{id}/rollups", s.with(care, s.patientRollups))
	m.HandleFunc("GET /api/v1/patients/{id}/baselines", s.with(care, s.patientBaselines))
	m.HandleFunc("PUT /api/v1/patients/{id}/medications", s.with([]string{vigil.RoleAdmin, vigil.RoleClinician}, s.putMedications))
	m.HandleFunc("GET /api/v1/patients/{id}/adherence", s.with(care, s.adherence))
	m.HandleFunc("POST /api/v1/patients/{id}/reviews", s.with([]string{vigil.RoleAdmin, vigil.RoleClinician, vigil.RoleNurse}, s.addReview))
	m.HandleFunc("GET /api/v1/patients/{id}/reviews", s.with(care, s.listReviews))
	m.HandleFunc("POST /api/v1/patients/{id}/news2-inputs", s.with(care, s.news2Inputs))
	m.HandleFunc("GET /api/v1/devices/{id}/status", s.with(care, s.deviceStatus))
	oversight := []string{vigil.RoleAdmin, vigil.RoleAuditor}
	m.HandleFunc("GET /api/v1/aggregates", s.with([]string{vigil.RoleAdmin, vigil.RoleAnalyst}, s.aggregates))
	m.HandleFunc("GET /api/v1/studies/{id}/extract", s.with(adminOnly, s.extract))
	m.HandleFunc("GET /api/v1/signals", s.with([]string{vigil.RoleAdmin, vigil.RoleAnalyst}, s.signals))
	m.HandleFunc("GET /api/v1/audit", s.with(oversight, s.auditEntries))
	m.HandleFunc("GET /api/v1/audit/verify", s.with(oversight, s.auditVerify))
	m.HandleFunc("POST /api/v1/patients/{id}/break-glass", s.with([]string{vigil.RoleClinician, vigil.RoleNurse}, s.breakGlass))
	m.HandleFunc("GET /api/v1/reports/break-glass", s.with(oversight, s.breakGlassReport))
	m.HandleFunc("POST /api/v1/devices/{id}/commands", s.with([]string{vigil.RoleAdmin, vigil.RoleClinician}, s.sendCommand))
	m.HandleFunc("GET /api/v1/devices/{id}/commands", s.with(care, s.listCommands))
	m.HandleFunc("GET /api/v1/commands/key", s.commandKey)
	m.HandleFunc("POST /api/v1/patients/{id}/shares", s.with([]string{vigil.RoleAdmin, vigil.RoleClinician}, s.createShare))
	m.HandleFunc("DELETE /api/v1/shares/{id}", s.with([]string{vigil.RoleAdmin, vigil.RoleClinician}, s.revokeShare))
	m.HandleFunc("GET /api/v1/rules", s.with(care, s.listRules))
	m.HandleFunc("GET /api/v1/rules/{id}", s.with(care, s.getRule))
	m.HandleFunc("GET /api/v1/rules/{id}/history", s.with(care, s.ruleHistory))
	m.HandleFunc("PUT /api/v1/rules/{id}", s.with([]string{vigil.RoleAdmin, vigil.RoleClinician}, s.putRule))
	m.HandleFunc("POST /api/v1/rules/backtest", s.with([]string{vigil.RoleAdmin, vigil.RoleClinician}, s.backtest))
	m.HandleFunc("PUT /api/v1/patients/{id}/overrides", s.with([]string{vigil.RoleAdmin, vigil.RoleClinician}, s.putOverrides))
	m.HandleFunc("POST /api/v1/devices", s.with(adminOnly, s.addDevice))
	m.HandleFunc("GET /api/v1/devices", s.with(care, s.listDevices))
	m.HandleFunc("GET /api/v1/devices/{id}", s.with(care, s.getDevice))
	m.HandleFunc("POST /api/v1/devices/{id}/secret", s.with(adminOnly, s.rotateSecret))
	m.HandleFunc("POST /api/v1/devices/{id}/revoke", s.with(adminOnly, s.revokeDevice))
	m.HandleFunc("POST /api/v1/devices/{id}/enrollment-code", s.with(adminOnly, s.enrollmentCode))
	m.HandleFunc("POST /api/v1/devices/{id}/enroll", s.enroll)
	m.HandleFunc("POST /api/v1/devices/{id}/cert", s.with(adminOnly, s.deviceCert))
	m.HandleFunc("POST /api/v1/devices/{id}/assignments", s.with(adminOnly, s.assign))
	m.HandleFunc("GET /api/v1/devices/{id}/assignments", s.with(care, s.assignments))
	m.HandleFunc("POST /api/v1/users", s.with(adminOnly, s.addUser))
	m.HandleFunc("GET /api/v1/users", s.with(adminOnly, s.listUsers))
	m.HandleFunc("POST /api/v1/users/{id}/tokens", s.with(adminOnly, s.createToken))
	m.HandleFunc("POST /api/v1/users/{id}/totp", s.with(adminOnly, s.enrollTOTP))
	m.HandleFunc("GET /api/v1/deadletters", s.with(adminOnly, s.deadLetters))
	m.HandleFunc("GET /api/v1/deadletters/{id}", s.with(adminOnly, s.deadLetter))
	m.HandleFunc("DELETE /api/v1/deadletters/{id}", s.with(adminOnly, s.deleteDeadLetter))
	m.HandleFunc("POST /api/v1/deadletters/{id}/replay", s.with(adminOnly, s.replayDeadLetter))
	m.HandleFunc("POST /api/v1/deadletters/replay", s.with(adminOnly, s.replayDeadLetters))
	m.HandleFunc("PUT /api/v1/mappings/{id}", s.with(adminOnly, s.putMapping))
	m.HandleFunc("GET /api/v1/mappings", s.with(adminOnly, s.listMappings))
	m.HandleFunc("GET /api/v1/mappings/{id}", s.with(adminOnly, s.getMapping))
	m.HandleFunc("POST /api/v1/mappings/test", s.with(adminOnly, s.testMapping))
	m.HandleFunc("GET /api/v1/alerts", s.with(care, s.listAlerts))
	m.HandleFunc("GET /api/v1/alerts/stats", s.with(care, s.alertStats))
	m.HandleFunc("GET /api/v1/reports/rpm", s.with([]string{vigil.RoleAdmin, vigil.RoleClinician}, s.rpmReport))
	m.HandleFunc("POST /api/v1/alerts/{id}/ack", s.with(care, s.ackAlert))
	m.HandleFunc("POST /api/v1/alerts/{id}/snooze", s.with(care, s.snoozeAlert))
	m.HandleFunc("POST /api/v1/alerts/{id}/escalate", s.with(care, s.escalateAlert))
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, problemFor(vigil.Errorf(vigil.ENOTFOUND, "no API route %s %s; see docs/api.md", r.Method, r.URL.Path)))
	})
	if o.FHIR != nil {
		m.Handle("/fhir/R4/", o.FHIR)
		m.Handle("/fhir/R4", o.FHIR)
	}
	if o.Web != nil {
		m.Handle("/", o.Web)
	}
	return s
}

// routes registers handlers and remembers their patterns.
type routes struct {
	mux  *http.ServeMux
	list *[]string
}

func (r *routes) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	*r.list = append(*r.list, pattern)
	r.mux.HandleFunc(pattern, h)
}

func (r *routes) Handle(pattern string, h http.Handler) {
	*r.list = append(*r.list, pattern)
	r.mux.Handle(pattern, h)
}

// Routes returns the patterns the server routes (the mounted FHIR and web
// handlers have their own).
func (s *Server) Routes() []string { return slices.Clone(s.routes) }

// Handler returns the server's handler with request logging and metrics.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.o.Now()
		rw := &statusWriter{ResponseWriter: w, status: 200}
		addr := r.RemoteAddr
		if h, _, err := net.SplitHostPort(addr); err == nil {
			addr = h
		}
		if err := s.limit(s.byAddress, "address", addr); err != nil {
			writeProblem(rw, problemFor(err))
		} else if err := s.limitLogin(r, addr); err != nil {
			writeProblem(rw, problemFor(err))
		} else {
			s.mux.ServeHTTP(rw, r)
		}
		_, pattern := s.mux.Handler(r)
		if pattern == "" {
			pattern = "unmatched"
		}
		d := s.o.Now().Sub(start)
		s.duration.WithLabelValues(pattern, strconv.Itoa(rw.status/100)+"xx").Observe(d.Seconds())
		// Route patterns only: paths and query strings can carry patient ids.
		lvl := slog.LevelDebug
		if rw.status >= 500 {
			lvl = slog.LevelWarn
		}
		s.log.Log(r.Context(), lvl, "http", "method", r.Method, "route", pattern, "status", rw.status, "duration", d)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Flush lets SSE streams through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if err := s.o.Ready(); err != nil {
		writeProblem(w, problemFor(err))
		return
	}
	writeJSON(w, 200, map[string]string{"status": "ready"})
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if !s.o.PublicMetrics {
		if _, err := s.principal(r, []string{vigil.RoleAdmin}); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if s.o.Gatherer == nil {
		writeProblem(w, problemFor(vigil.Errorf(vigil.ENOTFOUND, "metrics are not enabled")))
		return
	}
	promhttp.HandlerFor(s.o.Gatherer, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

// scope refuses a patient route ({id} of /patients/{id}/...) for a
// patient the principal may not see (another ward; break-glass opens it,
// so that route itself is exempt). An unknown patient passes: the handler
// answers 404.
func (s *Server) scope(r *http.Request, p *vigil.Principal) error {
	if !strings.Contains(r.Pattern, "/patients/{id}") || strings.HasSuffix(r.Pattern, "/break-glass") {
		return nil
	}
	pt, err := s.o.Store.FindPatientByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil
	}
	if !p.Sees(pt.ID, pt.Ward) {
		return vigil.Errorf(vigil.EFORBIDDEN, "patient %s is not on your wards; in an emergency, break the glass: POST /api/v1/patients/%s/break-glass with a reason", pt.ID, pt.ID)
	}
	return nil
}

// visible keeps the items whose patient the principal may see.
func visible[T any](ctx context.Context, s *Server, p *vigil.Principal, items []T, patientOf func(T) string) []T {
	if p.Role == vigil.RoleAdmin || len(p.Wards) == 0 && p.Role != vigil.RolePatient {
		return items
	}
	wards := map[string]string{}
	out := items[:0:0]
	for _, it := range items {
		id := patientOf(it)
		w, ok := wards[id]
		if !ok {
			if pt, err := s.o.Store.FindPatientByID(ctx, id); err == nil {
				w = pt.Ward
			}
			wards[id] = w
		}
		if p.Sees(id, w) {
			out = append(out, it)
		}
	}
	return out
}

// limit takes a token of key's bucket, or returns ETOOMANY (counted).
func (s *Server) limit(k *ratelimit.Keyed, kind, key string) error {
	if ok, wait := k.Allow(key); !ok {
		s.limited.WithLabelValues(kind).Inc()
		return &vigil.Error{Code: vigil.ETOOMANY, Reason: "rate-limited",
			Message: fmt.Sprintf("too many requests from this %s: slow down and retry in %s", kind, wait.Round(time.Millisecond)+time.Millisecond)}
	}
	return nil
}

// limitLogin slows down password guessing: sign-ins per client address.
func (s *Server) limitLogin(r *http.Request, addr string) error {
	if r.Method != http.MethodPost || r.URL.Path != "/login" {
		return nil
	}
	return s.limit(s.logins, "login", addr)
}

// principal authenticates a bearer token and checks the
// role.
func (s *Server) principal(r *http.Request, roles []string) (*vigil.Principal, error) {
	tok := auth.Bearer(r)
	if tok == "" {
		return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "this API needs a token: send Authorization: Bearer <token> (create one with vigil token create)")
	}
	p, err := s.o.Auth.Principal(r.Context(), tok)
	if err != nil {
		return nil, err
	}
	if len(p.Scopes) > 0 {
		return nil, vigil.Errorf(vigil.EFORBIDDEN, "this token carries SMART scopes (%s) and works on the FHIR API (/fhir/R4) only", strings.Join(p.Scopes, " "))
	}
	if p.Guest != "" {
		return nil, vigil.Errorf(vigil.EFORBIDDEN, "a share link opens the web app's view of one patient, not the API")
	}
	for _, role := range roles {
		if p.Role == role {
			return p, nil
		}
	}
	return nil, vigil.Errorf(vigil.EFORBIDDEN, "role %s may not do this; it needs %s", p.Role, strings.Join(roles, " or "))
}

type handler func(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error

// auditNote is where a handler leaves a detail for its request's audit
// entry (auditDetail), for example the approval a research extract was
// made under.
type auditNote struct{ detail string }

type auditNoteKey struct{}

// auditDetail records detail in the audit entry of r's request. It must
// not hold PHI.
func auditDetail(r *http.Request, detail string) {
	if n, ok := r.Context().Value(auditNoteKey{}).(*auditNote); ok {
		n.detail = detail
	}
}

func (s *Server) with(roles []string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		note := &auditNote{}
		r = r.WithContext(context.WithValue(r.Context(), auditNoteKey{}, note))
		p, err := s.principal(r, roles)
		if err == nil {
			err = s.limit(s.byUser, "user", p.UserID)
		}
		if err == nil {
			err = s.scope(r, p)
		}
		if err == nil {
			err = h(w, r, p)
		}
		if err != nil {
			s.fail(w, r, err)
		}
		if s.o.Audit != nil {
			actor, role := "", ""
			if p != nil {
				actor, role = p.UserID, p.Role
			}
			e := audit.FromRequest(r, actor, role, err)
			if note.detail != "" {
				e.Detail = strings.TrimSpace(e.Detail + " " + note.detail)
			}
			s.o.Audit(r.Context(), e)
		}
	}
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	p := problemFor(err)
	if p.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="vigil"`)
	}
	if p.Code == vigil.EINTERNAL || p.Code == "" {
		s.log.Error("request failed", "method", r.Method, "route", r.Pattern, "err", err)
	}
	writeProblem(w, p)
}

// decode reads a JSON request body into v.
func (s *Server) decode(r *http.Request, v any) error {
	body, err := netlimit.ReadBody(r.Body, r.ContentLength, s.o.MaxBody)
	if err != nil {
		return vigil.Errorf(vigil.EINVALID, "cannot read the request body: %v", err)
	}
	if len(body) > s.o.MaxBody {
		return &vigil.Error{Code: vigil.ETOOLARGE, Message: "request body too large; the limit is " + strconv.Itoa(s.o.MaxBody) + " bytes", Reason: "too-large"}
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return vigil.FieldErrorf(te.Field, "wrong-type", "%s has the wrong JSON type", te.Field)
		}
		return vigil.FieldErrorf("", "malformed", "malformed JSON body: %v", err)
	}
	return nil
}
