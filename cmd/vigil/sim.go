package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
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
			tlsc := g.clientTLS()
			if !strings.HasPrefix(url, "https://") {
				tlsc = nil
			}
			reg := onlineRegistry{httpapi.NewClient(url, token).WithTLS(tlsc)}
			plans := sim.Plan(patients, seed)
			secrets, err := provisionCohort(ctx, reg, plans, time.Now().Add(-7*24*time.Hour))
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "vigil sim: %d patients registered; sending readings to %s and %s (Ctrl-C stops)\n", len(plans), mqtt, url)
			err = sim.Run(ctx, plans, sim.Options{MQTTAddr: mqtt, HTTPURL: url, Secrets: secrets, TLS: tlsc, Speed: speed, Seed: seed, Logger: log, DropEvery: dropEvery})
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
	cmd.AddCommand(newScenarioCmd(g), newCommunityCmd(g))
	return cmd
}

func newScenarioCmd(g *globals) *cobra.Command {
	var stable, det int
	var hours float64
	var seed uint64
	cmd := &cobra.Command{
		Use:   "scenario",
		Short: "Measure alert quality: false alerts of stable patients, early warning of deteriorating ones",
		Long: `Run a simulated cohort through Vigil's real alerting (built-in thresholds, NEWS2
response bands, hysteresis) on a throw-away embedded store and a simulated clock — no
server needed. Stable, noisy patients are watched for --hours: every alert they raise is
a false alert. Deteriorating patients follow a sepsis-like course for three hours: Vigil
should raise the NEWS2 medium alert before the high one. Prints the false-alert rate
per patient-day and the median lead time from medium to high.`,
		Example: `  vigil sim scenario
  vigil sim scenario --stable 100 --deteriorating 20 --hours 48 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := os.MkdirTemp("", "vigil-scenario-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			bar := progressbar.NewOptions(100, progressbar.OptionSetWriter(g.stderr), progressbar.OptionSetDescription("simulating"),
				progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(200*time.Millisecond))
			rep, err := sim.Scenario(cmd.Context(), sim.ScenarioOptions{Dir: dir, Stable: stable, Deteriorating: det, Hours: hours, Seed: seed,
				Progress: func(done float64) { _ = bar.Set(int(done * 100)) }})
			_ = bar.Finish()
			if err != nil {
				return err
			}
			return g.print(rep, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "stable patients:	%d over %.0f h\n", rep.StablePatients, rep.StableHours)
				fmt.Fprintf(w, "false alerts:	%d (%.2f per patient-day)\n", rep.FalseAlerts, rep.FalseAlertsPerPatDay)
				for r, n := range rep.FalseAlertsByRule {
					fmt.Fprintf(w, "  %s	%d\n", r, n)
				}
				fmt.Fprintf(w, "deteriorating patients:	%d\n", rep.DeterioratingPatients)
				fmt.Fprintf(w, "NEWS2 medium before high:	%d of %d (median %.0f min ahead)\n", rep.MediumBeforeHigh, rep.DeterioratingPatients, rep.LeadMinutes)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&stable, "stable", 40, "stable, noisy patients")
	f.IntVar(&det, "deteriorating", 10, "patients with a sepsis-like course")
	f.Float64Var(&hours, "hours", 24, "how long stable patients are watched")
	f.Uint64Var(&seed, "seed", 1, "random seed")
	return cmd
}

func pick(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func newCommunityCmd(g *globals) *cobra.Command {
	var o sim.CommunityOptions
	cmd := &cobra.Command{
		Use:   "community",
		Short: "Measure outbreak detection: a community programme with an outbreak in one region",
		Long: `Simulate a community programme — people checking temperature, SpO2 and blood
pressure at kiosks and with home hubs, in --regions regions of --patients each, over
--days days — with an outbreak of a febrile illness injected into one region, on a
throw-away embedded store and a simulated clock (no server needed). Then run Vigil's
biosurveillance over it: daily fever counts per region with differential-privacy noise
(ε = 1 per patient-day) and the CDC's EARS C1, C2 and C3. Prints, per method, the days
from the outbreak's start to its first signal, and false signals per region-month where
there was no outbreak.`,
		Example: `  vigil sim community
  vigil sim community --regions 20 --patients 300 --days 365 --outbreak-region 4 --outbreak-day 200 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := os.MkdirTemp("", "vigil-community-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			o.Dir = dir
			bar := progressbar.NewOptions(100, progressbar.OptionSetWriter(g.stderr), progressbar.OptionSetDescription("simulating"),
				progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(200*time.Millisecond))
			o.Progress = func(done float64) { _ = bar.Set(int(done * 100)) }
			rep, err := sim.Community(cmd.Context(), o)
			_ = bar.Finish()
			if err != nil {
				return err
			}
			return g.print(rep, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "programme:	%d regions, %d people, %d days, %d check-ins\n", rep.Regions, rep.Patients, rep.Days, rep.Readings)
				fmt.Fprintf(w, "outbreak:	region %s from %s\n", rep.OutbreakRegion, rep.OutbreakStart)
				for _, m := range []string{"C1", "C2", "C3"} {
					first := "no signal within 14 days"
					if d, ok := rep.DaysToSignal[m]; ok {
						first = fmt.Sprintf("signal after %d days", d)
					}
					fmt.Fprintf(w, "%s:	%s; %.2f false signals per region-month\n", m, first, rep.FalseSignalsPerRegionMonth[m])
				}
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Regions, "regions", 10, "regions (postal prefixes)")
	f.IntVar(&o.Patients, "patients", 150, "people per region")
	f.IntVar(&o.Days, "days", 120, "days simulated")
	f.Float64Var(&o.Adherence, "adherence", 0.6, "chance a person checks in on a day")
	f.Float64Var(&o.BaselineFever, "baseline-fever", 0.04, "chance of fever at a check-in outside the outbreak")
	f.IntVar(&o.OutbreakRegion, "outbreak-region", 0, "region of the outbreak (0-based; -1: none)")
	f.IntVar(&o.OutbreakDay, "outbreak-day", 80, "day the outbreak starts (at least 10)")
	f.Float64Var(&o.OutbreakGrowth, "outbreak-growth", 0.02, "daily rise in the chance of fever during the outbreak's 14 days")
	f.Uint64Var(&o.Seed, "seed", 1, "random seed")
	return cmd
}
