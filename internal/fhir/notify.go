package fhir

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/live"
)

// Subscriptions delivers topic-based subscription notifications: it
// watches the live hub (stored readings, alert transitions), numbers the
// events each subscription may see, and sends them over rest-hooks (with
// a handshake, heartbeats, retries with backoff and an error state) or to
// bound websockets.
type Subscriptions struct {
	o SubscriptionOptions

	mu   sync.Mutex
	subs map[string]*subState
	// held is len(subs), read by the hub's filter without m.mu: with no
	// subscription the dispatcher is sent no events (a batch upload's
	// thousands of readings each cost a channel send and a locked scan).
	held   atomic.Int32
	tokens map[string]wsBinding // websocket binding tokens
	conns  map[*wsClient]bool   // every open websocket, bound or not

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// owners caches the owners' permissions for the dispatcher (its own
	// goroutine only): a change of wards or a break-glass reaches
	// notifications within ownerTTL.
	owners map[string]ownerEntry
}

type ownerEntry struct {
	p   *vigil.Principal
	err error
	at  time.Time
}

const ownerTTL = 10 * time.Second

// owner returns a subscription owner's current permissions.
func (m *Subscriptions) owner(ctx context.Context, userID string) (*vigil.Principal, error) {
	now := time.Now()
	if e, ok := m.owners[userID]; ok && now.Sub(e.at) < ownerTTL {
		return e.p, e.err
	}
	p, err := m.o.Principal(ctx, userID)
	if m.owners == nil || len(m.owners) > 10000 {
		m.owners = map[string]ownerEntry{}
	}
	m.owners[userID] = ownerEntry{p, err, now}
	return p, err
}

// SubscriptionOptions configure Subscriptions.
type SubscriptionOptions struct {
	Store        vigil.SubscriptionStore
	Hub          *live.Hub
	Observations vigil.ObservationStore
	Patients     vigil.PatientStore
	// Principal returns a user's current permissions: a subscription
	// carries only the events its owner may see now.
	Principal func(ctx context.Context, userID string) (*vigil.Principal, error)
	// BaseURL is the server's /fhir/R4 URL as clients reach it.
	BaseURL func() string
	Client  *http.Client
	Now     func() time.Time
	Logger  *slog.Logger
	// Backoff is the first retry delay of a failed delivery (doubling,
	// at most 30 s); Attempts how many tries before the error state.
	Backoff  time.Duration
	Attempts int
}

// notification is one numbered event for one subscription.
type notification struct {
	number int64
	at     time.Time
	ref    string // Observation/{id} or DetectedIssue/{id}
	res    any
	create bool // a new resource (POST) rather than a change (PUT)
}

type subState struct {
	s      *vigil.Subscription // guarded by Subscriptions.mu
	queue  chan notification
	ws     map[*wsClient]bool // guarded by Subscriptions.mu
	cancel context.CancelFunc
	done   chan struct{}
	// reserved is the event number up to which the counter is persisted:
	// after a restart numbering resumes there, so a number is never
	// reused (a client sees a gap instead, and queries).
	reserved int64
}

type wsBinding struct {
	sub     string
	expires time.Time
}

type wsClient struct {
	conn *websocket.Conn
	mu   sync.Mutex
}

func (c *wsClient) send(v any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return wsjson.Write(ctx, c.conn, v)
}

const (
	reserveStep = 1000
	queueSize   = 4096
)

