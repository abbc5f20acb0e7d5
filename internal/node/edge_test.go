package node_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/certs"
	"github.com/vigil-iomt/vigil/internal/edge"
	"github.com/vigil-iomt/vigil/internal/faultproxy"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

// edgeSetup is a server over TLS (client certificates from its CA) with
// ward 7 (patient p1, monitor mon-1) and ward 8 (p2, mon-2), an edge
// gateway ward7-edge serving ward 7 with its client certificate, and a
// fault proxy in front of the server.
type edgeSetup struct {
	server    *node.Node
	proxy     *faultproxy.Proxy
	edgeTLS   *tls.Config
	monSecret string
}

func startEdgeServer(t *testing.T) *edgeSetup {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	tdir := certs.Dir(dir)
	_, err := certs.Init(tdir, nil, time.Now())
	must(t, err)
	srv, err := certs.ServerConfig(filepath.Join(tdir, certs.CertFile), filepath.Join(tdir, certs.KeyFile))
	must(t, err)
	must(t, certs.RequireClientCertsFrom(srv, filepath.Join(tdir, certs.CAFile)))
	n, err := node.Start(ctx, node.Options{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", TLS: srv, MaxReadingAge: -1})
	must(t, err)
	t.Cleanup(func() { n.Close() })
	s := &edgeSetup{server: n}
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p1", Ward: "7", Family: "Doe"}))
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p2", Ward: "8"}))
	s.monSecret, err = n.Admin.AddDevice(ctx, &vigil.Device{ID: "mon-1", Kind: vigil.DeviceBedsideMonitor})
	must(t, err)
	_, err = n.Admin.AddDevice(ctx, &vigil.Device{ID: "mon-2", Kind: vigil.DeviceBedsideMonitor})
	must(t, err)
	must(t, n.Admin.Assign(ctx, "mon-1", "p1", time.Now().Add(-24*time.Hour)))
	must(t, n.Admin.Assign(ctx, "mon-2", "p2", time.Now().Add(-24*time.Hour)))
	_, err = n.Admin.AddDevice(ctx, &vigil.Device{ID: "ward7-edge", Kind: vigil.DeviceEdge, Serves: &vigil.EdgeScope{Wards: []string{"7"}}})
	must(t, err)
	cp, kp, serial, err := certs.IssueClient(tdir, "ward7-edge", time.Now())
	must(t, err)
	must(t, n.Admin.SetDeviceCert(ctx, "ward7-edge", serial))
	pair, err := tls.X509KeyPair(cp, kp)
	must(t, err)
	pool, err := certs.Pool(filepath.Join(tdir, certs.CAFile))
	must(t, err)
	s.edgeTLS = &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	_, err = n.Alerts.SaveRule(ctx, vigil.Rule{ID: "tachy", Title: "Tachycardia", Priority: vigil.PriorityHigh, Enabled: true, Expr: `value("8867-4") > 140`})
	must(t, err)
	s.proxy, err = faultproxy.New(n.URL()[len("https://"):])
	must(t, err)
	t.Cleanup(func() { s.proxy.Close() })
	return s
}

func (s *edgeSetup) startEdge(t *testing.T, dir string) *node.Node {
	t.Helper()
	n, err := node.Start(context.Background(), node.Options{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", MaxReadingAge: -1,
		Edge: &node.EdgeOptions{Upstream: "https://" + s.proxy.Addr(), ID: "ward7-edge", TLS: s.edgeTLS, ConfigInterval: 100 * time.Millisecond}})
	must(t, err)
	return n
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// postReadings sends readings of mon-1 to the edge over HTTP; it returns
// the status.
func postReadings(t *testing.T, n *node.Node, secret string, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest("POST", n.URL()+"/api/v1/devices/mon-1/readings", bytes.NewReader(body))
	req.SetBasicAuth("mon-1", secret)
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	res.Body.Close()
	return res.StatusCode
}

func hrCount(t *testing.T, n *node.Node, patient string) int {
	t.Helper()
	ss, err := n.Store.ReadSeries(context.Background(), patient, vigil.LOINCHeartRate, "", time.Now().Add(-48*time.Hour), time.Now().Add(time.Hour), 1_000_000)
	must(t, err)
	c := 0
	for _, s := range ss {
		c += len(s.T)
	}
	return c
}

// An edge gateway takes its configuration from the server, takes readings
// from devices with their server credentials, forwards them exactly once;
// while the link is down it keeps them, runs the rules and raises alerts
// locally, then catches up; across an edge restart nothing is lost.
func TestEdgeStoreAndForward(t *testing.T) {
	ctx := context.Background()
	s := startEdgeServer(t)
	edir := t.TempDir()
	e := s.startEdge(t, edir)
	defer func() { e.Close() }()

	// Configuration pushed down: the served patient, its device (with the
	// hashed secret) and the rule; not the other ward's.
	waitFor(t, "the edge's configuration", 10*time.Second, func() bool { return e.EdgeConfig.State().Version != "" })
	if _, err := e.Store.FindPatientByID(ctx, "p2"); vigil.ErrorCode(err) != vigil.ENOTFOUND {
		t.Fatalf("patient of another ward on the edge: %v", err)
	}
	if r, err := e.Store.FindRule(ctx, "tachy", 0); err != nil || r.Expr != `value("8867-4") > 140` {
		t.Fatalf("rule on the edge: %+v %v", r, err)
	}
	v1 := e.EdgeConfig.State().Version

	t0 := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	send := func(from, to int, hr float64) {
		t.Helper()
		var b bytes.Buffer
		b.WriteString("[")
		for i := from; i < to; i++ {
			if i > from {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"id":"r%d","time":%q,"values":[{"code":"8867-4","value":%g,"unit":"/min"}]}`, i, t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339), hr)
		}
		b.WriteString("]")
		if st := postReadings(t, e, s.monSecret, b.Bytes()); st != 200 {
			t.Fatalf("post to the edge: %d", st)
		}
	}
	send(0, 100, 70)
	waitFor(t, "100 readings upstream", 10*time.Second, func() bool { return hrCount(t, s.server, "p1") == 100 })

	// The link goes down: the edge keeps monitoring.
	s.proxy.Block()
	send(100, 300, 150)
	var local *vigil.Alert
	waitFor(t, "a local tachycardia alert", 10*time.Second, func() bool {
		as, err := e.Alerts.Alerts(ctx, vigil.AlertFilter{PatientID: "p1"})
		must(t, err)
		for _, a := range as {
			if a.RuleID == "tachy" {
				local = a
				return true
			}
		}
		return false
	})
	// A nurse at the ward acknowledges it on the edge.
	_, err := e.Alerts.Acknowledge(ctx, local.ID, "nurse-a", "at the bedside")
	must(t, err)
	if n, _ := e.Store.(*pebble.Store).OutboxSize(); n == 0 {
		t.Fatal("nothing buffered while the link is down")
	}
	waitFor(t, "the forwarder to see the link down", 10*time.Second, func() bool {
		st := e.Forwarder.Status()
		return !st.Connected && st.LastError != ""
	})

	// The edge restarts in the middle of the outage; more readings come.
	must(t, e.Close())
	e = s.startEdge(t, edir)
	send(300, 400, 150)
	// Resending what the edge already has changes nothing.
	send(250, 300, 150)

	// The link is back: everything arrives once, the buffer empties.
	s.proxy.Unblock()
	waitFor(t, "400 readings upstream", 20*time.Second, func() bool { return hrCount(t, s.server, "p1") == 400 })
	waitFor(t, "an empty buffer", 10*time.Second, func() bool { n, _ := e.Store.(*pebble.Store).OutboxSize(); return n == 0 })
	if st := e.Forwarder.Status(); !st.Connected || st.Refused != 0 {
		t.Fatalf("forwarder status: %+v", st)
	}
	if v := e.EdgeConfig.State().Version; v != v1 {
		t.Fatalf("configuration version changed with nothing changed: %s → %s", v1, v)
	}
	// Upstream there is one open tachycardia alert for p1 — the server's own
	// from the forwarded readings, or the edge's, whichever came first —
	// and it carries the acknowledgement made at the edge.
	waitFor(t, "the edge's acknowledgement upstream", 10*time.Second, func() bool {
		as, err := s.server.Alerts.Alerts(ctx, vigil.AlertFilter{PatientID: "p1", States: []string{vigil.AlertFiring, vigil.AlertAcknowledged}})
		must(t, err)
		as = slices.DeleteFunc(as, func(a *vigil.Alert) bool { return a.RuleID != "tachy" })
		return len(as) == 1 && as[0].State == vigil.AlertAcknowledged && slices.ContainsFunc(as[0].History, func(h vigil.AlertEvent) bool { return h.By == "ward7-edge/nurse-a" })
	})
	waitFor(t, "the forwarder to count the reconciled alerts", 10*time.Second, func() bool { return e.Forwarder.Status().AlertsReconciled > 0 })

	// A configuration change on the server reaches the edge.
	_, err = s.server.Alerts.SaveRule(ctx, vigil.Rule{ID: "tachy", Title: "Tachycardia", Priority: vigil.PriorityHigh, Enabled: true, Expr: `value("8867-4") > 130`, Note: "lower"})
	must(t, err)
	waitFor(t, "the changed rule on the edge", 10*time.Second, func() bool {
		r, err := e.Store.FindRule(ctx, "tachy", 0)
		return err == nil && r.Expr == `value("8867-4") > 130`
	})
}

// The server refuses what an edge may not forward, corrects a skewed
// edge clock, and answers a repeated batch with duplicates.
func TestEdgeForwardAPI(t *testing.T) {
	s := startEdgeServer(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: s.edgeTLS}}
	post := func(req edge.ForwardRequest) (int, edge.ForwardResponse) {
		b, _ := json.Marshal(req)
		res, err := hc.Post(s.server.URL()+"/api/v1/edges/ward7-edge/readings", "application/json", bytes.NewReader(b))
		must(t, err)
		defer res.Body.Close()
		var out edge.ForwardResponse
		json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	now := time.Now().UTC()
	hr := func(dev, patient, id string, at time.Time) *vigil.Reading {
		return &vigil.Reading{DeviceID: dev, ID: id, PatientID: patient, Time: at, Received: at.Add(time.Second),
			Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: 80, Unit: "/min", OrigCode: "147842", OrigSystem: vigil.SystemMDC}}}
	}
	// The edge's clock is an hour behind.
	req := edge.ForwardRequest{Sent: now.Add(-time.Hour), Readings: []*vigil.Reading{
		hr("mon-1", "p1", "a1", now.Add(-time.Hour-time.Minute)),
		hr("mon-2", "p2", "b1", now.Add(-time.Hour-time.Minute)), // ward 8: not served
	}}
	st, out := post(req)
	if st != 200 || len(out.Results) != 2 || out.Results[0].Status != edge.StatusStored || out.Results[1].Status != edge.StatusRefused || out.Results[1].Reason != "not-served" {
		t.Fatalf("forward: %d %+v", st, out)
	}
	if out.ClockSkewMS < 3590_000 || out.ClockSkewMS > 3610_000 {
		t.Fatalf("clock skew %d ms, want about an hour", out.ClockSkewMS)
	}
	obs, _, err := s.server.Store.FindObservations(context.Background(), vigil.ObservationFilter{PatientID: "p1"})
	must(t, err)
	if len(obs) != 1 || obs[0].Method != "147842" {
		t.Fatalf("stored: %+v", obs)
	}
	if lag := obs[0].Received.Sub(obs[0].Time); lag < 59*time.Minute || lag > 62*time.Minute {
		t.Fatalf("receive time not moved onto the server's clock: device %s received %s", obs[0].Time, obs[0].Received)
	}
	st, out = post(req)
	if st != 200 || out.Results[0].Status != edge.StatusDuplicate {
		t.Fatalf("resend: %d %+v", st, out)
	}
	// An alert raised at the edge, with no alert of the server's for it,
	// is kept as the edge's (once, however often it is sent); one of a
	// patient the edge does not serve is refused.
	postAlerts := func(as ...*vigil.Alert) edge.AlertsResponse {
		b, _ := json.Marshal(edge.AlertsRequest{Alerts: as})
		res, err := hc.Post(s.server.URL()+"/api/v1/edges/ward7-edge/alerts", "application/json", bytes.NewReader(b))
		must(t, err)
		defer res.Body.Close()
		var out edge.AlertsResponse
		json.NewDecoder(res.Body).Decode(&out)
		if res.StatusCode != 200 {
			t.Fatalf("alerts: %d", res.StatusCode)
		}
		return out
	}
	ea := &vigil.Alert{ID: "e1", PatientID: "p1", RuleID: "tachy", Title: "Tachycardia", Priority: vigil.PriorityHigh, State: vigil.AlertFiring,
		Since: now.Add(-time.Minute), Raised: now.Add(-time.Minute), Updated: now.Add(-time.Minute), History: []vigil.AlertEvent{{Time: now.Add(-time.Minute), State: vigil.AlertFiring}}}
	other := *ea
	other.ID, other.PatientID = "e2", "p2"
	ar := postAlerts(ea, &other)
	if ar.Results[0].Status != edge.StatusStored || ar.Results[0].Server != "edge-ward7-edge-e1" || ar.Results[1].Reason != "not-served" {
		t.Fatalf("alerts: %+v", ar)
	}
	ea.State = vigil.AlertAcknowledged
	ea.History = append(ea.History, vigil.AlertEvent{Time: now, State: vigil.AlertAcknowledged, By: "nurse-b"})
	postAlerts(ea)
	postAlerts(ea)
	got, err := s.server.Store.FindAlertByID(context.Background(), "edge-ward7-edge-e1")
	must(t, err)
	if got.State != vigil.AlertAcknowledged || got.Origin != "ward7-edge" || len(got.History) != 3 || got.History[2].By != "ward7-edge/nurse-b" {
		t.Fatalf("kept edge alert: %+v", got)
	}
	// It is the server's open alert of the rule: no second one is raised.
	open, err := s.server.Alerts.Alerts(context.Background(), vigil.AlertFilter{PatientID: "p1", States: []string{vigil.AlertFiring, vigil.AlertAcknowledged}})
	must(t, err)
	open = slices.DeleteFunc(open, func(a *vigil.Alert) bool { return a.RuleID != "tachy" })
	if len(open) != 1 {
		t.Fatalf("open alerts upstream: %d", len(open))
	}

	// Another device's certificate, or a device that is no edge, may not.
	res, err := http.Post(s.server.URL()+"/api/v1/edges/ward7-edge/readings", "application/json", nil)
	if err == nil {
		res.Body.Close()
		t.Fatal("no client certificate yet an answer")
	}
}
