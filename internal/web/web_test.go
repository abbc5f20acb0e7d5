package web

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/auth"
	"github.com/vigil-iomt/vigil/internal/live"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

// env is a web app on a real HTTP server (port 0) over the embedded store
// in a temporary directory, with the real authenticator, alert engine and
// hub.
type env struct {
	t      testing.TB
	store  *pebble.Store
	auth   *auth.Authenticator
	hub    *live.Hub
	alerts *alerting.Engine
	srv    *httptest.Server
}

func newEnv(t testing.TB, configure func(*Options), wrap ...func(http.Handler) http.Handler) *env {
	t.Helper()
	so := pebble.DefaultOptions()
	so.CompactInterval = -1
	st, err := pebble.Open(t.TempDir(), so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, store: st, hub: &live.Hub{}}
	e.auth = auth.NewAuthenticator(st, auth.Options{})
	if e.alerts, err = alerting.New(context.Background(), e.store, e.hub, alerting.DefaultOptions()); err != nil {
		t.Fatal(err)
	}
	opts := Options{Store: e.store, Auth: e.auth, Hub: e.hub, Alerts: e.alerts, Thresholds: e.alerts.Thresholds}
	if configure != nil {
		configure(&opts)
	}
	h := NewHandler(opts)
	for _, w := range wrap {
		h = w(h)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) addPatient(id, given, family, ward, bed string) {
	e.t.Helper()
	if err := e.store.CreatePatient(context.Background(), &vigil.Patient{ID: id, Given: given, Family: family, Ward: ward, Bed: bed}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) addUser(id, role, patientID, password string) {
	e.t.Helper()
	h, err := auth.HashSecret(password)
	if err != nil {
		e.t.Fatal(err)
	}
	u := &vigil.User{ID: id, Role: role, PatientID: patientID, PasswordHash: h}
	if err := e.store.CreateUser(context.Background(), u); err != nil {
		e.t.Fatal(err)
	}
}

// ingest stores the reading, runs the alert engine on it and publishes it,
// as the ingest pipeline's observers do.
func (e *env) ingest(rs ...*vigil.Reading) {
	e.t.Helper()
	for _, r := range rs {
		if r.Received.IsZero() {
			r.Received = time.Now().UTC()
		}
	}
	if _, err := e.store.AppendReadings(context.Background(), rs); err != nil {
		e.t.Fatal(err)
	}
	e.alerts.Observe(context.Background(), rs)
	for _, r := range rs {
		e.hub.Publish(live.Event{Type: live.TypeReading, PatientID: r.PatientID, Data: r})
	}
}

// client returns an HTTP client with a cookie jar that does not follow
// redirects.
func (e *env) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([0-9a-f]+)">`)

// login signs in through the form and returns the client and the CSRF
// token from the ward page.
func (e *env) login(user, password string) (*http.Client, string) {
	e.t.Helper()
	c := e.client()
	res, err := c.PostForm(e.srv.URL+"/login", url.Values{"user": {user}, "password": {password}})
	if err != nil {
		e.t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("login %s: status %d, want 303", user, res.StatusCode)
	}
	body := e.get(c, "/", http.StatusOK)
	m := csrfMeta.FindStringSubmatch(body)
	if m == nil {
		e.t.Fatalf("ward page has no CSRF token")
	}
	return c, m[1]
}

func (e *env) get(c *http.Client, path string, want int) string {
	e.t.Helper()
	res, err := c.Get(e.srv.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		e.t.Fatalf("GET %s: status %d, want %d; body %s", path, res.StatusCode, want, b)
	}
	return string(b)
}

func (e *env) post(c *http.Client, path string, hdr map[string]string, body string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestLogin(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secure=%v", secure), func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.SecureCookies = secure })
			e.addUser("nurse1", vigil.RoleNurse, "", "correct horse")

			tests := []struct {
				name, user, password string
				wantStatus           int
				wantCookie           bool
			}{
				{"right password", "nurse1", "correct horse", http.StatusSeeOther, true},
				{"wrong password", "nurse1", "wrong", http.StatusUnauthorized, false},
				{"unknown user", "nobody", "correct horse", http.StatusUnauthorized, false},
				{"empty", "", "", http.StatusUnauthorized, false},
			}
			var failBodies []string
			for _, tt := range tests {
				res, err := e.client().PostForm(e.srv.URL+"/login", url.Values{"user": {tt.user}, "password": {tt.password}})
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != tt.wantStatus {
					t.Errorf("%s: status %d, want %d", tt.name, res.StatusCode, tt.wantStatus)
				}
				var session *http.Cookie
				for _, c := range res.Cookies() {
					if c.Name == SessionCookie {
						session = c
					}
				}
				if got := session != nil; got != tt.wantCookie {
					t.Fatalf("%s: session cookie set = %v, want %v", tt.name, got, tt.wantCookie)
				}
				if session != nil {
					if !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Secure != secure || session.Path != "/" {
						t.Errorf("%s: cookie %+v, want HttpOnly, SameSite=Strict, Secure=%v, Path=/", tt.name, session, secure)
					}
					if got := res.Header.Get("Location"); got != "/" {
						t.Errorf("%s: redirect to %q, want /", tt.name, got)
					}
				} else {
					msg := regexp.MustCompile(`id="login-error">([^<]*)<`).FindStringSubmatch(string(b))
					if msg == nil {
						t.Fatalf("%s: no error message on the page", tt.name)
					}
					failBodies = append(failBodies, msg[1])
				}
			}
			// One generic message, whatever was wrong.
			if len(slices.Compact(slices.Clone(failBodies))) != 1 {
				t.Errorf("failure messages differ: %q", failBodies)
			}
		})
	}
}

