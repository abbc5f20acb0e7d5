package node_test

import (
	"context"
	"github.com/eclipse/paho.golang/paho"
	"github.com/vigil-iomt/vigil/internal/broker"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
)

// access says who may call a route:
//
//	public         anyone, no credentials
//	body           credentials in the request body (a password, a one-time
//	               code): refused to every caller here, who sends none
//	mount          a handler mounted under a prefix (its own routes are listed)
//	device         a device (HTTP Basic or its certificate), never a user token
//	web:ROLES      a web session (cookie) of these roles; POSTs also need the CSRF token
//	ROLES          a bearer token of one of these roles (comma-separated)
//
// Routes about one patient ({id} of /patients/, FHIR Patient/{id},
// Observation?patient=) are also scoped: a nurse with wards, or a
// patient, may not reach another ward's (another) patient.
var access = map[string]string{
	"POST /api/v1/devices/{id}/readings":                    "device",
	"POST /api/v1/devices/{id}/gatt":                        "device",
	"POST /api/v1/devices/{id}/events":                      "device",
	"POST /api/v1/devices/{id}/omh":                         "device",
	"POST /api/v1/devices/{id}/medtech":                     "device",
	"GET /api/v1/edges/{id}/config":                         "device",
	"POST /api/v1/edges/{id}/readings":                      "device",
	"POST /api/v1/edges/{id}/alerts":                        "device",
	"GET /api/v1/edge/status":                               "admin",
	"POST /api/v1/backup":                                   "admin",
	"GET /api/v1/patients/{id}/export":                      "admin",
	"POST /api/v1/patients/{id}/erase":                      "admin",
	"GET /healthz":                                          "public",
	"GET /readyz":                                           "public",
	"GET /metrics":                                          "admin",
	"POST /api/v1/patients":                                 "admin",
	"GET /api/v1/patients":                                  "admin,clinician,nurse",
	"GET /api/v1/patients/{id}":                             "admin,clinician,nurse",
	"GET /api/v1/patients/{id}/news2":                       "admin,clinician,nurse",
	"GET /api/v1/patients/{id}/series":                      "admin,clinician,nurse",
	"GET /api/v1/patients/{id}/rollups":                     "admin,clinician,nurse",
	"GET /api/v1/patients/{id}/baselines":                   "admin,clinician,nurse",
	"PUT /api/v1/patients/{id}/medications":                 "admin,clinician",
	"GET /api/v1/patients/{id}/adherence":                   "admin,clinician,nurse",
	"POST /api/v1/patients/{id}/reviews":                    "admin,clinician,nurse",
	"GET /api/v1/patients/{id}/reviews":                     "admin,clinician,nurse",
	"POST /api/v1/patients/{id}/news2-inputs":               "admin,clinician,nurse",
	"GET /api/v1/devices/{id}/status":                       "admin,clinician,nurse",
	"POST /api/v1/devices/{id}/commands":                    "admin,clinician", // signed, counted (TestDeviceCommands)
	"GET /api/v1/devices/{id}/commands":                     "admin,clinician,nurse",
	"GET /api/v1/commands/key":                              "public", // a public key: devices verify commands with it
	"GET /api/v1/audit":                                     "admin,auditor",
	"GET /api/v1/aggregates":                                "admin,analyst",
	"GET /api/v1/studies/{id}/extract":                      "admin",
	"GET /api/v1/signals":                                   "admin,analyst",
	"GET /api/v1/audit/verify":                              "admin,auditor",
	"POST /api/v1/patients/{id}/break-glass":                "clinician,nurse",
	"GET /api/v1/reports/break-glass":                       "admin,auditor",
	"GET /api/v1/rules":                                     "admin,clinician,nurse",
	"GET /api/v1/rules/{id}":                                "admin,clinician,nurse",
	"GET /api/v1/rules/{id}/history":                        "admin,clinician,nurse",
	"PUT /api/v1/rules/{id}":                                "admin,clinician",
	"POST /api/v1/rules/backtest":                           "admin,clinician",
	"PUT /api/v1/patients/{id}/overrides":                   "admin,clinician",
	"POST /api/v1/devices":                                  "admin",
	"GET /api/v1/devices":                                   "admin,clinician,nurse",
	"GET /api/v1/devices/{id}":                              "admin,clinician,nurse",
	"POST /api/v1/devices/{id}/secret":                      "admin",
	"POST /api/v1/devices/{id}/revoke":                      "admin",
	"POST /api/v1/devices/{id}/enrollment-code":             "admin",
	"POST /api/v1/devices/{id}/enroll":                      "body", // the one-time code is the credential
	"POST /api/v1/devices/{id}/cert":                        "admin",
	"POST /api/v1/devices/{id}/assignments":                 "admin",
	"GET /api/v1/devices/{id}/assignments":                  "admin,clinician,nurse",
	"POST /api/v1/users":                                    "admin",
	"GET /api/v1/users":                                     "admin",
	"POST /api/v1/users/{id}/tokens":                        "admin",
	"POST /api/v1/users/{id}/totp":                          "admin",
	"GET /api/v1/deadletters":                               "admin",
	"GET /api/v1/deadletters/{id}":                          "admin",
	"DELETE /api/v1/deadletters/{id}":                       "admin",
	"POST /api/v1/deadletters/{id}/replay":                  "admin",
	"POST /api/v1/deadletters/replay":                       "admin",
	"PUT /api/v1/mappings/{id}":                             "admin",
	"GET /api/v1/mappings":                                  "admin",
	"GET /api/v1/mappings/{id}":                             "admin",
	"POST /api/v1/mappings/test":                            "admin",
	"GET /api/v1/alerts":                                    "admin,clinician,nurse",
	"GET /api/v1/alerts/stats":                              "admin,clinician,nurse",
	"GET /api/v1/reports/rpm":                               "admin,clinician",
	"POST /api/v1/alerts/{id}/ack":                          "admin,clinician,nurse",
	"POST /api/v1/alerts/{id}/snooze":                       "admin,clinician,nurse",
	"POST /api/v1/alerts/{id}/escalate":                     "admin,clinician,nurse",
	"/api/":                                                 "mount",
	"/fhir/R4/":                                             "mount",
	"/fhir/R4":                                              "mount",
	"/":                                                     "mount",
	"GET /fhir/R4/metadata":                                 "public",
	"GET /fhir/R4/Patient":                                  "admin,clinician,nurse,patient",
	"GET /fhir/R4/Patient/{id}":                             "admin,clinician,nurse,patient",
	"GET /fhir/R4/Device":                                   "admin,clinician,nurse,patient",
	"GET /fhir/R4/Device/{id}":                              "admin,clinician,nurse,patient",
	"GET /fhir/R4/DeviceMetric":                             "admin,clinician,nurse,patient",
	"PUT /fhir/R4/Patient/{id}":                             "admin",
	"POST /api/v1/patients/{id}/shares":                     "admin,clinician", // ward scoping applies
	"DELETE /api/v1/shares/{id}":                            "admin,clinician", // its maker or an admin (TestShareLinks)
	"GET /share/{token}":                                    "public",          // the link's token is the credential; a bad one is 404
	"GET /fhir/R4/DetectedIssue":                            "admin,clinician,nurse,patient",
	"GET /fhir/R4/DetectedIssue/{id}":                       "admin,clinician,nurse,patient",
	"POST /fhir/R4/Subscription":                            "admin,clinician,nurse,patient", // events limited to what the owner sees
	"GET /fhir/R4/Subscription":                             "admin,clinician,nurse,patient", // one's own
	"GET /fhir/R4/Subscription/{id}":                        "admin,clinician,nurse,patient",
	"PUT /fhir/R4/Subscription/{id}":                        "admin,clinician,nurse,patient",
	"DELETE /fhir/R4/Subscription/{id}":                     "admin,clinician,nurse,patient",
	"GET /fhir/R4/Subscription/{id}/$status":                "admin,clinician,nurse,patient",
	"GET /fhir/R4/Subscription/{id}/$get-ws-binding-token":  "admin,clinician,nurse,patient",
	"POST /fhir/R4/Subscription/{id}/$get-ws-binding-token": "admin,clinician,nurse,patient",
	"GET /fhir/R4/$subscription-ws":                         "public",                // a websocket bound by a one-time token from $get-ws-binding-token
	"GET /fhir/R4/$export":                                  "admin,clinician,nurse", // a nurse's export holds her wards only
	"GET /fhir/R4/Patient/$export":                          "admin,clinician,nurse",
	"GET /fhir/R4/Group/{id}/$export":                       "admin,clinician,nurse",         // unknown group: 404
	"GET /fhir/R4/$export-status/{job}":                     "admin,clinician,nurse,patient", // a job id of one's own, else 404
	"DELETE /fhir/R4/$export-status/{job}":                  "admin,clinician,nurse,patient",
	"GET /fhir/R4/$export-file/{job}/{file}":                "admin,clinician,nurse,patient",
	"PUT /fhir/R4/Device/{id}":                              "admin",
	"GET /fhir/R4/DeviceMetric/{id}":                        "admin,clinician,nurse,patient",
	"GET /fhir/R4/Observation":                              "admin,clinician,nurse,patient",
	"GET /fhir/R4/Observation/$lastn":                       "admin,clinician,nurse,patient",
	"GET /fhir/R4/Observation/{id}":                         "admin,clinician,nurse,patient",
	"POST /fhir/R4/Observation":                             "device",
	"POST /fhir/R4/{$}":                                     "device",
	"POST /fhir/R4":                                         "device",
	"GET /login":                                            "public",
	"POST /login":                                           "body",
	"GET /{$}":                                              "public", // the ward page sends a visitor without a session to sign in
	"GET /web/static/":                                      "public",
	"POST /logout":                                          "web:admin,clinician,nurse,patient",
	"GET /web/api/ward":                                     "web:admin,clinician,nurse,patient",
	"GET /web/api/patients/{id}":                            "web:admin,clinician,nurse,patient",
	"GET /web/api/events":                                   "web:admin,clinician,nurse,patient",
	"GET /web/api/patients/{id}/series":                     "web:admin,clinician,nurse,patient",
	"GET /patients/{id}":                                    "web:admin,clinician,nurse,patient",
	"GET /alerts":                                           "web:admin,clinician,nurse",
	"GET /web/api/alerts":                                   "web:admin,clinician,nurse",
	"GET /devices":                                          "web:admin,clinician,nurse",
	"GET /admin":                                            "web:admin",
	"/web/api/v1/":                                          "mount",                     // the API as the session's user: TestWebAPIProxy
	"GET /web/api/devices":                                  "web:admin,clinician,nurse", // a patient may ask for ?patient=own id
	"POST /web/api/alerts/{id}/ack":                         "web:admin,clinician,nurse",
	"POST /web/api/alerts/{id}/snooze":                      "web:admin,clinician,nurse",
	"POST /web/api/alerts/{id}/escalate":                    "web:admin,clinician,nurse",
	"POST /web/api/patients/{id}/news2-inputs":              "web:admin,clinician,nurse",
}

