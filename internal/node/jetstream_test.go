package node_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/testenv"
)

// JetStream mode: an ingest node acknowledges a device once JetStream has
// the reading; a worker node (another node on the same database) stores
// it and runs the rules; a re-send is a duplicate at the stream.
func TestJetStreamIngestAndWorker(t *testing.T) {
	pg, schema := pgSchema(t)
	nurl, prefix := testenv.NATSPrefix(t)
	ctx := context.Background()
	js := node.Options{Postgres: pg, PostgresSchema: schema, NATS: nurl, NATSPrefix: prefix}
	ingest := js
	ingest.Role = node.RoleIngest
	e := startWith(t, ingest)
	worker := js
	worker.Role = node.RoleWorker
	worker.DataDir, worker.HTTPAddr, worker.MQTTAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	w, err := node.Start(ctx, worker)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// An API node takes no devices; its live view shows what the worker
	// stored and raised, relayed over NATS.
	api := js
	api.Role = node.RoleAPI
	api.DataDir, api.HTTPAddr, api.MQTTAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	a, err := node.Start(ctx, api)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.MQTTAddr() != "" || w.MQTTAddr() != "" {
		t.Fatalf("worker and API nodes listen for MQTT: %q %q", w.MQTTAddr(), a.MQTTAddr())
	}
	feed := a.Hub.Subscribe(64, nil)
	defer feed.Close()

	now := time.Now().UTC().Truncate(time.Millisecond)
	body := string(reading("js-1", now, `{"code":"8310-5","value":39.6,"unit":"Cel"}`))
	post := func() string {
		req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/mon-1/readings", strings.NewReader(body))
		req.SetBasicAuth(e.device, e.secret)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("reading: %d %s", resp.StatusCode, b)
		}
		return string(b)
	}
	if out := post(); !strings.Contains(out, `"stored"`) {
		t.Fatalf("first send: %s", out)
	}
	if out := post(); !strings.Contains(out, `"duplicate"`) {
		t.Fatalf("re-send: %s, want a duplicate", out)
	}
	// The worker stores it and raises the temperature alert.
	deadline := time.Now().Add(20 * time.Second)
	for {
		obs, _, err := e.n.Store.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Codes: []string{vigil.LOINCBodyTemp}})
		must(t, err)
		as, err := e.n.Store.FindAlerts(ctx, vigil.AlertFilter{PatientID: "p1"})
		must(t, err)
		if len(obs) == 1 && slices.ContainsFunc(as, func(a *vigil.Alert) bool { return a.RuleID == "temp-high" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %d observations, %d alerts", len(obs), len(as))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The API node's live view got the reading and the alert from the
	// worker (marked as another node's, so its webhooks stay silent).
	var gotReading, gotAlert bool
	for timeout := time.After(10 * time.Second); !gotReading || !gotAlert; {
		select {
		case ev := <-feed.C:
			if ev.Origin == "" || ev.PatientID != "p1" {
				t.Fatalf("live event on the API node without another origin: %+v", ev)
			}
			switch d := ev.Data.(type) {
			case *vigil.Reading:
				gotReading = gotReading || d.ID == "js-1"
			case *vigil.Alert:
				gotAlert = gotAlert || d.RuleID == "temp-high"
			}
		case <-timeout:
			t.Fatalf("API node's live view: reading %v, alert %v", gotReading, gotAlert)
		}
	}
	// A device sending to a node without devices is told where to go.
	req, _ := http.NewRequest("POST", a.URL()+"/api/v1/devices/mon-1/readings", strings.NewReader(body))
	req.SetBasicAuth(e.device, e.secret)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(msg), "ingest node") {
		t.Fatalf("device ingest on an API node: %d %s", resp.StatusCode, msg)
	}

	// The worker counts what it took from the stream (a token made on the
	// ingest node works on the worker: they share the database).
	req, _ = http.NewRequest("GET", w.URL()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken(t, e))
	resp, err = http.DefaultClient.Do(req)
	must(t, err)
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `vigil_stream_stored_total{outcome="stored"} 1`) ||
		!strings.Contains(string(metrics), "vigil_stream_partitions_owned 16") || !regexp.MustCompile(`vigil_stream_pending\{partition="\d+"\} 0`).MatchString(string(metrics)) {
		t.Fatalf("worker metrics: %d\n%s", resp.StatusCode, grepLines(string(metrics), "vigil_stream"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
