package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/bench"
	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/pcd"
)

func newBenchCmd(g *globals) *cobra.Command {
	var o bench.Options
	var peer string
	var keep bool
	var profile, mixSpec, natsURL string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure acknowledged readings/s and latency over MQTT (against a peer broker in the same run) or HTTP",
		Long: `Start a fresh Vigil server (a child process on a temporary data directory, every
reading made durable before its PUBACK), register one device per publisher, and
drive it with MQTT QoS 1 publishes of canonical reading messages: N connections,
up to --inflight unacknowledged publishes each, for --duration. Then drive the
peer broker (--peer, Mosquitto by default, which does not make messages durable)
with the same load tool, payloads and shape, and report both with the ratio.

The benchmarked server runs without its per-device MQTT rate limit (--mqtt-rate -1)
and its HTTP rate limits (--no-http-rate-limits), as the peer has none: each
load-tool device sends thousands of messages a second.
--server-cpuprofile FILE writes the server's CPU profile for go tool pprof.

With --postgres URL the benchmarked server keeps its data in PostgreSQL (a fresh
schema for the run, dropped afterwards) instead of the embedded store; adding
--nats URL runs it in JetStream mode (a stream of its own, deleted afterwards).

--protocol mllp sends HL7 v2 ORU^R01 (IHE PCD-01) over MLLP, one connection per
sending gateway, --inflight messages before their ACKs; an ACK AA, sent after the
readings are durable, is the acknowledgement. --peer names an MLLP server to measure
in the same run (for example simple-hl7's, which ACKs at once and stores nothing:
node tools/hl7send/peer.js 2576 → --peer 127.0.0.1:2576).

--protocol http drives Vigil's HTTP ingest instead (POST /api/v1/devices/{id}/readings
with each device's credentials, --inflight requests at a time per device; a 2xx,
sent after the reading is durable, is the acknowledgement). No peer speaks Vigil's
HTTP ingest, so an HTTP run reports Vigil alone.

Latencies are HDR histograms (p50, p90, p99, p99.9, max); --json gives the report.
Figures come from this machine in this run; the machine's other load shows in
both.`,
		Example: `  vigil bench                                   # 16 publishers x 32 in flight, 10 s, vs Mosquitto at 127.0.0.1:1883
  vigil bench --publishers 200 --inflight 1 --rate 1   # many devices at a steady rate
  vigil bench --publishers 4 --inflight 256 --json      # a few gateways with deep pipelines
  vigil bench --protocol http --publishers 32 --inflight 4   # HTTP ingest
  vigil bench --protocol mllp --publishers 16 --inflight 8 --peer 127.0.0.1:2576   # HL7 v2 vs simple-hl7
  vigil bench --mix canonical=60,monitor=20,gatt=10,omh=10   # a mixed device population`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			switch o.Protocol {
			case "mqtt", "http":
			case "mllp":
				if !cmd.Flags().Changed("peer") {
					peer = "" // no MLLP peer unless one is named
				}
			default:
				return fmt.Errorf("--protocol %q: use mqtt, http or mllp", o.Protocol)
			}
			if mixSpec != "" && o.Protocol != "mqtt" {
				return fmt.Errorf("--mix applies to --protocol mqtt")
			}
			mix, err := parseBenchMix(mixSpec, o.Publishers)
			if err != nil {
				return err
			}
			if !g.json {
				o.Progress = g.stderr
			}
			if natsURL != "" && g.postgres == "" {
				return fmt.Errorf("--nats needs --postgres: the benchmarked server's workers store into PostgreSQL")
			}
			vr, err := benchVigil(ctx, g, o, keep, profile, mix, natsURL)
			if err != nil {
				return err
			}
			result := struct {
				Vigil bench.Report  `json:"vigil"`
				Peer  *bench.Report `json:"peer,omitempty"`
				Ratio float64       `json:"ratio,omitempty"`
			}{Vigil: vr}
			if peer != "" && o.Protocol != "http" {
				po := o
				po.Addr = peer
				po.Creds = nil
				po.Topic, po.Payload = mix.topic, mix.payload
				if o.Protocol == "mllp" {
					po.Payload = benchHL7
				}
				pr, err := bench.Run(ctx, po)
				if err != nil {
					return fmt.Errorf("peer %s: %w", peer, err)
				}
				pr.Target = "peer " + peer
				result.Peer = &pr
				if pr.PerSecond > 0 {
					result.Ratio = vr.PerSecond / pr.PerSecond
				}
			}
			return g.print(result, func(w *tabwriter.Writer) {
				if mixSpec != "" {
					fmt.Fprintf(w, "\nmix: %s publishers\n", mix)
				}
				fmt.Fprintf(w, "\n%s\n", vr)
				if result.Peer != nil {
					fmt.Fprintf(w, "%s\n", result.Peer)
					ack := "PUBACK"
					if o.Protocol == "mllp" {
						ack = "ACK"
					}
					fmt.Fprintf(w, "ratio vigil/peer: %.2fx acknowledged readings/s (vigil makes every reading durable before its %s)\n", result.Ratio, ack)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Protocol, "protocol", "mqtt", "mqtt (QoS 1 publishes, with the peer broker), http (Vigil's HTTP ingest) or mllp (HL7 v2 ORU^R01)")
	f.IntVar(&o.Publishers, "publishers", 16, "devices, each on its own MQTT connection or HTTP client")
	f.IntVar(&o.InFlight, "inflight", 32, "unacknowledged QoS 1 publishes allowed per connection")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to publish against each target")
	f.Float64Var(&o.Rate, "rate", 0, "messages/s per publisher (0: as fast as acknowledged)")
	f.StringVar(&peer, "peer", "127.0.0.1:1883", "peer measured in the same run: an MQTT broker, or with --protocol mllp an MLLP server (\"\" to skip)")
	f.StringVar(&natsURL, "nats", "", "with --postgres: benchmark JetStream mode (the server acknowledges on JetStream's PubAck; its worker stores into PostgreSQL), e.g. nats://127.0.0.1:4222")
	f.StringVar(&mixSpec, "mix", "", "payload mix over the publishers, format=weight,…: canonical (a heart rate), monitor (five vitals in one reading), gatt (a Bluetooth heart-rate characteristic), omh (an Open mHealth data point); default canonical")
	f.StringVar(&profile, "server-cpuprofile", "", "write the benchmarked server's CPU profile to this file (go tool pprof)")
	f.BoolVar(&keep, "keep", false, "keep the temporary data directory of the benchmarked server")
	return cmd
}

func benchDevice(i int) string { return "bench-" + strconv.Itoa(i) }

// benchPayload is one canonical reading: a unique id per publisher and
// sequence, the current time, and a plausible heart rate.
func benchPayload(i int, seq uint64) []byte { return benchPayloadSeq(seq) }

func benchPayloadSeq(seq uint64) []byte { return appendBenchPayload(nil, seq, time.Now()) }

// appendBenchPayload appends the canonical reading benchPayloadSeq sends,
// byte for byte what encoding/json makes of
// {"id": seq, "time": at, "values": [{"code", "unit", "value"}]} but
// without its reflection: the load tool shares the machine with the
// server it measures, so it spends as little as it can per message.
func appendBenchPayload(b []byte, seq uint64, at time.Time) []byte {
	b = append(b, `{"id":"`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `","time":"`...)
	b = at.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","values":[{"code":"`+vigil.LOINCHeartRate+`","unit":"/min","value":`...)
	b = strconv.AppendUint(b, 60+seq%40, 10)
	return append(b, "}]}"...)
}

func benchGateway(i int) string { return "bench-gw-" + strconv.Itoa(i) }

// benchHL7 is one IHE PCD-01 ORU^R01 from gateway i about patient
// BENCH-i: a unique control id per message, the current time, a heart rate.
func benchHL7(i int, seq uint64) []byte {
	now := time.Now()
	return pcd.EncodeORU(pcd.ORU{Sender: benchGateway(i), ControlID: "B" + strconv.Itoa(i) + "-" + strconv.FormatUint(seq, 10), Sent: now,
		MRN: "BENCH-" + strconv.Itoa(i), ObservedAt: now,
		Results: []pcd.Result{{Code: vigil.LOINCHeartRate, Display: "Heart rate", Value: float64(60 + seq%40), Unit: "/min", Time: now}}})
}

// benchVigil runs the load against a fresh `vigil serve` child process.
func benchVigil(ctx context.Context, g *globals, o bench.Options, keep bool, profile string, mix benchMix, natsURL string) (bench.Report, error) {
	exe, err := os.Executable()
	if err != nil {
		return bench.Report{}, err
	}
	dir, err := os.MkdirTemp("", "vigil-bench-")
	if err != nil {
		return bench.Report{}, err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return bench.Report{}, err
	}
	defer logf.Close()
	// No per-device rate limit: the peer has none, and the load tool's
	// devices publish thousands of messages a second each.
	args := []string{"serve", "--data", dir, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--log-level", "warn", "--plaintext", "--mqtt-rate", "-1", "--no-http-rate-limits"}
	if o.Protocol == "mllp" {
		args = append(args, "--mllp", "127.0.0.1:0")
	}
	if profile != "" {
		args = append(args, "--cpuprofile", profile)
	}
	if g.postgres != "" {
		// A fresh schema for the run, dropped afterwards.
		schema := fmt.Sprintf("vigil_bench_%d", time.Now().UnixNano())
		args = append(args, "--postgres", g.postgres, "--postgres-schema", schema)
		defer func() {
			if err := dropSchema(g.postgres, schema); err != nil {
				fmt.Fprintf(g.stderr, "vigil bench: could not drop the run's schema %s (%v); drop it by hand: DROP SCHEMA %s CASCADE\n", schema, err, schema)
			}
		}()
	}
	if natsURL != "" {
		// JetStream mode, on a stream of its own, deleted afterwards.
		prefix := fmt.Sprintf("vigilbench%d", time.Now().UnixNano())
		args = append(args, "--nats", natsURL, "--nats-prefix", prefix)
		defer func() {
			if nc, err := nats.Connect(natsURL); err == nil {
				if js, err := jetstream.New(nc); err == nil {
					js.DeleteStream(context.Background(), prefix+"_READINGS")
				}
				nc.Close()
			}
		}()
	}
	child := exec.Command(exe, args...)
	child.Stdout, child.Stderr = logf, logf
	if err := child.Start(); err != nil {
		return bench.Report{}, fmt.Errorf("start vigil serve: %w", err)
	}
	defer func() {
		child.Process.Signal(syscall.SIGTERM)
		child.Wait()
	}()
	c, err := waitControl(ctx, dir, 30*time.Second)
	if err != nil {
		return bench.Report{}, fmt.Errorf("%w (server log: %s)", err, logf.Name())
	}
	reg := onlineRegistry{httpapi.NewClient(c.HTTPURL, c.Token)} // the child serves --plaintext on loopback
	secrets := make([]string, o.Publishers)
	for i := range o.Publishers {
		pid := "bench-p" + strconv.Itoa(i)
		if err := reg.AddPatient(ctx, &vigil.Patient{ID: pid, Identifier: "BENCH-" + strconv.Itoa(i), Family: "Bench", Given: strconv.Itoa(i)}); err != nil {
			return bench.Report{}, err
		}
		if secrets[i], err = reg.AddDevice(ctx, &vigil.Device{ID: benchDevice(i), Kind: vigil.DeviceWearable}); err != nil {
			return bench.Report{}, err
		}
		if err := reg.Assign(ctx, benchDevice(i), pid, time.Now().Add(-time.Hour)); err != nil {
			return bench.Report{}, err
		}
	}
	o.Addr, o.URL = c.MQTTAddr, c.HTTPURL
	o.Creds = func(i int) (string, string) { return benchDevice(i), secrets[i] }
	o.Topic, o.Payload = mix.topic, mix.payload
	if o.Protocol == "mllp" {
		// Each publisher is a gateway (MSH-3 names it) reporting its patient by MRN.
		for i := range o.Publishers {
			if _, err := reg.AddDevice(ctx, &vigil.Device{ID: benchGateway(i), Kind: vigil.DeviceGateway}); err != nil {
				return bench.Report{}, err
			}
		}
		o.Addr, o.Payload = c.MLLPAddr, benchHL7
	}
	r, err := bench.Run(ctx, o)
	r.Target = "vigil (durable)"
	return r, err
}

// waitControl waits until a server started on dir has written its control file.
func waitControl(ctx context.Context, dir string, limit time.Duration) (*node.Control, error) {
	deadline := time.Now().Add(limit)
	for {
		c, err := node.ReadControl(dir)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("server on %s did not start within %s", dir, limit)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dropSchema drops schema from the database at url. The URL is read as
// the server reads it (pgxpool's pool_* settings are not sent to
// PostgreSQL, which would refuse them as unknown parameters).
func dropSchema(url, schema string) error {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	return err
}
