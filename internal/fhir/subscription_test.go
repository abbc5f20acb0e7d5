package fhir

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/live"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

// receiver is a rest-hook endpoint that records notifications and can be
// told to fail.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	fail    bool
	got     chan map[string]any
	headers chan string
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{got: make(chan map[string]any, 100), headers: make(chan string, 100)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		fail := rc.fail
		rc.mu.Unlock()
		if fail {
			http.Error(w, "down for maintenance", 503)
			return
		}
		var b map[string]any
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &b); err != nil || r.Header.Get("Content-Type") != "application/fhir+json" {
			http.Error(w, "bad notification", 400)
			return
		}
		rc.headers <- r.Header.Get("Authorization")
		rc.got <- b
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) setFail(f bool) {
	rc.mu.Lock()
	rc.fail = f
	rc.mu.Unlock()
}

// next waits for a notification of the given type, skipping heartbeats
// unless asked for.
func next(t *testing.T, c <-chan map[string]any, typ string) map[string]any {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case b := <-c:
			if got := notificationType(b); got == typ {
				return b
			} else if got != "heartbeat" {
				t.Fatalf("got a %s notification, want %s: %v", got, typ, b)
			}
		case <-timeout:
			t.Fatalf("no %s notification", typ)
		}
	}
}

func statusParams(b map[string]any) map[string]any {
	return b["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
}

func param(ps map[string]any, name string) []map[string]any {
	var out []map[string]any
	for _, p := range ps["parameter"].([]any) {
		if p := p.(map[string]any); p["name"] == name {
			out = append(out, p)
		}
	}
	return out
}

func notificationType(b map[string]any) string {
	return param(statusParams(b), "type")[0]["valueCode"].(string)
}

// eventNumbers returns the event numbers and focus references of a notification.
func eventNumbers(b map[string]any) ([]string, []string) {
	var nums, foci []string
	for _, ev := range param(statusParams(b), "notification-event") {
		for _, part := range ev["part"].([]any) {
			part := part.(map[string]any)
			switch part["name"] {
			case "event-number":
				nums = append(nums, part["valueString"].(string))
			case "focus":
				foci = append(foci, part["valueReference"].(map[string]any)["reference"].(string))
			}
		}
	}
	return nums, foci
}

func principalOf(userID string) (*vigil.Principal, error) {
	for _, p := range principals {
		if p.UserID == userID && len(p.Scopes) == 0 {
			return p, nil
		}
	}
	return nil, vigil.Errorf(vigil.ENOTFOUND, "no user %s", userID)
}

func subscriptionJSON(topic, filter, channel, endpoint string, heartbeat int) string {
	s := map[string]any{
		"resourceType": "Subscription", "status": "requested", "reason": "test", "criteria": topic,
		"channel": map[string]any{
			"type": channel, "endpoint": endpoint, "payload": "application/fhir+json", "header": []string{"Authorization: Bearer hook-secret"},
			"_payload":  map[string]any{"extension": []map[string]any{{"url": extPayloadContent, "valueCode": "full-resource"}}},
			"extension": []map[string]any{{"url": extHeartbeat, "valueUnsignedInt": heartbeat}, {"url": extMaxCount, "valuePositiveInt": 5}},
		},
	}
	if filter != "" {
		s["_criteria"] = map[string]any{"extension": []map[string]any{{"url": extFilter, "valueString": filter}}}
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func post(t *testing.T, srv *httptest.Server, token, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/fhir+json")
	return fetch(t, req)
}

type subEnv struct {
	srv  *httptest.Server
	st   *pebble.Store
	hub  *live.Hub
	subs *Subscriptions
}

func subSetup(t *testing.T) *subEnv {
	e := &subEnv{hub: &live.Hub{}}
	var base string
	var st *pebble.Store
	e.srv, st = setup(t, func(o *Options) {
		m, err := NewSubscriptions(SubscriptionOptions{Store: o.Patients.(*pebble.Store), Hub: e.hub, Observations: o.Observations, Patients: o.Patients,
			Principal: func(_ context.Context, id string) (*vigil.Principal, error) { return principalOf(id) },
			BaseURL:   func() string { return base }, Backoff: 10 * time.Millisecond, Attempts: 3})
		must(t, err)
		t.Cleanup(m.Close)
		e.subs, o.Subscriptions, o.Alerts = m, m, o.Patients.(*pebble.Store)
	})
	base = e.srv.URL + Base
	e.st = st
	return e
}

// appendAndPublish stores a reading and tells the hub, as ingest does.
func (e *subEnv) reading(t *testing.T, r *vigil.Reading) {
	_, err := e.st.AppendReadings(ctx, []*vigil.Reading{r})
	must(t, err)
	e.hub.Publish(live.Event{Type: live.TypeReading, PatientID: r.PatientID, Data: r})
}

// Topic-based subscriptions over a rest-hook: handshake, events filtered
// by patient and code and numbered, heartbeats, retries then an error
// state a client reads, and resumption with the numbering kept.
func TestSubscriptionRestHook(t *testing.T) {
	e := subSetup(t)
	rc := newReceiver(t)
	for _, c := range []struct {
		token, body string
		status      int
	}{
		{"dr", subscriptionJSON("https://example.org/topic", "", "rest-hook", rc.URL, 0), 400},
		{"dr", subscriptionJSON(TopicVitalSign, "Observation?colour=red", "rest-hook", rc.URL, 0), 400},
		{"dr", subscriptionJSON(TopicVitalSign, "DetectedIssue?patient=p1", "rest-hook", rc.URL, 0), 400},
		{"dr", subscriptionJSON(TopicVitalSign, "", "rest-hook", "http://ehr.example/hook", 0), 400}, // PHI over plain http
		{"dr", subscriptionJSON(TopicVitalSign, "", "email", "mailto:x@example.org", 0), 400},
		{"w2", subscriptionJSON(TopicVitalSign, "Observation?patient=Patient/p1", "rest-hook", rc.URL, 0), 403}, // not her ward
		{"pt1", subscriptionJSON(TopicVitalSign, "Observation?patient=Patient/p2", "rest-hook", rc.URL, 0), 403},
		{"obs-only", subscriptionJSON(TopicAlert, "", "rest-hook", rc.URL, 0), 403}, // scopes do not reach DetectedIssue
	} {
		if st, b := post(t, e.srv, c.token, "/fhir/R4/Subscription", c.body); st != c.status || b["resourceType"] != "OperationOutcome" {
			t.Errorf("%s: %d %v, want %d", c.token, st, b, c.status)
		}
	}
	st, sub := post(t, e.srv, "dr", "/fhir/R4/Subscription", subscriptionJSON(TopicVitalSign, "Observation?patient=Patient/p1&code=8867-4", "rest-hook", rc.URL, 1))
	if st != 201 || sub["status"] != "requested" {
		t.Fatalf("create: %d %v", st, sub)
	}
	id := sub["id"].(string)
	hs := next(t, rc.got, "handshake")
	if h := <-rc.headers; h != "Bearer hook-secret" {
		t.Fatalf("the endpoint's header: %q", h)
	}
	waitStatus(t, e.srv, "dr", id, "active")

	// A heart rate and an SpO2 for p1: one event (the code filter); p2's
	// reading: none.
	t1 := t0.Add(6 * time.Hour)
	e.reading(t, &vigil.Reading{DeviceID: "mon", ID: "s1", PatientID: "p1", Time: t1, Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 131, Unit: "/min"}, {Code: vigil.LOINCSpO2, Value: 93, Unit: "%"}}})
	e.reading(t, &vigil.Reading{DeviceID: "other", ID: "s2", PatientID: "p2", Time: t1, Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 40, Unit: "/min"}}})
	e.reading(t, &vigil.Reading{DeviceID: "mon", ID: "s3", PatientID: "p1", Time: t1.Add(time.Minute), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 128, Unit: "/min"}}})
	var nums []string
	var note map[string]any
	for len(nums) < 2 {
		note = next(t, rc.got, "event-notification")
		n, foci := eventNumbers(note)
		nums = append(nums, n...)
		for i, f := range foci {
			res := note["entry"].([]any)[1+i].(map[string]any)["resource"].(map[string]any)
			if "Observation/"+res["id"].(string) != f || res["subject"].(map[string]any)["reference"] != "Patient/p1" {
				t.Fatalf("focus %s with %v", f, res)
			}
		}
	}
	if strings.Join(nums, ",") != "1,2" {
		t.Fatalf("event numbers %v, want 1,2", nums)
	}
	hb := next(t, rc.got, "heartbeat")
	if v := param(statusParams(hb), "events-since-subscription-start")[0]["valueString"]; v != "2" {
		t.Fatalf("heartbeat: events since start %v", v)
	}

	// The endpoint fails: three attempts, then the error state, readable
	// on the Subscription and with $status.
	rc.setFail(true)
	e.reading(t, &vigil.Reading{DeviceID: "mon", ID: "s4", PatientID: "p1", Time: t1.Add(2 * time.Minute), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 140, Unit: "/min"}}})
	errSub := waitStatus(t, e.srv, "dr", id, "error")
	if msg, _ := errSub["error"].(string); !strings.Contains(msg, "503") || !strings.Contains(msg, "3 times") {
		t.Fatalf("error: %q", msg)
	}
	_, stat := get(t, e.srv, "dr", "/fhir/R4/Subscription/"+id+"/$status")
	ps := entries(stat)[0]
	if param(ps, "status")[0]["valueCode"] != "error" || param(ps, "type")[0]["valueCode"] != "query-status" || param(ps, "events-since-subscription-start")[0]["valueString"] != "3" {
		t.Fatalf("$status: %v", ps)
	}
	// Another user cannot see it.
	if st, _ := get(t, e.srv, "nurse", "/fhir/R4/Subscription/"+id); st != 404 {
		t.Fatalf("another user's subscription: %d", st)
	}
	// Fixed and resumed: a new handshake; numbering goes on (3 was lost: a gap).
	rc.setFail(false)
	req, _ := http.NewRequest("PUT", e.srv.URL+"/fhir/R4/Subscription/"+id, strings.NewReader(subscriptionJSON(TopicVitalSign, "Observation?patient=Patient/p1&code=8867-4", "rest-hook", rc.URL, 1)))
	req.Header.Set("Authorization", "Bearer dr")
	if st, b := fetch(t, req); st != 200 || b["status"] != "requested" {
		t.Fatalf("resume: %d %v", st, b)
	}
	next(t, rc.got, "handshake")
	waitStatus(t, e.srv, "dr", id, "active")
	e.reading(t, &vigil.Reading{DeviceID: "mon", ID: "s5", PatientID: "p1", Time: t1.Add(3 * time.Minute), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 120, Unit: "/min"}}})
	if n, _ := eventNumbers(next(t, rc.got, "event-notification")); strings.Join(n, ",") != "4" {
		t.Fatalf("after resuming: %v, want 4", n)
	}
	_, list := get(t, e.srv, "dr", "/fhir/R4/Subscription")
	_, read := get(t, e.srv, "dr", "/fhir/R4/Subscription/"+id)
	if h := read["channel"].(map[string]any)["header"].([]any)[0].(string); strings.Contains(h, "hook-secret") {
		t.Fatalf("a header's secret is shown: %s", h)
	}
	validate(t, []any{hs, note, hb, stat, list, read})

	// After a restart (a new Subscriptions on the same store) numbering
	// resumes past every number used before.
	e.subs.Close()
	m2, err := NewSubscriptions(SubscriptionOptions{Store: e.st, Hub: e.hub, Observations: e.st, Patients: e.st,
		Principal: func(_ context.Context, id string) (*vigil.Principal, error) { return principalOf(id) },
		BaseURL:   func() string { return e.srv.URL + Base }, Backoff: 10 * time.Millisecond, Attempts: 3})
	must(t, err)
	defer m2.Close()
	e.reading(t, &vigil.Reading{DeviceID: "mon", ID: "s6", PatientID: "p1", Time: t1.Add(4 * time.Minute), Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 118, Unit: "/min"}}})
	n, _ := eventNumbers(next(t, rc.got, "event-notification"))
	if strings.Join(n, ",") != "1001" { // past the reserved block of 1000
		t.Fatalf("after a restart: event %v, want 1001 (never a number used before)", n)
	}
	// Delete.
	req, _ = http.NewRequest("DELETE", e.srv.URL+"/fhir/R4/Subscription/"+id, nil)
	req.Header.Set("Authorization", "Bearer dr")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
}

