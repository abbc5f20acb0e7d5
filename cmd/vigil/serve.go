package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/notify"
)

func newServeCmd(g *globals) *cobra.Command {
	var opts node.Options
	var allow []string
	var limitsFile string
	var webhooks []string
	var webhookSecretFile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Vigil server on a data directory",
		Long: `Run the Vigil server: MQTT and HTTP device ingest, FHIR R4 API, alerts, web app.

Every reading is acknowledged only after it is on disk. SIGINT or SIGTERM shuts
down gracefully: listeners close, in-flight readings are committed, and nothing
acknowledged is lost.

With --mllp, Vigil also takes HL7 v2 (IHE PCD-01 ORU^R01) over MLLP from gateways
registered as devices of kind gateway (device id = MSH-3's EUI-64 or namespace id).
MLLP has no credentials: connections are accepted only from --mllp-allow networks
(loopback by default).

Environment variables VIGIL_DATA, VIGIL_HTTP, VIGIL_MQTT and VIGIL_MLLP mirror the flags.`,
		Example: `  vigil serve --data /var/lib/vigil
  vigil serve --data ./vigil-data --http 127.0.0.1:8080 --mqtt 127.0.0.1:1883
  vigil serve --data ./vigil-data --mllp :2575 --mllp-allow 10.20.0.0/16`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.data == "" {
				return fmt.Errorf("no data directory: pass --data DIR or set VIGIL_DATA")
			}
			opts.DataDir = g.data
			if len(webhooks) > 0 {
				secret := os.Getenv("VIGIL_WEBHOOK_SECRET")
				if webhookSecretFile != "" {
					b, err := os.ReadFile(webhookSecretFile)
					if err != nil {
						return fmt.Errorf("--webhook-secret-file: %w", err)
					}
					secret = strings.TrimSpace(string(b))
				}
				if len(secret) < 16 {
					return fmt.Errorf("webhooks need a signing secret of at least 16 characters: --webhook-secret-file FILE or VIGIL_WEBHOOK_SECRET")
				}
				for _, u := range webhooks {
					if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://127.") && !strings.HasPrefix(u, "http://localhost") {
						return fmt.Errorf("--webhook %s: use https:// (plain http only to loopback): alerts carry patient data", u)
					}
					opts.Webhooks = append(opts.Webhooks, notify.Target{URL: u, Secret: secret})
				}
			}
			if limitsFile != "" {
				b, err := os.ReadFile(limitsFile)
				if err != nil {
					return fmt.Errorf("--limits: %w", err)
				}
				if err := json.Unmarshal(b, &opts.Limits); err != nil {
					return fmt.Errorf("--limits %s: %v (expected {\"8867-4\": {\"min\": 20, \"max\": 300}, ...})", limitsFile, err)
				}
			}
			for _, a := range allow {
				_, n, err := net.ParseCIDR(a)
				if err != nil {
					return fmt.Errorf("bad --mllp-allow %q: use CIDR notation such as 10.20.0.0/16", a)
				}
				opts.MLLPAllow = append(opts.MLLPAllow, n)
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			opts.Logger = log
			return serve(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.HTTPAddr, "http", envOr("VIGIL_HTTP", ":8080"), "HTTP listen address (env VIGIL_HTTP)")
	f.StringVar(&opts.MQTTAddr, "mqtt", envOr("VIGIL_MQTT", ":1883"), "MQTT listen address (env VIGIL_MQTT)")
	f.StringVar(&opts.MLLPAddr, "mllp", envOr("VIGIL_MLLP", ""), "HL7 v2 MLLP listen address, e.g. :2575 (env VIGIL_MLLP; empty: off)")
	f.StringSliceVar(&allow, "mllp-allow", nil, "networks allowed to send HL7 over MLLP, CIDR (default: loopback only)")
	f.StringSliceVar(&webhooks, "webhook", nil, "URL that receives every alert transition as a signed JSON POST (repeatable; https, or http to loopback)")
	f.StringVar(&webhookSecretFile, "webhook-secret-file", "", "file holding the webhook signing secret (or env VIGIL_WEBHOOK_SECRET)")
	f.StringVar(&limitsFile, "limits", "", `JSON file of plausibility ranges by LOINC code, e.g. {"8867-4": {"min": 20, "max": 300}}`)
	f.IntVar(&opts.MaxPayload, "max-payload", 256<<10, "largest accepted device message, in bytes")
	f.BoolVar(&opts.PublicMetrics, "public-metrics", false, "serve /metrics without authentication (for a Prometheus on a trusted network)")
	return cmd
}

// serve runs a node until ctx ends, then shuts it down gracefully.
func serve(ctx context.Context, g *globals, opts node.Options) error {
	n, err := node.Start(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "vigil: serving HTTP on %s and MQTT on %s (data %s)\n", n.URL(), n.MQTTAddr(), opts.DataDir)
	if n.MLLP != nil {
		fmt.Fprintf(g.stderr, "vigil: HL7 v2 over MLLP on %s\n", n.MLLP.Addr())
	}
	<-ctx.Done()
	fmt.Fprintln(g.stderr, "vigil: shutting down; committing in-flight readings")
	return n.Close()
}

func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(g.logLevel))); err != nil {
		return nil, fmt.Errorf("bad --log-level %q: use debug, info, warn or error", g.logLevel)
	}
	return slog.New(slog.NewJSONHandler(g.stderr, &slog.HandlerOptions{Level: lvl})), nil
}