// TestAuthorizationMatrix walks every route the node serves × every role
// × own and other patient and checks allow (not 401/403) or deny. A new
// route without an entry above fails it.
func TestAuthorizationMatrix(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	must(t, e.n.Admin.AddPatient(ctx, &vigil.Patient{ID: "w1-a", Identifier: "MRN-A", Ward: "W1"}))
	must(t, e.n.Admin.AddPatient(ctx, &vigil.Patient{ID: "w2-b", Identifier: "MRN-B", Ward: "W2"}))
	_, err := e.n.Admin.AddDevice(ctx, &vigil.Device{ID: "dev-a", Kind: vigil.DeviceWearable})
	must(t, err)
	must(t, e.n.Admin.Assign(ctx, "dev-a", "w1-a", time.Now().Add(-time.Hour)))
	type who struct {
		name, role string
		token      string
		web        *http.Client
		csrf       string
	}
	users := []who{{name: "anonymous"}}
	for _, u := range []vigil.User{
		{ID: "root", Role: vigil.RoleAdmin},
		{ID: "dr-all", Role: vigil.RoleClinician},
		{ID: "nurse-w1", Role: vigil.RoleNurse, Wards: []string{"W1"}},
		{ID: "pt-a", Role: vigil.RolePatient, PatientID: "w1-a"},
		{ID: "auditor", Role: vigil.RoleAuditor},
		{ID: "analyst", Role: vigil.RoleAnalyst},
	} {
		must(t, e.n.Admin.AddUser(ctx, &u, "correct horse battery"))
		tok, _, err := e.n.Admin.CreateToken(ctx, u.ID, admin.TokenSpec{Name: "matrix", TTL: time.Hour})
		must(t, err)

		jar, _ := cookiejar.New(nil)
		wc := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		req, _ := http.NewRequest("POST", e.n.URL()+"/login", strings.NewReader(url.Values{"user": {u.ID}, "password": {"correct horse battery"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", e.n.URL())
		resp, err := wc.Do(req)
		must(t, err)
		resp.Body.Close()
		if u.Role == vigil.RoleAuditor || u.Role == vigil.RoleAnalyst {
			// Auditors and analysts have no web session: the sign-in is refused.
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("web sign-in of an %s: %d, want 403", u.Role, resp.StatusCode)
			}
			users = append(users, who{name: u.ID, role: u.Role, token: tok})
			continue
		}
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("web sign-in of %s: %d", u.ID, resp.StatusCode)
		}
		resp, err = wc.Get(e.n.URL() + "/")
		must(t, err)
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := csrfMeta.FindSubmatch(page)
		if m == nil {
			t.Fatalf("no CSRF token on %s's ward page", u.ID)
		}
		users = append(users, who{name: u.ID, role: u.Role, token: tok, web: wc, csrf: string(m[1])})
	}
	anonWeb := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	routes := e.n.Routes()
	// Signing out ends the web sessions the other routes use: last.
	slices.SortStableFunc(routes, func(a, b string) int { return cmpBool(a == "POST /logout", b == "POST /logout") })
	for _, route := range routes {
		acc, ok := access[route]
		if !ok {
			t.Errorf("route %q has no entry in the authorization matrix (internal/node/authz_test.go)", route)
			continue
		}
		if acc == "mount" {
			continue
		}
		method, pattern, _ := strings.Cut(route, " ")
		scoped := (strings.Contains(pattern, "/patients/{id}") || strings.Contains(pattern, "/Patient/{id}") ||
			pattern == "/fhir/R4/Observation" || pattern == "/fhir/R4/Observation/$lastn") &&
			!strings.HasSuffix(pattern, "/break-glass") // break-glass is how another ward's patient is reached
		for _, target := range []string{"own", "other"} {
			if target == "other" && !scoped {
				continue
			}
			path := fill(pattern, target)
			for _, u := range users {
				want := expect(acc, u.role, u.name, target)
				var st int
				if strings.HasPrefix(acc, "web:") {
					c := u.web
					if c == nil {
						c = anonWeb
					}
					st = do(t, c, method, e.n.URL(), path, "", u.csrf)
				} else {
					st = do(t, anonWeb, method, e.n.URL(), path, u.token, "")
				}
				got := "allow"
				if st == 401 || st == 403 {
					got = "deny"
				}
				if st == http.StatusSeeOther && method == "GET" && strings.HasPrefix(acc, "web:") {
					got = "deny" // a page sends a visitor without a session to sign in
				}
				if got != want {
					t.Errorf("%s %s as %s (%s patient): %d, want %s", method, path, u.name, target, st, want)
				}
			}
		}
	}
}

// fill puts ids into a pattern: the own (ward W1) or other (ward W2)
// patient, a device, a rule, a user, unknown alerts and dead letters.
func fill(pattern, target string) string {
	patient := map[string]string{"own": "w1-a", "other": "w2-b"}[target]
	p := pattern
	switch {
	case strings.Contains(p, "/patients/{id}"), strings.Contains(p, "/Patient/{id}"):
		p = strings.Replace(p, "{id}", patient, 1)
	case strings.Contains(p, "/devices/{id}"), strings.Contains(p, "/Device/{id}"):
		p = strings.Replace(p, "{id}", "dev-a", 1) // the own patient's wearable
	case strings.Contains(p, "/rules/{id}"):
		p = strings.Replace(p, "{id}", "r1", 1)
	case strings.Contains(p, "/users/{id}"):
		p = strings.Replace(p, "{id}", "dr", 1)
	default:
		p = strings.Replace(p, "{id}", "nope", 1)
	}
	p = strings.TrimSuffix(strings.Replace(p, "{$}", "", 1), "/")
	if p == "" {
		p = "/"
	}
	if p == "/fhir/R4/Observation" || p == "/fhir/R4/Observation/$lastn" {
		p += "?patient=" + patient
	}
	return p
}

// expect is the matrix's answer for one call.
func expect(acc, role, name, target string) string {
	switch {
	case acc == "public":
		return "allow"
	case role == "" || acc == "device" || acc == "body":
		return "deny"
	}
	roles := strings.TrimPrefix(acc, "web:")
	if !strings.Contains(","+roles+",", ","+role+",") {
		return "deny"
	}
	if target == "other" && (name == "nurse-w1" || role == vigil.RolePatient) {
		return "deny"
	}
	return "allow"
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([0-9a-f]+)">`)

// do makes one request (a bearer token when given; a web client carries
// its session cookie, and its CSRF token on a POST) and returns the
// status, retrying when rate-limited.
func do(t *testing.T, c *http.Client, method, base, path, token, csrf string) int {
	t.Helper()
	u := base + path
	for {
		var body io.Reader
		if method == "POST" || method == "PUT" {
			body = strings.NewReader("{}")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, method, u, body)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Prefer", "respond-async") // bulk export kick-offs need it; others ignore it
		if csrf != "" && method != "GET" {
			req.Header.Set("X-CSRF-Token", csrf)
			req.Header.Set("Origin", base)
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("%s %s: %v", method, u, err)
		}
		resp.Body.Close() // also ends an event stream
		cancel()
		if resp.StatusCode == 429 {
			time.Sleep(time.Second)
			continue
		}
		return resp.StatusCode
	}
}

// mqttAccess says, per topic under a device's own prefix, whether the
// device may publish and subscribe there (another device's are always
// refused). A topic the broker knows without an entry fails the test.
var mqttAccess = map[string]struct{ publish, subscribe bool }{
	"readings":     {true, true},
	"gatt":         {true, true},
	"omh":          {true, true},
	"medtech":      {true, true},
	"commands":     {false, true}, // only Vigil sends commands
	"commands/ack": {true, true},
}

// TestMQTTAuthorizationMatrix walks every MQTT topic Vigil uses × a
// device (own and another device's topics) and a nurse-call system, for
// publish and subscribe.
func TestMQTTAuthorizationMatrix(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	_, err := e.n.Admin.AddDevice(ctx, &vigil.Device{ID: "dev-b", Kind: vigil.DeviceWearable})
	must(t, err)
	ncSecret, err := e.n.Admin.AddDevice(ctx, &vigil.Device{ID: "nc-1", Kind: vigil.DeviceNurseCall})
	must(t, err)
	a := mqtt5(t, e.n.MQTTAddr(), e.device, e.secret)
	nc := mqtt5(t, e.n.MQTTAddr(), "nc-1", ncSecret)
	pub := func(c *paho.Client, topic string) bool {
		pr, _ := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(`{}`)})
		return pr != nil && pr.ReasonCode != 0x87
	}
	sub := func(c *paho.Client, topic string) bool {
		sa, _ := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
		return sa != nil && sa.Reasons[0] < 0x80
	}
	for _, suffix := range broker.DeviceTopics() {
		want, ok := mqttAccess[suffix]
		if !ok {
			t.Errorf("MQTT topic .../%s has no entry in the authorization matrix (internal/node/authz_test.go)", suffix)
			continue
		}
		own, other := broker.TopicRoot+e.device+"/"+suffix, broker.TopicRoot+"dev-b/"+suffix
		if got := pub(a, own); got != want.publish {
			t.Errorf("device publishing on its own %s: %v, want %v", suffix, got, want.publish)
		}
		if got := sub(a, own); got != want.subscribe {
			t.Errorf("device subscribing to its own %s: %v, want %v", suffix, got, want.subscribe)
		}
		for name, c := range map[string]*paho.Client{"device": a, "nurse-call": nc} {
			if pub(c, other) || sub(c, other) {
				t.Errorf("%s reached another device's %s", name, suffix)
			}
		}
	}
	alerts := broker.AlertsRoot + "#"
	if sub(a, alerts) || !sub(nc, alerts) || pub(nc, broker.AlertsRoot+"W1/p1/a1") || pub(a, broker.AlertsRoot+"W1/p1/a1") {
		t.Error("alert topics: only a nurse-call system may subscribe, and nobody may publish")
	}
}
