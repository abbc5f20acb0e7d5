package node_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/web"
)

// Every way in refuses bad credentials the same way, on a running node:
// malformed, forged, expired and revoked bearer tokens on the API, FHIR
// and as a web session; wrong, unknown, revoked and borrowed device
// credentials over HTTP; and over MQTT bad logins and topic traversal
// (other devices' topics, wildcards, shared subscriptions).
func TestCredentialMisuse(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	good, rec, err := e.n.Admin.CreateToken(ctx, "dr", admin.TokenSpec{Name: "misuse", TTL: time.Hour})
	must(t, err)
	expired, _, err := e.n.Admin.CreateToken(ctx, "dr", admin.TokenSpec{Name: "short", TTL: time.Millisecond})
	must(t, err)
	revoked, revRec, err := e.n.Admin.CreateToken(ctx, "dr", admin.TokenSpec{Name: "revoked", TTL: time.Hour})
	must(t, err)
	must(t, e.n.Auth.RevokeToken(ctx, revRec.ID))
	time.Sleep(5 * time.Millisecond)
	flipped := good[:len(good)-1] + "A"
	if strings.HasSuffix(good, "A") {
		flipped = good[:len(good)-1] + "B"
	}
	tokens := map[string]string{
		"none":               "",
		"scheme only":        "Bearer",
		"empty":              "Bearer ",
		"prefix only":        "Bearer vgl_",
		"no secret":          "Bearer vgl_" + rec.ID,
		"empty secret":       "Bearer vgl_" + rec.ID + "_",
		"wrong secret":       "Bearer vgl_" + rec.ID + "_" + strings.Repeat("A", 43),
		"secret of another":  "Bearer vgl_0123456789abcdef01_" + good[strings.LastIndex(good, "_")+1:],
		"one character off":  "Bearer " + flipped,
		"basic scheme":       "Basic ZHI6Y29ycmVjdCBob3JzZSBiYXR0ZXJ5",
		"expired":            "Bearer " + expired,
		"revoked":            "Bearer " + revoked,
		"huge":               "Bearer vgl_" + strings.Repeat("x", 16<<10),
		"not ascii":          "Bearer vgl_\u00e9\u00e9_\u2603", // (net/http drops it from a cookie)
		"sql-ish":            "Bearer vgl_' OR '1'='1_x",
		"device secret used": "Bearer " + e.secret,
	}
	for name, auth := range tokens {
		for _, path := range []string{"/api/v1/patients", "/fhir/R4/Patient"} {
			req, _ := http.NewRequest("GET", e.n.URL()+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			must(t, err)
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != 401 && !(name == "huge" && resp.StatusCode == 431) {
				t.Errorf("%s on %s: %d, want 401", name, path, resp.StatusCode)
				continue
			}
			if resp.StatusCode == 401 && (resp.Header.Get("WWW-Authenticate") == "" || (path == "/fhir/R4/Patient") != (body["resourceType"] == "OperationOutcome")) {
				t.Errorf("%s on %s: no challenge or not the API's error form: %v %v", name, path, resp.Header, body)
			}
		}
		// The same strings as a web session cookie.
		if v, ok := strings.CutPrefix(auth, "Bearer "); ok && name != "huge" {
			req, _ := http.NewRequest("GET", e.n.URL()+"/web/api/ward", nil)
			req.AddCookie(&http.Cookie{Name: web.SessionCookie, Value: v})
			resp, err := http.DefaultClient.Do(req)
			must(t, err)
			resp.Body.Close()
			if resp.StatusCode != 401 && resp.StatusCode != 403 {
				t.Errorf("%s as a web session: %d", name, resp.StatusCode)
			}
		}
	}
	// A good token works, so the refusals above are about the credentials.
	req, _ := http.NewRequest("GET", e.n.URL()+"/api/v1/patients", nil)
	req.Header.Set("Authorization", "Bearer "+good)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the good token: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}

	// Devices over HTTP.
	otherSecret, err := e.n.Admin.AddDevice(ctx, &vigil.Device{ID: "mon-2", Kind: vigil.DeviceBedsideMonitor})
	must(t, err)
	goneSecret, err := e.n.Admin.AddDevice(ctx, &vigil.Device{ID: "mon-gone", Kind: vigil.DeviceBedsideMonitor})
	must(t, err)
	must(t, e.n.Admin.RevokeDevice(ctx, "mon-gone"))
	body := string(reading("m1", time.Now(), `{"code":"8867-4","value":70,"unit":"/min"}`))
	for _, c := range []struct {
		name, path, user, pass, bearer string
		want                           int
	}{
		{"wrong secret", e.device, e.device, "nope", "", 401},
		{"unknown device", "ghost", "ghost", "nope", "", 401},
		{"revoked device", "mon-gone", "mon-gone", goneSecret, "", 403}, // known, and refused: revoked
		{"another device's credentials", e.device, "mon-2", otherSecret, "", 403},
		{"a user's token", e.device, "", "", good, 401},
		{"no credentials", e.device, "", "", "", 401},
	} {
		req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+c.path+"/readings", strings.NewReader(body))
		if c.user != "" {
			req.SetBasicAuth(c.user, c.pass)
		}
		if c.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+c.bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("device HTTP, %s: %d, want %d", c.name, resp.StatusCode, c.want)
		}
	}

	// MQTT: logins, then topic traversal by a connected device.
	for _, c := range []struct{ name, user, pass string }{
		{"wrong secret", e.device, "nope"}, {"unknown device", "ghost", "x"}, {"revoked device", "mon-gone", goneSecret},
		{"anonymous", "", ""}, {"a user's token as password", "dr", good},
	} {
		conn, err := net.Dial("tcp", e.n.MQTTAddr())
		must(t, err)
		cl := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: "misuse-" + strings.ReplaceAll(c.name, " ", "-")})
		cp := &paho.Connect{ClientID: "misuse", KeepAlive: 30, CleanStart: true}
		if c.user != "" {
			cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = c.user, true, []byte(c.pass), true
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ca, err := cl.Connect(cctx, cp)
		cancel()
		if err == nil && ca != nil && ca.ReasonCode == 0 {
			t.Errorf("MQTT %s: connected", c.name)
			cl.Disconnect(&paho.Disconnect{})
		}
		conn.Close()
	}
	dev := mqtt5(t, e.n.MQTTAddr(), e.device, e.secret)
	for _, filter := range []string{"vigil/v1/devices/mon-2/#", "#", "+/v1/devices/" + e.device + "/x", "vigil/v1/devices/+/readings", "vigil/v1/+/mon-2/readings",
		"$share/g/vigil/v1/devices/mon-2/#", "vigil/v1/devices/mon-1x/#", "vigil/v1/alerts/#", "$SYS/#"} {
		sa, _ := dev.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
		if sa == nil || sa.Reasons[0] < 0x80 {
			t.Errorf("MQTT subscribe %q: granted (%+v)", filter, sa)
		}
	}
	for _, topic := range []string{"vigil/v1/devices/mon-2/readings", "vigil/v1/alerts/W1/p1/a1", "vigil/v1/devices/" + e.device + "/commands"} {
		pr, _ := dev.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(body)})
		if pr == nil || pr.ReasonCode != 0x87 {
			t.Errorf("MQTT publish on %q: %+v, want 0x87", topic, pr)
		}
	}
}
