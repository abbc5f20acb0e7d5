package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/auth"
	"github.com/vigil-iomt/vigil/internal/ingest"
	"github.com/vigil-iomt/vigil/internal/live"
	"github.com/vigil-iomt/vigil/internal/mapping"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

var ctx = context.Background()

type env struct {
	srv     *httptest.Server
	store   *pebble.Store
	admin   *admin.Service
	secret  string // device "mon"
	tokens  map[string]string
	ready   error
	alerts  *alerting.Engine
	pipe    *ingest.Pipeline
	metrics *prometheus.Registry
}

func setup(t *testing.T, limits ...Limits) *env {
	t.Helper()
	so := pebble.DefaultOptions()
	so.CompactInterval = -1
	st, err := pebble.Open(t.TempDir(), so)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{store: st, tokens: map[string]string{}, metrics: prometheus.NewRegistry()}
	a := auth.NewAuthenticator(st, auth.Options{})
	e.alerts, err = alerting.New(ctx, st, &live.Hub{}, alerting.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	io := ingest.DefaultOptions()
	io.OnStored = []func(context.Context, []*vigil.Reading){e.alerts.Observe}
	e.pipe = ingest.New(st, mapping.DefaultTable(), io)
	e.admin = &admin.Service{Store: st, Auth: a, Now: time.Now, OnDeviceChanged: e.pipe.InvalidateDevice}
	s := New(Options{Store: st, Auth: a, Admin: e.admin, Ingester: e.pipe, Alerts: e.alerts,
		Gatherer: e.metrics, Registerer: e.metrics, MaxBody: 4096, Ready: func() error { return e.ready }})
	if len(limits) > 0 {
		s = New(Options{Store: st, Auth: a, Admin: e.admin, Ingester: e.pipe, Alerts: e.alerts,
			Gatherer: e.metrics, MaxBody: 4096, Ready: func() error { return e.ready }, Limits: limits[0]})
	}
	e.srv = httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		e.srv.Close()
		e.pipe.Close()
		st.Close()
	})
	must(t, e.admin.AddPatient(ctx, &vigil.Patient{ID: "p1", Family: "Doe"}))
	e.secret, err = e.admin.AddDevice(ctx, &vigil.Device{ID: "mon", Kind: vigil.DeviceBedsideMonitor})
	must(t, err)
	_, err = e.admin.AddDevice(ctx, &vigil.Device{ID: "other", Kind: vigil.DeviceWearable})
	must(t, err)
	must(t, e.admin.Assign(ctx, "mon", "p1", time.Now().Add(-time.Hour)))
	for _, role := range []string{vigil.RoleAdmin, vigil.RoleClinician, vigil.RoleNurse} {
		must(t, e.admin.AddUser(ctx, &vigil.User{ID: role + "-1", Role: role}, "a long enough password"))
		e.tokens[role], _, err = e.admin.CreateToken(ctx, role+"-1", admin.TokenSpec{Name: "test", TTL: time.Hour})
		must(t, err)
	}
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) post(t *testing.T, device, secret, path, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(body))
	if device != "" {
		req.SetBasicAuth(device, secret)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (*http.Response, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp, m
}

func reading(id string, value float64) string {
	return fmt.Sprintf(`{"id":%q,"time":%q,"values":[{"code":"59408-5","value":%g,"unit":"%%"}]}`, id, time.Now().UTC().Format(time.RFC3339Nano), value)
}

func TestIngestRoute(t *testing.T) {
	e := setup(t)
	path := "/api/v1/devices/mon/readings"
	for _, c := range []struct {
		name, device, secret, path, body string
		status                           int
		ctype, field, reason             string
	}{
		{"stored", "mon", e.secret, path, reading("r1", 97), 200, "application/json", "", ""},
		{"duplicate is 200", "mon", e.secret, path, reading("r1", 97), 200, "application/json", "", ""},
		{"no credentials", "", "", path, reading("r2", 97), 401, "application/problem+json", "", ""},
		{"wrong secret", "mon", "nope", path, reading("r2", 97), 401, "application/problem+json", "", ""},
		{"other device's path", "other", "x", path, reading("r2", 97), 401, "application/problem+json", "", ""},
		{"malformed", "mon", e.secret, path, `{"id":`, 400, "application/problem+json", "", "malformed"},
		{"implausible", "mon", e.secret, path, reading("r3", 120), 422, "application/problem+json", "values[0].value", "implausible"},
		{"too large", "mon", e.secret, path, `[` + strings.Repeat(reading("x", 97)+",", 60) + `]`, 413, "application/problem+json", "", "too-large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.post(t, c.device, c.secret, c.path, c.body)
			if resp.StatusCode != c.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.ctype) {
				t.Fatalf("status %d %s, want %d %s: %v", resp.StatusCode, resp.Header.Get("Content-Type"), c.status, c.ctype, body)
			}
			if c.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
				t.Fatalf("401 without a Basic challenge")
			}
			if c.field != "" && body["field"] != c.field || c.reason != "" && body["reason"] != c.reason {
				t.Fatalf("problem %v, want field %q reason %q", body, c.field, c.reason)
			}
		})
	}
	// A device posting to another device's path with its own credentials.
	other, _ := e.admin.RotateDeviceSecret(ctx, "other")
	resp, _ := e.post(t, "other", other, path, reading("r9", 97))
	if resp.StatusCode != 403 {
		t.Fatalf("cross-device post: %d", resp.StatusCode)
	}
	// Mixed array: 422 names the refused one; the good one is stored.
	resp, body := e.post(t, "mon", e.secret, path, "["+reading("m1", 97)+","+reading("m2", 300)+"]")
	if resp.StatusCode != 422 || body["accepted"] != 1.0 {
		t.Fatalf("mixed: %d %v", resp.StatusCode, body)
	}
	errs := body["errors"].([]any)
	if len(errs) != 1 || errs[0].(map[string]any)["field"] != "[1].values[0].value" || errs[0].(map[string]any)["id"] != "m2" {
		t.Fatalf("errors: %v", errs)
	}
	obs, _, _ := e.store.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1"})
	if len(obs) != 2 {
		t.Fatalf("%d observations stored, want 2 (r1, m1)", len(obs))
	}
	// Shutting down: 503 with Retry-After.
	e.pipe.Close()
	resp, _ = e.post(t, "mon", e.secret, path, reading("late", 97))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after pipeline close: %d", resp.StatusCode)
	}
}

