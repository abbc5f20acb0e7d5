package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/bench"
	"github.com/vigil-iomt/vigil/internal/node"
)

// vigil bench --protocol http drives a fresh server's HTTP ingest and
// reports acknowledged readings with their latency quantiles.
func TestBenchHTTP(t *testing.T) {
	rep := runBench(t, "--protocol", "http", "--publishers", "2", "--inflight", "2", "--duration", "1s")
	if rep.Vigil.P50 <= 0 || rep.Vigil.P999 < rep.Vigil.P50 || rep.Peer != nil {
		t.Fatalf("report: %+v", rep)
	}
	t.Logf("%.0f acked/s over HTTP", rep.Vigil.PerSecond)
	if out, err := vigilCmd(t, "", "bench", "--protocol", "coap"); err == nil {
		t.Fatalf("an unknown protocol was accepted: %s", out)
	}
}

// vigil bench --protocol mllp sends IHE PCD-01 messages over MLLP to a
// fresh server's listener and counts the ACK AA answers.
func TestBenchMLLP(t *testing.T) {
	if rep := runBench(t, "--protocol", "mllp", "--publishers", "2", "--inflight", "4", "--duration", "1s"); rep.Peer != nil {
		t.Fatalf("a peer without --peer: %+v", rep.Peer)
	}
}

// A payload mix: publishers split by weight among formats, every one of
// which Vigil acknowledges (no errors: each payload is valid).
func TestBenchMix(t *testing.T) {
	m, err := parseBenchMix("canonical=60,monitor=20,gatt=10,omh=10", 10)
	if err != nil || m.String() != "6 canonical, 2 monitor, 1 gatt, 1 omh" {
		t.Fatalf("mix: %v %v", m, err)
	}
	if m, err = parseBenchMix("canonical=1,omh=1", 3); err != nil || len(m) != 3 {
		t.Fatalf("rounding: %v %v", m, err)
	}
	for _, bad := range []string{"canonical", "xml=1", "gatt=-1", "gatt=x"} {
		if _, err := parseBenchMix(bad, 4); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	runBench(t, "--mix", "canonical=1,monitor=1,gatt=1,omh=1", "--publishers", "4", "--inflight", "4", "--duration", "1s", "--peer", "")
	// Each format's payload is one Vigil stores (MQTT 3.1.1 acknowledges
	// refusals too, so the run above does not show it): post one of each
	// to a node's HTTP ingest.
	ctx := context.Background()
	n, err := node.Start(ctx, node.Options{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p1"}); err != nil {
		t.Fatal(err)
	}
	secret, err := n.Admin.AddDevice(ctx, &vigil.Device{ID: benchDevice(0), Kind: vigil.DeviceWearable})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Admin.Assign(ctx, benchDevice(0), "p1", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	seq := uint64(0)
	for name, f := range benchFormats {
		seq++ // a reading id of its own: stored, not a duplicate
		req, _ := http.NewRequest("POST", n.URL()+"/api/v1/devices/"+benchDevice(0)+"/"+f.topic, bytes.NewReader(f.payload(seq)))
		req.SetBasicAuth(benchDevice(0), secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Contains(string(body), `"duplicate"`) {
			t.Errorf("%s payload: %d %s", name, resp.StatusCode, body)
		}
	}
	if out, err := vigilCmd(t, "", "bench", "--protocol", "http", "--mix", "gatt=1"); err == nil {
		t.Fatalf("--mix with http accepted: %s", out)
	}
}

// runBench runs `vigil bench … --json` against a fresh server (this test
// binary acting as vigil) and wants readings acknowledged without errors.
func runBench(t *testing.T, args ...string) (rep struct {
	Vigil bench.Report  `json:"vigil"`
	Peer  *bench.Report `json:"peer"`
}) {
	t.Helper()
	t.Setenv("VIGIL_TEST_MAIN", "1")
	out, err := vigilCmd(t, "", append(append([]string{"bench"}, args...), "--json")...)
	if err != nil {
		t.Fatalf("vigil bench: %v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Vigil.Acked == 0 || rep.Vigil.Errors != 0 {
		t.Fatalf("report: %v %+v\n%s", err, rep, out)
	}
	return rep
}

// The load tool's canonical reading is what encoding/json makes of it,
// byte for byte, for times with and without trailing zero digits.
func TestBenchPayloadIsJSON(t *testing.T) {
	times := []time.Time{
		time.Date(2026, 12, 3, 1, 2, 3, 0, time.UTC),
		time.Date(2026, 12, 3, 1, 2, 3, 120000000, time.UTC),
		time.Date(2026, 12, 3, 1, 2, 3, 123456789, time.FixedZone("CET", 3600)),
	}
	for _, at := range times {
		for _, seq := range []uint64{0, 1, 39, 40, 12345, 1<<64 - 1} {
			want, err := json.Marshal(map[string]any{
				"id":     strconv.FormatUint(seq, 10),
				"time":   at.UTC().Format(time.RFC3339Nano),
				"values": []map[string]any{{"code": vigil.LOINCHeartRate, "value": 60 + seq%40, "unit": "/min"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := appendBenchPayload([]byte("x"), seq, at); string(got) != "x"+string(want) {
				t.Fatalf("seq %d at %s:\n got %s\nwant x%s", seq, at, got, want)
			}
		}
	}
}
