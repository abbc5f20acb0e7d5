package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/node"
)

func newServeCmd(g *globals) *cobra.Command {
	var opts node.Options
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Vigil server on a data directory",
		Long: `Run the Vigil server: MQTT and HTTP device ingest, FHIR R4 API, alerts, web app.

Every reading is acknowledged only after it is on disk. SIGINT or SIGTERM shuts
down gracefully: listeners close, in-flight readings are committed, and nothing
acknowledged is lost.

Environment variables VIGIL_DATA, VIGIL_HTTP and VIGIL_MQTT mirror the flags.`,
		Example: `  vigil serve --data /var/lib/vigil
  vigil serve --data ./vigil-data --http 127.0.0.1:8080 --mqtt 127.0.0.1:1883`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.data == "" {
				return fmt.Errorf("no data directory: pass --data DIR or set VIGIL_DATA")
			}
			opts.DataDir = g.data
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