func TestRolesAndHealth(t *testing.T) {
	e := setup(t)
	get := func(path, token string) int {
		req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, _ := do(t, req)
		return resp.StatusCode
	}
	for _, c := range []struct {
		path, role string
		want       int
	}{
		{"/api/v1/patients", "", 401},
		{"/api/v1/patients", vigil.RoleNurse, 200},
		{"/api/v1/users", vigil.RoleNurse, 403},
		{"/api/v1/users", vigil.RoleClinician, 403},
		{"/api/v1/users", vigil.RoleAdmin, 200},
		{"/api/v1/deadletters", vigil.RoleAdmin, 200},
		{"/api/v1/alerts", vigil.RoleNurse, 200},
		{"/api/v1/patients/nobody", vigil.RoleAdmin, 404},
		{"/api/v1/nothing", vigil.RoleAdmin, 404},
		{"/metrics", "", 401},
		{"/metrics", vigil.RoleNurse, 403},
		{"/metrics", vigil.RoleAdmin, 200},
		{"/healthz", "", 200},
		{"/readyz", "", 200},
	} {
		tok := ""
		if c.role != "" {
			tok = e.tokens[c.role]
		}
		if got := get(c.path, tok); got != c.want {
			t.Errorf("GET %s as %q = %d, want %d", c.path, c.role, got, c.want)
		}
	}
	if got := get("/api/v1/patients", "vgl_garbage"); got != 401 {
		t.Errorf("bad token: %d", got)
	}
	e.ready = vigil.Errorf(vigil.EUNAVAILABLE, "starting")
	if got := get("/readyz", ""); got != 503 {
		t.Errorf("readyz while not ready: %d", got)
	}
	// A nurse cannot add devices.
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/devices", strings.NewReader(`{"id":"x","kind":"wearable"}`))
	req.Header.Set("Authorization", "Bearer "+e.tokens[vigil.RoleNurse])
	if resp, _ := do(t, req); resp.StatusCode != 403 {
		t.Errorf("nurse adding a device: %d", resp.StatusCode)
	}
}