func TestNoSession(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	res, err := c.Get(e.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/login" {
		t.Errorf("GET / without session: %d to %q, want 303 to /login", res.StatusCode, res.Header.Get("Location"))
	}
	for _, path := range []string{"/web/api/ward", "/web/api/events", "/web/api/patients/p1"} {
		e.get(c, path, http.StatusUnauthorized)
	}
	if got, _ := e.post(c, "/web/api/alerts/x/ack", nil, ""); got != http.StatusUnauthorized {
		t.Errorf("ack without session: %d, want 401", got)
	}
	// A forged or revoked cookie is no session either.
	u, _ := url.Parse(e.srv.URL)
	c.Jar.SetCookies(u, []*http.Cookie{{Name: SessionCookie, Value: "vgl_abc_def"}})
	e.get(c, "/web/api/ward", http.StatusUnauthorized)
	// The paths of other packages are not the web app's.
	for _, path := range []string{"/api/v1/patients", "/fhir/R4/metadata", "/metrics", "/healthz", "/readyz"} {
		e.get(c, path, http.StatusNotFound)
	}
}

func TestCSRF(t *testing.T) {
	e := newEnv(t, nil)
	e.addPatient("p1", "Ada", "Lovelace", "4B", "1")
	e.addUser("nurse1", vigil.RoleNurse, "", "pw-nurse")
	e.ingest(&vigil.Reading{DeviceID: "d1", ID: "1", PatientID: "p1", Time: time.Now().UTC(),
		Values: []vigil.Measurement{{Code: vigil.LOINCBodyTemp, Value: 39.7, Unit: "Cel"}}})
	open, _ := e.alerts.Alerts(context.Background(), vigil.AlertFilter{})
	if len(open) != 1 {
		t.Fatalf("setup: %d alerts, want 1", len(open))
	}
	path := "/web/api/alerts/" + open[0].ID + "/ack"
	c, token := e.login("nurse1", "pw-nurse")
	other, otherToken := e.login("nurse1", "pw-nurse") // a second session has its own token
	if token == otherToken {
		t.Fatalf("two sessions share a CSRF token")
	}

	tests := []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"no token", nil, http.StatusForbidden},
		{"wrong token", map[string]string{csrfHeader: strings.Repeat("0", 64)}, http.StatusForbidden},
		{"another session's token", map[string]string{csrfHeader: otherToken}, http.StatusForbidden},
		{"foreign origin", map[string]string{csrfHeader: token, "Origin": "https://evil.example"}, http.StatusForbidden},
		{"right token", map[string]string{csrfHeader: token, "Origin": e.srv.URL}, http.StatusOK},
	}
	for _, tt := range tests {
		got, body := e.post(c, path, tt.hdr, `{"note":"seen"}`)
		if got != tt.want {
			t.Errorf("%s: status %d, want %d (%s)", tt.name, got, tt.want, body)
		}
	}
	a, err := e.store.FindAlertByID(context.Background(), open[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	last := a.History[len(a.History)-1]
	if a.State != vigil.AlertAcknowledged || last.By != "nurse1" || last.Note != "seen" {
		t.Errorf("stored alert %s, last event %+v; want acknowledged by nurse1 with the note", a.State, last)
	}
	if got, _ := e.post(c, "/web/api/alerts/nope/ack", map[string]string{csrfHeader: token}, ""); got != http.StatusNotFound {
		t.Errorf("ack unknown alert: %d, want 404", got)
	}

	// Logout needs the token too, then ends the session.
	res, err := c.PostForm(e.srv.URL+"/logout", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("logout without CSRF: %d, want 403", res.StatusCode)
	}
	res, err = c.PostForm(e.srv.URL+"/logout", url.Values{"csrf": {token}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther {
		t.Errorf("logout: %d, want 303", res.StatusCode)
	}
	e.get(c, "/web/api/ward", http.StatusUnauthorized)
	e.get(other, "/web/api/ward", http.StatusOK) // the other session lives on
}

func TestWardAndVisibility(t *testing.T) {
	e := newEnv(t, nil)
	e.addPatient("p1", "Ada", "Lovelace", "4B", "1")
	e.addPatient("p2", "Alan", "Turing", "4B", "2")
	e.addPatient("p3", "Grace", "Hopper", "4B", "3")
	e.addUser("nurse1", vigil.RoleNurse, "", "pw-nurse")
	e.addUser("ada", vigil.RolePatient, "p1", "pw-ada")
	at := time.Now().UTC().Truncate(time.Second)
	e.ingest(&vigil.Reading{DeviceID: "mon1", ID: "1", PatientID: "p1", Time: at, Values: []vigil.Measurement{
		{Code: vigil.LOINCHeartRate, Value: 72, Unit: "/min"}, {Code: vigil.LOINCSpO2, Value: 97, Unit: "%"},
		{Code: vigil.LOINCRespRate, Value: 14, Unit: "/min"}, {Code: vigil.LOINCBodyTemp, Value: 36.8, Unit: "Cel"}}})
	e.ingest(&vigil.Reading{DeviceID: "cuff1", ID: "1", PatientID: "p1", Time: at, Values: []vigil.Measurement{
		{Code: vigil.LOINCSystolic, Value: 121, Unit: "mm[Hg]"}, {Code: vigil.LOINCDiastolic, Value: 79, Unit: "mm[Hg]"}}})
	e.ingest(&vigil.Reading{DeviceID: "cuff3", ID: "1", PatientID: "p3", Time: at, Values: []vigil.Measurement{
		{Code: vigil.LOINCSystolic, Value: 84, Unit: "mm[Hg]"}, {Code: vigil.LOINCDiastolic, Value: 50, Unit: "mm[Hg]"}}})

	nurse, _ := e.login("nurse1", "pw-nurse")
	var w Ward
	if err := json.Unmarshal([]byte(e.get(nurse, "/web/api/ward", http.StatusOK)), &w); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range w.Patients {
		ids = append(ids, p.PatientID)
	}
	if want := []string{"p3", "p1", "p2"}; !slices.Equal(ids, want) {
		t.Errorf("nurse sees %v, want %v (alerting patient first)", ids, want)
	}
	if !w.CanAck || w.Role != vigil.RoleNurse {
		t.Errorf("nurse: canAck %v role %q", w.CanAck, w.Role)
	}
	p1 := w.Patients[1]
	wantVitals := []struct {
		name string
		got  *Vital
		want float64
	}{{"hr", p1.HR, 72}, {"spo2", p1.SpO2, 97}, {"rr", p1.RR, 14}, {"temp", p1.Temp, 36.8}}
	for _, v := range wantVitals {
		if v.got == nil || v.got.Value != v.want || !v.got.Time.Equal(at) || v.got.Unit == "" {
			t.Errorf("p1 %s = %+v, want %v at %v with a unit", v.name, v.got, v.want, at)
		}
	}
	if p1.BP == nil || p1.BP.Systolic != 121 || p1.BP.Diastolic != 79 || p1.BP.Unit != "mm[Hg]" {
		t.Errorf("p1 bp = %+v, want 121/79 mm[Hg]", p1.BP)
	}
	if p1.Name != "Ada Lovelace" || p1.Ward != "4B" || p1.Bed != "1" {
		t.Errorf("p1 = %q %q %q", p1.Name, p1.Ward, p1.Bed)
	}
	if got := w.Patients[0].Alerts; len(got) != 1 || got[0].RuleID != "sbp-low" {
		t.Errorf("p3 alerts = %v, want sbp-low", got)
	}

	ada, adaCSRF := e.login("ada", "pw-ada")
	w = Ward{}
	if err := json.Unmarshal([]byte(e.get(ada, "/web/api/ward", http.StatusOK)), &w); err != nil {
		t.Fatal(err)
	}
	if len(w.Patients) != 1 || w.Patients[0].PatientID != "p1" || w.CanAck {
		t.Errorf("patient sees %d tiles (canAck %v), want only their own", len(w.Patients), w.CanAck)
	}
	e.get(ada, "/web/api/patients/p1", http.StatusOK)
	for _, other := range []string{"p2", "p3", "nope"} {
		e.get(ada, "/web/api/patients/"+other, http.StatusForbidden)
	}
	e.get(nurse, "/web/api/patients/p2", http.StatusOK)
	e.get(nurse, "/web/api/patients/nope", http.StatusNotFound)
	p3alerts, _ := e.alerts.Alerts(context.Background(), vigil.AlertFilter{PatientID: "p3"})
	if got, _ := e.post(ada, "/web/api/alerts/"+p3alerts[0].ID+"/ack", map[string]string{csrfHeader: adaCSRF}, ""); got != http.StatusForbidden {
		t.Errorf("patient acknowledging another patient's alert: %d, want 403", got)
	}
}

// sseStream reads Server-Sent Events.
type sseStream struct {
	t    testing.TB
	res  *http.Response
	r    *bufio.Reader
	done chan struct{}
}

func (e *env) stream(c *http.Client) *sseStream {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/web/api/events", nil)
	res, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		e.t.Fatalf("events: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	s := &sseStream{t: e.t, res: res, r: bufio.NewReader(res.Body)}
	if got := s.next(); got != ": connected" {
		e.t.Fatalf("first block %q, want the connected comment", got)
	}
	return s
}

// next returns the next block (event or comment), without the retry
// line, or "EOF" when the stream ends.
func (s *sseStream) next() string {
	s.t.Helper()
	var lines []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return "EOF"
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			if len(lines) > 0 {
				return strings.Join(lines, "\n")
			}
			continue
		}
		if !strings.HasPrefix(line, "retry:") {
			lines = append(lines, line)
		}
	}
}

func TestEvents(t *testing.T) {
	e := newEnv(t, nil)
	e.addPatient("p1", "Ada", "Lovelace", "4B", "1")
	e.addPatient("p2", "Alan", "Turing", "4B", "2")
	e.addUser("nurse1", vigil.RoleNurse, "", "pw-nurse")
	e.addUser("ada", vigil.RolePatient, "p1", "pw-ada")
	nurse, _ := e.login("nurse1", "pw-nurse")
	ada, _ := e.login("ada", "pw-ada")
	ns, as := e.stream(nurse), e.stream(ada)
	for e.hub.Len() < 2 {
		time.Sleep(time.Millisecond) // the handlers subscribe right after the first write
	}

	at := time.Now().UTC().Truncate(time.Millisecond)
	e.ingest(&vigil.Reading{DeviceID: "mon2", ID: "7", PatientID: "p2", Time: at,
		Values: []vigil.Measurement{{Code: vigil.LOINCBodyTemp, Value: 39.6, Unit: "Cel"}}})
	e.ingest(&vigil.Reading{DeviceID: "mon1", ID: "8", PatientID: "p1", Time: at,
		Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 88, Unit: "/min"}}})

	// The nurse sees p2's alert, p2's reading, then p1's reading.
	wantNurse := []struct{ event, patient string }{{"alert", "p2"}, {"reading", "p2"}, {"reading", "p1"}}
	for _, want := range wantNurse {
		block := ns.next()
		typ, data, _ := strings.Cut(block, "\n")
		if typ != "event: "+want.event {
			t.Fatalf("nurse got %q, want a %s event", block, want.event)
		}
		var got struct {
			Patient string `json:"patient"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &got); err != nil || got.Patient != want.patient {
			t.Errorf("nurse %s event for %q (%v), want %q", want.event, got.Patient, err, want.patient)
		}
	}
	// The patient sees only their own reading.
	block := as.next()
	var r ReadingEvent
	typ, data, _ := strings.Cut(block, "\n")
	if typ != "event: reading" || json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &r) != nil {
		t.Fatalf("patient got %q, want their reading", block)
	}
	if r.PatientID != "p1" || r.ID != "8" || !r.Time.Equal(at) || len(r.Values) != 1 || r.Values[0].Value != 88 {
		t.Errorf("patient got %+v, want p1's reading 8 (HR 88)", r)
	}
}

func TestEventsHeartbeatAndSessionEnd(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Heartbeat = 20 * time.Millisecond })
	e.addUser("nurse1", vigil.RoleNurse, "", "pw-nurse")
	c, token := e.login("nurse1", "pw-nurse")
	s := e.stream(c)
	if got := s.next(); got != ": heartbeat" {
		t.Fatalf("got %q, want a heartbeat", got)
	}
	res, err := c.PostForm(e.srv.URL+"/logout", url.Values{"csrf": {token}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	for {
		got := s.next()
		if got == "EOF" {
			break
		}
		if got != ": heartbeat" {
			t.Fatalf("got %q after logout, want heartbeats then the end", got)
		}
	}
}

func TestEventsEndWhenDropped(t *testing.T) {
	// A subscriber that falls behind is dropped by the hub; the stream
	// must then end so the browser reconnects and reloads.
	e := newEnv(t, nil)
	e.addUser("nurse1", vigil.RoleNurse, "", "pw-nurse")
	c, _ := e.login("nurse1", "pw-nurse")
	s := e.stream(c)
	for e.hub.Len() < 1 {
		time.Sleep(time.Millisecond)
	}
	// Publish far more than the buffer without reading; the TCP buffers
	// fill, the handler blocks on writing, its subscription overflows.
	big := &vigil.Reading{DeviceID: "d", ID: strings.Repeat("x", 40), PatientID: "p1", Values: make([]vigil.Measurement, 50)}
	for i := 0; e.hub.Len() > 0; i++ {
		e.hub.Publish(live.Event{Type: live.TypeReading, PatientID: "p1", Data: big})
		if i%1000 == 999 {
			time.Sleep(time.Millisecond)
		}
	}
	n := 0
	for s.next() != "EOF" {
		n++
	}
	if n == 0 {
		t.Errorf("stream ended without delivering any event")
	}
}

func TestSecurityHeadersAndAssets(t *testing.T) {
	e := newEnv(t, nil)
	e.addUser("nurse1", vigil.RoleNurse, "", "pw")
	c, _ := e.login("nurse1", "pw")
	for _, path := range []string{"/login", "/", "/web/api/ward", "/web/static/app.js", "/web/static/app.css"} {
		client := c
		if path == "/login" {
			client = e.client() // signed in, /login redirects to the ward
		}
		res, err := client.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", path, res.StatusCode)
		}
		for k, want := range map[string]string{
			"X-Frame-Options":        "DENY",
			"X-Content-Type-Options": "nosniff",
		} {
			if got := res.Header.Get(k); got != want {
				t.Errorf("GET %s: %s = %q, want %q", path, k, got, want)
			}
		}
		if csp := res.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'self'; frame-ancestors 'none'") {
			t.Errorf("GET %s: CSP %q", path, csp)
		}
	}
	// No inline script or style, and nothing loaded from elsewhere.
	inline := regexp.MustCompile(`<script>|<script [^>]*>[^<]|<style|\sstyle="|\son[a-z]+="`)
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	banner := regexp.MustCompile(`(?s)/\*!.*?\*/`)
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(assets, path)
		if strings.HasSuffix(path, ".html") && inline.Match(b) {
			t.Errorf("%s has inline script or style: %q", path, inline.Find(b))
		}
		if strings.Contains(path, "/vendor/") {
			b = banner.ReplaceAll(b, nil) // a vendored library's licence banner names its home page
		}
		if m := external.Find(b); m != nil {
			t.Errorf("%s refers to another origin: %q", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTokenID(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"vgl_abc123_secret", "abc123", true},
		{"vgl__secret", "", false},
		{"vgl_abc", "", false},
		{"bearer", "", false},
	}
	for _, tt := range tests {
		got, ok := tokenID(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("tokenID(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// Automatic logoff: after the idle timeout without a request from the
// user, the session is signed out — the live stream does not keep it
// alive — and the next request is refused.
func TestIdleTimeout(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEnv(t, func(o *Options) { o.Now, o.IdleTimeout, o.Heartbeat = clock, 15*time.Minute, 20*time.Millisecond })
	e.addUser("nurse1", vigil.RoleNurse, "", "pw-nurse")
	c, _ := e.login("nurse1", "pw-nurse")
	advance(10 * time.Minute)
	e.get(c, "/web/api/ward", http.StatusOK) // activity: the clock restarts
	advance(10 * time.Minute)
	s := e.stream(c)
	if got := s.next(); got != ": heartbeat" {
		t.Fatalf("got %q", got)
	}
	advance(6 * time.Minute) // 16 minutes since the last request
	for got := s.next(); got != "EOF"; got = s.next() {
	}
	e.get(c, "/web/api/ward", http.StatusUnauthorized)
}

// With RequireTOTP, clinicians sign in with password and authenticator
// code; without an enrolled app they are told to get one; nurses without
// one sign in with their password; a code cannot be used twice.
func TestSecondFactorLogin(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.RequireTOTP = true })
	e.addUser("dr", vigil.RoleClinician, "", "pw-clinician-1")
	e.addUser("nurse1", vigil.RoleNurse, "", "pw-nurse")
	try := func(user, pw, code string) (int, string) {
		res, err := e.client().PostForm(e.srv.URL+"/login", url.Values{"user": {user}, "password": {pw}, "code": {code}})
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if st, body := try("dr", "pw-clinician-1", ""); st != 403 || !strings.Contains(body, "second factor") {
		t.Fatalf("clinician without an authenticator: %d %s", st, body)
	}
	_, secret, err := e.auth.EnrollTOTP(context.Background(), "dr", "Vigil")
	if err != nil {
		t.Fatal(err)
	}
	if st, body := try("dr", "pw-clinician-1", ""); st != 401 || !strings.Contains(body, "authenticator code") {
		t.Fatalf("no code: %d %s", st, body)
	}
	code, _ := totp.GenerateCode(secret, time.Now())
	if st, _ := try("dr", "pw-clinician-1", code); st != http.StatusSeeOther {
		t.Fatalf("password and code: %d", st)
	}
	if st, _ := try("dr", "pw-clinician-1", code); st != 401 {
		t.Fatalf("the same code again: %d", st)
	}
	if st, _ := try("nurse1", "pw-nurse", ""); st != http.StatusSeeOther {
		t.Fatalf("nurse: %d", st)
	}
}

// System notices (an edge gateway's link to its server down) show across
// the top of every page from the start and reach open pages live.
func TestNotices(t *testing.T) {
	var mu sync.Mutex
	var current []live.Notice
	e := newEnv(t, func(o *Options) {
		o.Notices = func() []live.Notice { mu.Lock(); defer mu.Unlock(); return slices.Clone(current) }
	})
	e.addUser("nurse1", vigil.RoleNurse, "", "pw-nurse")
	nurse, _ := e.login("nurse1", "pw-nurse")
	mu.Lock()
	current = []live.Notice{{ID: "uplink", Active: true, Text: "No link to the central Vigil server since 10:42."}}
	mu.Unlock()
	if page := e.get(nurse, "/", 200); !strings.Contains(page, `data-notice="uplink">No link to the central Vigil server since 10:42.</p>`) {
		t.Fatalf("ward page without the notice:\n%s", page)
	}
	ns := e.stream(nurse)
	for e.hub.Len() < 1 {
		time.Sleep(time.Millisecond)
	}
	e.hub.Publish(live.Event{Type: live.TypeNotice, Data: &live.Notice{ID: "uplink", Active: false}})
	block := ns.next()
	if !strings.HasPrefix(block, "event: notice\ndata: ") || !strings.Contains(block, `"id":"uplink","active":false`) {
		t.Fatalf("notice event: %q", block)
	}
}