// NewSubscriptions loads the stored subscriptions and starts delivering.
func NewSubscriptions(o SubscriptionOptions) (*Subscriptions, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 8
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Subscriptions{o: o, subs: map[string]*subState{}, tokens: map[string]wsBinding{}, conns: map[*wsClient]bool{}, ctx: ctx, cancel: cancel}
	stored, err := o.Store.FindSubscriptions(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	for _, s := range stored {
		// The stored count is the reserved block's end: numbering resumes
		// there, past any number used before the restart.
		st := &subState{s: s, ws: map[*wsClient]bool{}, reserved: s.Events + reserveStep}
		m.subs[s.ID] = st
		m.held.Store(int32(len(m.subs)))
		if s.Status == vigil.SubscriptionActive || s.Status == vigil.SubscriptionRequested {
			m.start(st)
		}
	}
	sub := o.Hub.Subscribe(queueSize, m.wants)
	m.wg.Add(1)
	go m.dispatch(sub)
	return m, nil
}

// Close stops delivery and closes websockets.
func (m *Subscriptions) Close() {
	m.cancel()
	m.mu.Lock()
	for c := range m.conns {
		c.conn.CloseNow()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// start runs a subscription's delivery worker (m.mu held or not yet shared).
func (m *Subscriptions) start(st *subState) {
	ctx, cancel := context.WithCancel(m.ctx)
	st.cancel, st.done, st.queue = cancel, make(chan struct{}), make(chan notification, queueSize)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(st.done)
		m.worker(ctx, st)
	}()
}

// stop ends the worker and waits for it (m.mu not held).
func (m *Subscriptions) stop(st *subState) {
	if st.cancel != nil {
		st.cancel()
		<-st.done
	}
}

// wants is the dispatcher's filter on the hub: this node's readings and
// alerts, while any subscription exists.
func (m *Subscriptions) wants(e live.Event) bool {
	return m.held.Load() > 0 && (e.Type == live.TypeReading || e.Type == live.TypeAlert) && e.Origin == ""
}

// dispatch turns hub events into numbered notifications.
func (m *Subscriptions) dispatch(sub *live.Subscription) {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			sub.Close()
			return
		case e, ok := <-sub.C:
			if !ok {
				// The hub dropped us: events were lost. Say so on every
				// live subscription, and listen again.
				m.failAll("Vigil fell behind under load and dropped events; search for what you missed, then PUT the subscription with status requested to resume")
				sub = m.o.Hub.Subscribe(queueSize, m.wants)
				continue
			}
			m.route(e)
		}
	}
}

func (m *Subscriptions) failAll(msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range m.subs {
		if st.s.Status == vigil.SubscriptionActive {
			st.s.Status, st.s.Error = vigil.SubscriptionError, msg
			m.persistLocked(st)
		}
	}
}

// route finds the subscriptions an event matches and queues it.
func (m *Subscriptions) route(e live.Event) {
	topic := TopicVitalSign
	if e.Type == live.TypeAlert {
		topic = TopicAlert
	}
	m.mu.Lock()
	var cands []*subState
	for _, st := range m.subs {
		s := st.s
		if s.Topic != topic || (s.Status != vigil.SubscriptionActive && s.Status != vigil.SubscriptionRequested) {
			continue
		}
		if !s.End.IsZero() && !m.o.Now().Before(s.End) {
			s.Status = vigil.SubscriptionOff
			m.persistLocked(st)
			continue
		}
		if p := filterValue(s, "patient"); p != "" && p != e.PatientID {
			continue
		}
		cands = append(cands, st)
	}
	m.mu.Unlock()
	if len(cands) == 0 {
		return
	}
	ctx := m.ctx
	pt, err := m.o.Patients.FindPatientByID(ctx, e.PatientID)
	if err != nil {
		return
	}
	var items []notification
	switch d := e.Data.(type) {
	case *vigil.Reading:
		items = m.readingItems(ctx, d)
	case *vigil.Alert:
		created := len(d.History) <= 1 && d.State == vigil.AlertFiring
		items = []notification{{ref: "DetectedIssue/" + d.ID, res: AlertResource(d), create: created}}
	}
	for _, st := range cands {
		m.mu.Lock()
		owner := st.s.Owner
		m.mu.Unlock()
		p, err := m.owner(ctx, owner)
		if err != nil || !p.Sees(pt.ID, pt.Ward) {
			continue
		}
		for _, it := range items {
			if !m.matches(st, it) {
				continue
			}
			m.enqueue(st, it)
		}
	}
}

func (m *Subscriptions) matches(st *subState, it notification) bool {
	m.mu.Lock()
	s := st.s
	code, sev := filterValue(s, "code"), filterValue(s, "severity")
	m.mu.Unlock()
	switch r := it.res.(type) {
	case *Observation:
		if code != "" {
			c := code
			if _, after, ok := strings.Cut(code, "|"); ok {
				c = after
			}
			return slices.ContainsFunc(strings.Split(c, ","), func(c string) bool {
				return slices.ContainsFunc(r.Code.Coding, func(x Coding) bool { return x.Code == c })
			})
		}
	case *DetectedIssue:
		if sev != "" {
			return slices.Contains(strings.Split(sev, ","), r.Severity)
		}
	}
	return true
}