func waitStatus(t *testing.T, srv *httptest.Server, token, id, want string) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, s := get(t, srv, token, "/fhir/R4/Subscription/"+id)
		if s["status"] == want {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscription %s is %v, want %s", id, s["status"], want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Alerts over a websocket: bind with a token, a handshake, then each
// alert transition the owner may see, as a DetectedIssue.
func TestSubscriptionWebsocketAlerts(t *testing.T) {
	e := subSetup(t)
	st, sub := post(t, e.srv, "w2", "/fhir/R4/Subscription", subscriptionJSON(TopicAlert, "", "websocket", "", 0))
	if st != 201 {
		t.Fatalf("create: %d %v", st, sub)
	}
	id := sub["id"].(string)
	waitStatus(t, e.srv, "w2", id, "active")
	_, tok := get(t, e.srv, "w2", "/fhir/R4/Subscription/"+id+"/$get-ws-binding-token")
	var token, wsURL string
	for _, p := range tok["parameter"].([]any) {
		p := p.(map[string]any)
		switch p["name"] {
		case "token":
			token = p["valueString"].(string)
		case "websocket-url":
			wsURL = p["valueUrl"].(string)
		}
	}
	conn, _, err := websocket.Dial(ctx, wsURL, nil)
	must(t, err)
	defer conn.CloseNow()
	got := make(chan map[string]any, 10)
	go func() {
		for {
			var b map[string]any
			if err := wsjson.Read(ctx, conn, &b); err != nil {
				close(got)
				return
			}
			got <- b
		}
	}()
	must(t, conn.Write(ctx, websocket.MessageText, []byte("bind-with-token "+token)))
	next(t, got, "handshake")
	// An alert on W1 (not her ward) is not sent; one on W2 is.
	now := t0.Add(6 * time.Hour)
	for _, a := range []*vigil.Alert{
		{ID: "a1", PatientID: "p1", RuleID: "hr-high", Title: "Heart rate above 130", Priority: vigil.PriorityHigh, State: vigil.AlertFiring, Raised: now, Updated: now, History: []vigil.AlertEvent{{Time: now, State: vigil.AlertFiring}}},
		{ID: "a2", PatientID: "p2", RuleID: "hr-low", Title: "Heart rate below 40", Priority: vigil.PriorityHigh, State: vigil.AlertFiring, Raised: now, Updated: now, History: []vigil.AlertEvent{{Time: now, State: vigil.AlertFiring}}},
	} {
		must(t, e.st.SaveAlert(ctx, a))
		e.hub.Publish(live.Event{Type: live.TypeAlert, PatientID: a.PatientID, Data: a})
	}
	note := next(t, got, "event-notification")
	nums, foci := eventNumbers(note)
	if strings.Join(nums, ",") != "1" || strings.Join(foci, ",") != "DetectedIssue/a2" {
		t.Fatalf("alert event: %v %v", nums, foci)
	}
	di := note["entry"].([]any)[1].(map[string]any)["resource"].(map[string]any)
	if di["severity"] != "high" || di["status"] != "preliminary" || di["patient"].(map[string]any)["reference"] != "Patient/p2" {
		t.Fatalf("DetectedIssue: %v", di)
	}
	// Acknowledged: a change (PUT) of the same DetectedIssue, numbered 2.
	a2, _ := e.st.FindAlertByID(ctx, "a2")
	a2.State = vigil.AlertAcknowledged
	a2.History = append(a2.History, vigil.AlertEvent{Time: now.Add(time.Minute), State: vigil.AlertAcknowledged, By: "w2", Note: "at the bedside"})
	must(t, e.st.SaveAlert(ctx, a2))
	e.hub.Publish(live.Event{Type: live.TypeAlert, PatientID: "p2", Data: a2})
	note2 := next(t, got, "event-notification")
	if nums, _ := eventNumbers(note2); strings.Join(nums, ",") != "2" {
		t.Fatalf("acknowledgement event: %v", nums)
	}
	if req := note2["entry"].([]any)[1].(map[string]any)["request"].(map[string]any); req["method"] != "PUT" || req["url"] != "DetectedIssue/a2" {
		t.Fatalf("a change is a PUT: %v", req)
	}
	// DetectedIssue read and search.
	if st, r := get(t, e.srv, "w2", "/fhir/R4/DetectedIssue/a2"); st != 200 || len(r["mitigation"].([]any)) != 1 {
		t.Fatalf("DetectedIssue read: %d %v", st, r)
	}
	if st, _ := get(t, e.srv, "w2", "/fhir/R4/DetectedIssue/a1"); st != 403 {
		t.Fatalf("another ward's alert: %d", st)
	}
	_, search := get(t, e.srv, "dr", "/fhir/R4/DetectedIssue?patient=p2&status=preliminary")
	if len(entries(search)) != 1 {
		t.Fatalf("DetectedIssue search: %v", search)
	}
	// A used binding token does not bind again.
	c2, _, err := websocket.Dial(ctx, wsURL, nil)
	must(t, err)
	defer c2.CloseNow()
	must(t, c2.Write(ctx, websocket.MessageText, []byte("bind-with-token "+token)))
	var refusal map[string]string
	if err := wsjson.Read(ctx, c2, &refusal); err != nil || !strings.Contains(refusal["error"], "binding token") {
		t.Fatalf("reused token: %v %v", refusal, err)
	}
	_, meta := get(t, e.srv, "", "/fhir/R4/metadata")
	validate(t, []any{note, note2, search, tok, meta})
}

// With no subscription the dispatcher takes no events from the hub (a
// batch upload publishes thousands); it does once one exists, and not
// after it is deleted.
func TestSubscriptionsTakeEventsOnlyWhenHeld(t *testing.T) {
	e := subSetup(t)
	ev := live.Event{Type: live.TypeReading, PatientID: "p1"}
	if e.subs.wants(ev) {
		t.Fatal("events wanted with no subscription")
	}
	rc := newReceiver(t)
	st, sub := post(t, e.srv, "dr", "/fhir/R4/Subscription", subscriptionJSON(TopicVitalSign, "Observation?patient=Patient/p1", "rest-hook", rc.URL, 0))
	if st != 201 {
		t.Fatalf("create: %d %v", st, sub)
	}
	if !e.subs.wants(ev) || e.subs.wants(live.Event{Type: live.TypeReading, Origin: "node-2"}) {
		t.Fatal("with a subscription: this node's readings must be wanted, another node's not")
	}
	req, _ := http.NewRequest("DELETE", e.srv.URL+"/fhir/R4/Subscription/"+sub["id"].(string), nil)
	req.Header.Set("Authorization", "Bearer dr")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if e.subs.wants(ev) {
		t.Fatal("events still wanted after the subscription was deleted")
	}
}
