package main

import (
	"encoding/json"
	"testing"
)

// vigil bench --protocol http drives a fresh server's HTTP ingest and
// reports acknowledged readings with their latency quantiles.
func TestBenchHTTP(t *testing.T) {
	t.Setenv("VIGIL_TEST_MAIN", "1") // the benchmarked server is this binary acting as vigil
	out, err := vigilCmd(t, "", "bench", "--protocol", "http", "--publishers", "2", "--inflight", "2", "--duration", "1s", "--json")
	if err != nil {
		t.Fatalf("vigil bench: %v\n%s", err, out)
	}
	var rep struct {
		Vigil struct {
			Acked  uint64  `json:"acked"`
			Errors uint64  `json:"errors"`
			Rate   float64 `json:"per_second"`
			P50    int64   `json:"p50_ns"`
			P999   int64   `json:"p999_ns"`
		} `json:"vigil"`
		Peer any `json:"peer"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, out)
	}
	if rep.Vigil.Acked == 0 || rep.Vigil.Errors != 0 || rep.Vigil.P50 <= 0 || rep.Vigil.P999 < rep.Vigil.P50 || rep.Peer != nil {
		t.Fatalf("report: %+v", rep)
	}
	t.Logf("%.0f acked/s over HTTP", rep.Vigil.Rate)
	if out, err := vigilCmd(t, "", "bench", "--protocol", "coap"); err == nil {
		t.Fatalf("an unknown protocol was accepted: %s", out)
	}
}

// vigil bench --protocol mllp sends IHE PCD-01 messages over MLLP to a
// fresh server's listener and counts the ACK AA answers.
func TestBenchMLLP(t *testing.T) {
	t.Setenv("VIGIL_TEST_MAIN", "1")
	out, err := vigilCmd(t, "", "bench", "--protocol", "mllp", "--publishers", "2", "--inflight", "4", "--duration", "1s", "--json")
	if err != nil {
		t.Fatalf("vigil bench: %v\n%s", err, out)
	}
	var rep struct {
		Vigil struct {
			Acked  uint64 `json:"acked"`
			Errors uint64 `json:"errors"`
		} `json:"vigil"`
		Peer any `json:"peer"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Vigil.Acked == 0 || rep.Vigil.Errors != 0 || rep.Peer != nil {
		t.Fatalf("report: %v %+v\n%s", err, rep, out)
	}
}