// readingItems returns the stored Observations of a reading.
func (m *Subscriptions) readingItems(ctx context.Context, r *vigil.Reading) []notification {
	obs, err := ReadingObservations(ctx, m.o.Observations, r.PatientID, r.DeviceID, r.Time)
	if err != nil {
		m.o.Logger.Error("subscriptions: find a reading's observations", "err", err)
		return nil
	}
	var out []notification
	for _, o := range obs {
		out = append(out, notification{ref: "Observation/" + o.ID, res: ObservationResource(o), create: true})
	}
	return out
}

// enqueue numbers an event and hands it to the worker; a subscription
// whose worker is too far behind goes to the error state.
func (m *Subscriptions) enqueue(st *subState, it notification) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := st.s
	if s.Status != vigil.SubscriptionActive && s.Status != vigil.SubscriptionRequested {
		return
	}
	s.Events++
	it.number, it.at = s.Events, m.o.Now().UTC()
	if s.Events >= st.reserved {
		st.reserved = s.Events + reserveStep
		m.persistLocked(st)
	}
	select {
	case st.queue <- it:
	default:
		s.Status, s.Error = vigil.SubscriptionError, fmt.Sprintf("the endpoint fell %d notifications behind; event %d and later were not sent: search for them, then PUT the subscription with status requested to resume", queueSize, it.number)
		m.persistLocked(st)
		st.cancel()
	}
}

// persistLocked saves the subscription with its reserved counter (m.mu held).
func (m *Subscriptions) persistLocked(st *subState) {
	c := *st.s
	c.Events = max(st.reserved, c.Events)
	c.Updated = m.o.Now().UTC()
	st.s.Updated = c.Updated
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.o.Store.SaveSubscription(ctx, &c); err != nil {
		m.o.Logger.Error("subscriptions: save", "id", c.ID, "err", err)
	}
}

// worker delivers one subscription's notifications until stopped.
func (m *Subscriptions) worker(ctx context.Context, st *subState) {
	m.mu.Lock()
	s := *st.s
	m.mu.Unlock()
	if s.Channel == "rest-hook" && s.Status == vigil.SubscriptionRequested {
		if !m.send(ctx, st, "handshake", nil) {
			return
		}
		m.mu.Lock()
		st.s.Status, st.s.Error = vigil.SubscriptionActive, ""
		m.persistLocked(st)
		m.mu.Unlock()
	} else if s.Channel == "websocket" && s.Status == vigil.SubscriptionRequested {
		m.mu.Lock()
		st.s.Status = vigil.SubscriptionActive
		m.persistLocked(st)
		m.mu.Unlock()
	}
	heart := time.Duration(s.Heart) * time.Second
	var beat <-chan time.Time
	var timer *time.Timer
	if heart > 0 {
		timer = time.NewTimer(heart)
		defer timer.Stop()
		beat = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat:
			if !m.send(ctx, st, "heartbeat", nil) {
				return
			}
			timer.Reset(heart)
		case it := <-st.queue:
			batch := []notification{it}
			for len(batch) < max(s.MaxCount, 1) {
				select {
				case more := <-st.queue:
					batch = append(batch, more)
					continue
				default:
				}
				break
			}
			if !m.send(ctx, st, "event-notification", batch) {
				return
			}
			if timer != nil {
				timer.Reset(heart)
			}
		}
	}
}

// bundle builds a notification Bundle (type history).
func (m *Subscriptions) bundle(s *vigil.Subscription, typ string, events []notification) map[string]any {
	base := m.o.BaseURL()
	uuid := make([]byte, 16)
	rand.Read(uuid)
	entries := []map[string]any{{
		"fullUrl":  "urn:uuid:" + formatUUID(uuid),
		"resource": statusParameters(base, s, typ, events),
		"request":  map[string]string{"method": "GET", "url": "Subscription/" + s.ID + "/$status"},
		"response": map[string]string{"status": "200"},
	}}
	if s.Payload == "full-resource" {
		for _, e := range events {
			method, url, status := "PUT", e.ref, "200"
			if e.create {
				method, url, status = "POST", strings.Split(e.ref, "/")[0], "201"
			}
			entries = append(entries, map[string]any{
				"fullUrl":  base + "/" + e.ref,
				"resource": e.res,
				"request":  map[string]string{"method": method, "url": url},
				"response": map[string]string{"status": status},
			})
		}
	}
	return map[string]any{"resourceType": "Bundle", "type": "history", "timestamp": instant(m.o.Now()), "entry": entries}
}