func TestClientRoundTrip(t *testing.T) {
	e := setup(t)
	c := NewClient(e.srv.URL, e.tokens[vigil.RoleAdmin])
	p := &vigil.Patient{ID: "p2", Family: "Roe", Ward: "ICU"}
	must(t, c.AddPatient(ctx, p))
	if p.Version != 1 || p.Created.IsZero() {
		t.Fatalf("patient not updated from the answer: %+v", p)
	}
	err := c.AddPatient(ctx, &vigil.Patient{ID: "p2"})
	if vigil.ErrorCode(err) != vigil.ECONFLICT {
		t.Fatalf("conflict: %v", err)
	}
	err = c.AddPatient(ctx, &vigil.Patient{ID: "p3", Sex: "x"})
	if ve, ok := err.(*vigil.Error); !ok || ve.Code != vigil.EINVALID || ve.Field != "sex" || ve.Reason != "invalid" {
		t.Fatalf("field error lost: %#v", err)
	}
	secret, err := c.AddDevice(ctx, &vigil.Device{ID: "w2", Kind: vigil.DeviceWearable})
	must(t, err)
	must(t, c.Assign(ctx, "w2", "p2", time.Time{}))
	secret2, err := c.RotateDeviceSecret(ctx, "w2")
	must(t, err)
	if secret == secret2 || secret2 == "" {
		t.Fatal("rotation returned the same secret")
	}
	if resp, _ := e.post(t, "w2", secret2, "/api/v1/devices/w2/readings", reading("a", 95)); resp.StatusCode != 200 {
		t.Fatalf("new secret: %d", resp.StatusCode)
	}
	if resp, _ := e.post(t, "w2", secret, "/api/v1/devices/w2/readings", reading("b", 95)); resp.StatusCode != 401 {
		t.Fatalf("old secret: %d", resp.StatusCode)
	}
	must(t, c.AddUser(ctx, &vigil.User{ID: "n2", Role: vigil.RoleNurse}, "another long password"))
	err = c.AddUser(ctx, &vigil.User{ID: "n3", Role: vigil.RoleNurse}, "short")
	if ve, _ := err.(*vigil.Error); ve == nil || ve.Field != "password" {
		t.Fatalf("short password: %v", err)
	}
	tok, rec, err := c.CreateToken(ctx, "n2", admin.TokenSpec{Name: "ward pc", TTL: 24 * time.Hour})
	must(t, err)
	if rec.UserID != "n2" || rec.Expires.IsZero() || !strings.HasPrefix(tok, "vgl_") {
		t.Fatalf("token: %+v", rec)
	}
	ps, err := c.ListPatients(ctx)
	must(t, err)
	ds, err := c.ListDevices(ctx)
	must(t, err)
	us, err := c.ListUsers(ctx)
	must(t, err)
	if len(ps) != 2 || len(ds) != 3 || len(us) != 4 {
		t.Fatalf("lists: %d patients, %d devices, %d users", len(ps), len(ds), len(us))
	}
	for _, u := range us {
		if u.PasswordHash != "" {
			t.Fatal("password hash sent to the client")
		}
	}
	dl, err := c.DeadLetters(ctx, vigil.DeadLetterFilter{})
	must(t, err)
	if len(dl) != 0 {
		t.Fatal("dead letters from HTTP ingest")
	}
	// An alert raised by ingest, listed and acknowledged through the API.
	for i := 0; i < 3; i++ {
		body := fmt.Sprintf(`{"id":"low%d","time":%q,"values":[{"code":"59408-5","value":85,"unit":"%%"}]}`, i, time.Now().Add(time.Duration(i-2)*time.Minute).UTC().Format(time.RFC3339))
		if resp, b := e.post(t, "mon", e.secret, "/api/v1/devices/mon/readings", body); resp.StatusCode != 200 {
			t.Fatalf("low spo2: %d %v", resp.StatusCode, b)
		}
	}
	var as []*vigil.Alert
	for deadline := time.Now().Add(5 * time.Second); len(as) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		as, err = c.Alerts(ctx, vigil.AlertFilter{PatientID: "p1", States: []string{vigil.AlertFiring}})
		must(t, err)
	}
	if len(as) == 0 {
		t.Fatal("no alert raised for SpO2 85 % over two minutes")
	}
	nurse := NewClient(e.srv.URL, e.tokens[vigil.RoleNurse])
	a, err := nurse.Acknowledge(ctx, as[0].ID, "on my way")
	must(t, err)
	if a.State != vigil.AlertAcknowledged || a.History[len(a.History)-1].By != "nurse-1" {
		t.Fatalf("ack: %+v", a)
	}
	if _, err := nurse.Acknowledge(ctx, "nope", ""); vigil.ErrorCode(err) != vigil.ENOTFOUND {
		t.Fatalf("ack unknown: %v", err)
	}
	if _, err := NewClient(e.srv.URL, "vgl_bad").ListPatients(ctx); vigil.ErrorCode(err) != vigil.EUNAUTHORIZED {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := NewClient("http://127.0.0.1:1", "x").ListPatients(ctx); vigil.ErrorCode(err) != vigil.EUNAVAILABLE {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestRPMReport(t *testing.T) {
	e := setup(t)
	sec, err := e.admin.AddDevice(ctx, &vigil.Device{ID: "cuff", Kind: vigil.DeviceBPCuff})
	must(t, err)
	must(t, e.admin.Assign(ctx, "cuff", "p1", time.Now().AddDate(0, 0, -5)))
	for i := 0; i < 3; i++ {
		body := fmt.Sprintf(`{"id":"d%d","time":%q,"values":[{"code":"59408-5","value":97,"unit":"%%"}]}`, i, time.Now().UTC().AddDate(0, 0, -i).Format(time.RFC3339))
		if resp, b := e.post(t, "cuff", sec, "/api/v1/devices/cuff/readings", body); resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, b)
		}
	}
	review := func(token, body string) int {
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/patients/p1/reviews", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, _ := do(t, req)
		return resp.StatusCode
	}
	if st := review(e.tokens[vigil.RoleClinician], `{"minutes":12,"note":"BP trend reviewed"}`); st != 201 {
		t.Fatalf("review: %d", st)
	}
	if st := review(e.tokens[vigil.RoleNurse], `{"minutes":9,"at":"`+time.Now().UTC().AddDate(0, 0, -2).Format(time.RFC3339)+`"}`); st != 201 {
		t.Fatalf("nurse review: %d", st)
	}
	if st := review(e.tokens[vigil.RoleNurse], `{"minutes":0}`); st != 400 {
		t.Fatalf("0 minutes: %d", st)
	}
	from := time.Now().UTC().AddDate(0, 0, -10).Format(time.DateOnly)
	req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/reports/rpm?from="+from+"&format=csv", nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens[vigil.RoleClinician])
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if resp.StatusCode != 200 || len(lines) != 2 || !strings.HasPrefix(lines[1], "p1,,"+from) || !strings.HasSuffix(lines[1], ",3,false,21,true") {
		t.Fatalf("csv: %d %q", resp.StatusCode, b)
	}
	req, _ = http.NewRequest("GET", e.srv.URL+"/api/v1/reports/rpm", nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens[vigil.RoleNurse])
	if resp, _ := do(t, req); resp.StatusCode != 403 {
		t.Fatalf("nurse: %d", resp.StatusCode)
	}
}

