package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/sim"
)

func newSimCmd(g *globals) *cobra.Command {
	var url, mqtt, token string
	var patients int
	var speed float64
	var seed uint64
	var dropEvery time.Duration
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Simulate a cohort of patients and devices against a running Vigil server",
		Long: `Register a simulated cohort (patients, bedside monitors, wearables, home BP cuffs
and glucometers) on a running server through its admin API, then send
physiologically plausible readings the way real devices do: MQTT with each
device's own credentials, HTTPS batches from home devices, dropped connections
and late uploads, and scripted deteriorations compressed in time.

The server is found through --data (its control file) or given with --url,
--mqtt and --token (an admin API token).`,
		Example: `  vigil sim --data ./vigil-data --patients 40 --speed 30
  vigil sim --url https://vigil.example:8443 --mqtt vigil.example:8883 --token "$VIGIL_TOKEN"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if url == "" || token == "" || mqtt == "" {
				if g.data == "" {
					return errors.New("say where the server is: --data DIR of a running server, or --url, --mqtt and --token")
				}
				c, err := node.ReadControl(g.data)
				if err != nil {
					return fmt.Errorf("no running server found on %s (%w): start `vigil serve --data %s` first", g.data, err, g.data)
				}
				url, mqtt, token = pick(url, c.HTTPURL), pick(mqtt, c.MQTTAddr), pick(token, c.Token)
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			reg := onlineRegistry{httpapi.NewClient(url, token)}
			plans := sim.Plan(patients, seed)
			secrets, err := provisionCohort(ctx, reg, plans, time.Now().Add(-7*24*time.Hour))
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "vigil sim: %d patients registered; sending readings to %s and %s (Ctrl-C stops)\n", len(plans), mqtt, url)
			err = sim.Run(ctx, plans, sim.Options{MQTTAddr: mqtt, HTTPURL: url, Secrets: secrets, Speed: speed, Seed: seed, Logger: log, DropEvery: dropEvery})
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "", "base URL of the server")
	f.StringVar(&mqtt, "mqtt", "", "MQTT address of the server, host:port")
	f.StringVar(&token, "token", envOr("VIGIL_TOKEN", ""), "admin API token (env VIGIL_TOKEN)")
	f.IntVar(&patients, "patients", 40, "number of simulated patients")
	f.Float64Var(&speed, "speed", 1, "time compression of scripted deteriorations")
	f.Uint64Var(&seed, "seed", 1, "random seed of the cohort")
	f.DurationVar(&dropEvery, "drop-every", 10*time.Minute, "mean time between dropped MQTT connections per device (0: never)")
	return cmd
}

func pick(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
