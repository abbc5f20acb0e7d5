package main

import (
	"context"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/httpapi"
)

const ruleLanguage = `A rule is a CEL expression that is true while the patient needs attention. Values are in
the canonical unit of their LOINC code (/min, %, Cel, mm[Hg]); codes and windows are literals:

  value("8867-4")                  newest heart rate
  age("8867-4")                    how old it is (a duration)
  missing("8867-4", duration("5m"))  no value in the last 5 minutes
  min, max, mean, slope (per minute), change (newest − oldest), count
                                   ("8867-4", duration("10m")) over a window of up to 6h
  alarm(), alarm("59408-5")        a device alarm is open (about that code)

Full reference: docs/rules.md.`

func newRuleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rule",
		Short: "Write, audit and backtest CEL alert rules",
		Long:  "Clinical alert rules beyond the built-in thresholds and NEWS2.\n\n" + ruleLanguage,
	}
	var title, expr, priority, note string
	var forDur time.Duration
	var disabled bool
	put := &cobra.Command{
		Use:   "put ID",
		Short: "Save (a new version of) a rule and put it in force",
		Long: `Save a rule under ID. It is checked first: a rule that does not compile is refused with
the line and column of the problem, and the previous version stays in force. Every version
is kept with who saved it and why (--note, required when changing a rule). --disabled takes
the rule out of force and resolves its open alerts. Backtest a rule before it goes live:
vigil rule backtest --expr ...

` + ruleLanguage,
		Example: `  vigil rule put tachy-trend --title "Heart rate high and rising" --priority medium --for 2m \
    --expr 'mean("8867-4", duration("10m")) > 110 && change("8867-4", duration("10m")) > 20' --data DIR
  vigil rule put tachy-trend --disabled --note "too many alerts on ward 3" ... --data DIR`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			enabled := !disabled
			req := httpapi.RuleRequest{Title: title, Expr: expr, ForSeconds: int(forDur / time.Second), Priority: priority, Enabled: &enabled, Note: note}
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				saved, err := r.PutRule(ctx, args[0], req)
				if err != nil {
					return fmt.Errorf("rule refused: %w", err)
				}
				return g.print(saved, func(w *tabwriter.Writer) {
					state := "in force"
					if !saved.Enabled {
						state = "disabled"
					}
					fmt.Fprintf(w, "saved rule %s version %d (%s)\n", saved.ID, saved.Version, state)
				})
			})
		},
	}
	pf := put.Flags()
	pf.StringVar(&title, "title", "", "what the alert says (required)")
	pf.StringVar(&expr, "expr", "", "the CEL condition (required)")
	pf.StringVar(&priority, "priority", vigil.PriorityMedium, "high, medium or low (IEC 60601-1-8)")
	pf.DurationVar(&forDur, "for", 0, "how long the condition must hold before the alert fires (up to 1h)")
	pf.StringVar(&note, "note", "", "why this version (required when changing a rule)")
	pf.BoolVar(&disabled, "disabled", false, "save the rule out of force")
	_ = put.MarkFlagRequired("title")
	_ = put.MarkFlagRequired("expr")

	list := &cobra.Command{
		Use: "list", Short: "List rules (latest versions)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				rs, err := r.Rules(ctx)
				if err != nil {
					return err
				}
				return g.print(rs, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "ID\tVERSION\tENABLED\tPRIORITY\tFOR\tTITLE\tEXPR")
					for _, x := range rs {
						fmt.Fprintf(w, "%s\t%d\t%v\t%s\t%s\t%s\t%s\n", x.ID, x.Version, x.Enabled, x.Priority, x.For(), x.Title, x.Expr)
					}
				})
			})
		},
	}
	history := &cobra.Command{
		Use: "history ID", Short: "Show every version of a rule: who changed what, when and why", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				rs, err := r.RuleHistory(ctx, args[0])
				if err != nil {
					return err
				}
				return g.print(rs, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "VERSION\tSAVED\tBY\tENABLED\tNOTE\tEXPR")
					for _, x := range rs {
						fmt.Fprintf(w, "%d\t%s\t%s\t%v\t%s\t%s\n", x.Version, x.Saved.Format(time.RFC3339), x.SavedBy, x.Enabled, x.Note, x.Expr)
					}
				})
			})
		},
	}

	var from, to string
	var days int
	var patients []string
	bt := &cobra.Command{
		Use:   "backtest [ID]",
		Short: "Replay stored history through a rule: how many alerts, for whom, when",
		Long: `Run a rule over stored history — the saved rule ID, or one given with --expr — through the
same lifecycle as live alerts (its --for, the one-minute hysteresis, one open alert per
patient) and report the alerts it would have raised. Nothing is stored or sent. Device
alarms are not replayed (alarm() is false). At most 31 days per run.`,
		Example: `  vigil rule backtest tachy-trend --days 7 --data DIR
  vigil rule backtest --title "SpO2 falling" --expr 'change("59408-5", duration("15m")) < -4' --for 2m --days 30 --data DIR --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now().UTC()
			req := httpapi.BacktestRequest{From: now.Add(-time.Duration(days) * 24 * time.Hour), To: now, Patients: patients}
			var err error
			if from != "" {
				if req.From, err = time.Parse(time.RFC3339, from); err != nil {
					return fmt.Errorf("--from: use an RFC 3339 time such as 2026-11-01T00:00:00Z: %w", err)
				}
			}
			if to != "" {
				if req.To, err = time.Parse(time.RFC3339, to); err != nil {
					return fmt.Errorf("--to: use an RFC 3339 time: %w", err)
				}
			}
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				switch {
				case len(args) == 1 && expr == "":
					h, err := r.RuleHistory(ctx, args[0])
					if err != nil {
						return err
					}
					req.Rule = *h[len(h)-1]
				case expr != "":
					id := "backtest"
					if len(args) == 1 {
						id = args[0]
					}
					req.Rule = vigil.Rule{ID: id, Title: title, Expr: expr, ForSeconds: int(forDur / time.Second), Priority: priority}
					if req.Rule.Title == "" {
						req.Rule.Title = "backtest"
					}
				default:
					return fmt.Errorf("name a saved rule (vigil rule backtest ID) or give one with --expr")
				}
				rep, err := r.Backtest(ctx, req)
				if err != nil {
					return fmt.Errorf("backtest refused: %w", err)
				}
				return g.print(rep, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "rule %s from %s to %s: %d alert(s) for %d of %d patient(s), %d readings replayed, %d unknown evaluations\n",
						rep.Rule, rep.From.Format(time.RFC3339), rep.To.Format(time.RFC3339), rep.Alerts, len(rep.PerPatient), rep.Patients, rep.Readings, rep.Unknown)
					ids := make([]string, 0, len(rep.PerPatient))
					for p := range rep.PerPatient {
						ids = append(ids, p)
					}
					sort.Strings(ids)
					if len(ids) > 0 {
						fmt.Fprintln(w, "\nPATIENT\tALERTS")
						for _, p := range ids {
							fmt.Fprintf(w, "%s\t%d\n", p, rep.PerPatient[p])
						}
						fmt.Fprintln(w, "\nPATIENT\tSINCE\tFIRED\tRESOLVED\tDETAIL")
					}
					for _, a := range rep.List {
						res := "still open"
						if a.Resolved != nil {
							res = a.Resolved.Format(time.RFC3339)
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", a.Patient, a.Since.Format(time.RFC3339), a.Fired.Format(time.RFC3339), res, a.Detail)
					}
					if rep.Truncated {
						fmt.Fprintf(w, "(list cut at %d alerts; use --json or narrow the range)\n", len(rep.List))
					}
				})
			})
		},
	}
	bf := bt.Flags()
	bf.StringVar(&expr, "expr", "", "a CEL condition to try instead of a saved rule")
	bf.StringVar(&title, "title", "", "its title")
	bf.StringVar(&priority, "priority", vigil.PriorityMedium, "its priority")
	bf.DurationVar(&forDur, "for", 0, "how long the condition must hold")
	bf.IntVar(&days, "days", 7, "replay the last N days (up to 31), unless --from/--to")
	bf.StringVar(&from, "from", "", "start of the replay (RFC 3339)")
	bf.StringVar(&to, "to", "", "end of the replay (RFC 3339; default now)")
	bf.StringSliceVar(&patients, "patient", nil, "only these patients (repeatable; default all)")
	cmd.AddCommand(put, list, history, bt)
	return cmd
}