// Rate limits: a user, a device and an address past their budget get 429
// problem+json with Retry-After; others go on.
func TestRateLimits(t *testing.T) {
	e := setup(t, Limits{User: 0.001, UserBurst: 3, Device: 0.001, DeviceBurst: 2, Address: 1000, AddressBurst: 1000, Login: 0.001, LoginBurst: 2})
	get := func(token string) *http.Response {
		req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/patients", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		return resp
	}
	for i := range 3 {
		if r := get(e.tokens[vigil.RoleNurse]); r.StatusCode != 200 {
			t.Fatalf("call %d: %d", i, r.StatusCode)
		}
	}
	r := get(e.tokens[vigil.RoleNurse])
	if r.StatusCode != 429 || r.Header.Get("Retry-After") == "" || r.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("past the user's budget: %d %v", r.StatusCode, r.Header)
	}
	if r := get(e.tokens[vigil.RoleClinician]); r.StatusCode != 200 {
		t.Fatalf("another user: %d", r.StatusCode)
	}
	body := `{"id":"%d","time":"` + time.Now().UTC().Format(time.RFC3339) + `","values":[{"code":"8867-4","value":70,"unit":"/min"}]}`
	for i := range 3 {
		resp, _ := e.post(t, "mon", e.secret, "/api/v1/devices/mon/readings", fmt.Sprintf(body, i))
		if want := map[bool]int{true: 200, false: 429}[i < 2]; resp.StatusCode != want {
			t.Fatalf("device post %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
}