func formatUUID(b []byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// send delivers one notification: to a rest-hook with retries and
// backoff (then the error state), or to the bound websockets. It reports
// whether the worker should go on.
func (m *Subscriptions) send(ctx context.Context, st *subState, typ string, events []notification) bool {
	m.mu.Lock()
	s := *st.s
	var clients []*wsClient
	for c := range st.ws {
		clients = append(clients, c)
	}
	m.mu.Unlock()
	b := m.bundle(&s, typ, events)
	if s.Channel == "websocket" {
		for _, c := range clients {
			if err := c.send(b); err != nil {
				m.unbind(st, c)
			}
		}
		return true
	}
	body, _ := json.Marshal(b)
	delay := m.o.Backoff
	var last string
	for attempt := 1; attempt <= m.o.Attempts; attempt++ {
		if last = m.post(ctx, &s, body); last == "" {
			return true
		}
		m.o.Logger.Warn("subscription notification failed", "subscription", s.ID, "type", typ, "attempt", attempt, "err", last)
		if attempt == m.o.Attempts {
			break
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
	m.mu.Lock()
	st.s.Status = vigil.SubscriptionError
	st.s.Error = fmt.Sprintf("%s notification failed %d times, last: %s; events from %d on were not delivered: fix the endpoint, search for what you missed, then PUT the subscription with status requested", typ, m.o.Attempts, last, firstNumber(events, s.Events))
	m.persistLocked(st)
	m.mu.Unlock()
	return false
}

func firstNumber(events []notification, dflt int64) int64 {
	if len(events) > 0 {
		return events[0].number
	}
	return dflt + 1
}

// post makes one delivery attempt and returns "" or what went wrong.
func (m *Subscriptions) post(ctx context.Context, s *vigil.Subscription, body []byte) string {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(max(s.Timeout, 1))*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", s.Endpoint, bytes.NewReader(body))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	for _, h := range s.Headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := m.o.Client.Do(req)
	if err != nil {
		return "the endpoint could not be reached (" + strings.TrimPrefix(err.Error(), "Post ") + ")"
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Sprintf("the endpoint answered %d", resp.StatusCode)
	}
	return ""
}

func (m *Subscriptions) unbind(st *subState, c *wsClient) {
	m.mu.Lock()
	delete(st.ws, c)
	m.mu.Unlock()
	c.conn.CloseNow()
}

// create adds a subscription for its owner and starts it.
func (m *Subscriptions) create(ctx context.Context, s *vigil.Subscription) (*vigil.Subscription, error) {
	id := make([]byte, 12)
	rand.Read(id)
	now := m.o.Now().UTC()
	s.ID, s.Status, s.Error, s.Created, s.Updated, s.Version = hex.EncodeToString(id), vigil.SubscriptionRequested, "", now, now, 1
	st := &subState{s: s, ws: map[*wsClient]bool{}, reserved: reserveStep}
	c := *s
	c.Events = st.reserved
	if err := m.o.Store.SaveSubscription(ctx, &c); err != nil {
		return nil, err
	}
	created := *s // the worker owns s from here
	m.mu.Lock()
	m.subs[s.ID] = st
	m.held.Store(int32(len(m.subs)))
	m.start(st)
	m.mu.Unlock()
	return &created, nil
}

// replace changes a subscription (keeping its id and event numbering)
// and restarts it: requested again, with a new handshake.
func (m *Subscriptions) replace(ctx context.Context, id string, s *vigil.Subscription) (*vigil.Subscription, error) {
	m.mu.Lock()
	st, ok := m.subs[id]
	m.mu.Unlock()
	if !ok {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "Subscription/%s not found", id)
	}
	m.stop(st)
	m.mu.Lock()
	defer m.mu.Unlock()
	old := st.s
	s.ID, s.Owner, s.Events, s.Created, s.Version = old.ID, old.Owner, old.Events, old.Created, old.Version+1
	s.Status, s.Error = vigil.SubscriptionRequested, ""
	st.s = s
	for c := range st.ws {
		c.conn.CloseNow()
		delete(st.ws, c)
	}
	m.persistLocked(st)
	c := *s
	m.start(st)
	return &c, nil
}

func (m *Subscriptions) remove(ctx context.Context, id string) error {
	m.mu.Lock()
	st, ok := m.subs[id]
	delete(m.subs, id)
	m.held.Store(int32(len(m.subs)))
	m.mu.Unlock()
	if !ok {
		return vigil.Errorf(vigil.ENOTFOUND, "Subscription/%s not found", id)
	}
	m.stop(st)
	m.mu.Lock()
	for c := range st.ws {
		c.conn.CloseNow()
	}
	m.mu.Unlock()
	return m.o.Store.DeleteSubscription(ctx, id)
}

// get returns a copy of the subscription for its owner (admins: any).
func (m *Subscriptions) get(id string, p *vigil.Principal) (*vigil.Subscription, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.subs[id]
	if !ok || (st.s.Owner != p.UserID && p.Role != vigil.RoleAdmin) {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "Subscription/%s not found among yours", id)
	}
	c := *st.s
	return &c, nil
}

func (m *Subscriptions) list(p *vigil.Principal) []*vigil.Subscription {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*vigil.Subscription
	for _, st := range m.subs {
		if st.s.Owner == p.UserID || p.Role == vigil.RoleAdmin {
			c := *st.s
			out = append(out, &c)
		}
	}
	slices.SortFunc(out, func(a, b *vigil.Subscription) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// bindingToken issues a one-time websocket binding token (5 minutes).
func (m *Subscriptions) bindingToken(id string) (string, time.Time) {
	b := make([]byte, 24)
	rand.Read(b)
	tok := hex.EncodeToString(b)
	exp := m.o.Now().Add(5 * time.Minute)
	m.mu.Lock()
	defer m.mu.Unlock()
	for t, bnd := range m.tokens {
		if m.o.Now().After(bnd.expires) {
			delete(m.tokens, t)
		}
	}
	m.tokens[tok] = wsBinding{sub: id, expires: exp}
	return tok, exp
}

// serveWS is the websocket channel: a client sends "bind-with-token T"
// and receives a handshake, then notifications and heartbeats.
func (m *Subscriptions) serveWS(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		writeOutcome(w, http.StatusBadRequest, "invalid", "this is the subscriptions websocket: connect with a websocket client and send bind-with-token <token> (from Subscription/{id}/$get-ws-binding-token)", "")
		return
	}
	// Any origin: notifications go to whoever holds a binding token,
	// which they got with their bearer token; the origin adds nothing.
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	c := &wsClient{conn: conn}
	m.mu.Lock()
	if m.ctx.Err() != nil {
		m.mu.Unlock()
		conn.CloseNow()
		return
	}
	m.conns[c] = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.conns, c)
		for _, st := range m.subs {
			delete(st.ws, c)
		}
		m.mu.Unlock()
		conn.CloseNow()
	}()
	conn.SetReadLimit(4096)
	for {
		ctx, cancel := context.WithTimeout(m.ctx, 10*time.Minute)
		_, msg, err := conn.Read(ctx)
		cancel()
		if err != nil {
			return
		}
		tok, ok := strings.CutPrefix(strings.TrimSpace(string(msg)), "bind-with-token ")
		if !ok {
			c.send(map[string]string{"error": "send bind-with-token <token>"})
			continue
		}
		m.mu.Lock()
		bnd, found := m.tokens[tok]
		delete(m.tokens, tok)
		st := m.subs[bnd.sub]
		valid := found && st != nil && m.o.Now().Before(bnd.expires) && st.s.Channel == "websocket"
		var s vigil.Subscription
		if valid {
			st.ws[c] = true
			s = *st.s
		}
		m.mu.Unlock()
		if !valid {
			c.send(map[string]string{"error": "unknown or expired binding token: get a new one with $get-ws-binding-token"})
			return
		}
		if err := c.send(m.bundle(&s, "handshake", nil)); err != nil {
			m.unbind(st, c)
			return
		}
	}
}
