package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/pubhealth"
)

func newExportCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "export", Short: "Export data that may leave Vigil: public-health aggregates, research extracts"}
	var from, to string
	var o pubhealth.Options
	agg := &cobra.Command{
		Use:   "aggregates",
		Short: "Population aggregates per region, age band, sex and ISO week, small cells suppressed (CSV)",
		Long: `Writes, per cohort cell — region (the first --postal-chars characters of the
patient's postal code), age band (0-17, 18-44, 45-64, 65-74, 75+), sex and ISO week
— the patients who reported that week, the fever rate (share with a temperature of
38.0 °C or more), the mean SpO2, the share of hypertensive blood pressure readings
(140/90 mmHg or more) and device adherence (days with a reading ÷ 7), with
region-week and week totals.

A cell of fewer than --k patients (at least 11) is suppressed, and so is the
smallest other cell of any group whose total would otherwise give it away. Each
patient counts once per cell and week. The export runs through the server, which
audits it. CSV by default; --json for the table as JSON.`,
		Example: `  vigil export aggregates --from 2026-11-02 --to 2026-11-30 > weeks.csv
  vigil export aggregates --from 2026-11-02 --to 2026-11-30 --k 20 --postal-chars 2 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.From, err = time.Parse("2006-01-02", from); err != nil {
				return fmt.Errorf("--from %q: give a date YYYY-MM-DD", from)
			}
			if o.To, err = time.Parse("2006-01-02", to); err != nil {
				return fmt.Errorf("--to %q: give a date YYYY-MM-DD", to)
			}
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				t, err := r.Aggregates(ctx, o)
				if err != nil {
					return err
				}
				if g.json {
					return g.print(t, nil)
				}
				return t.WriteCSV(g.stdout)
			})
		},
	}
	f := agg.Flags()
	f.StringVar(&from, "from", "", "first day, YYYY-MM-DD (its whole ISO week is included; required)")
	f.StringVar(&to, "to", "", "day after the last, YYYY-MM-DD (required)")
	f.IntVar(&o.K, "k", pubhealth.DefaultK, "smallest number of patients a published cell may hold (11 or more)")
	f.IntVar(&o.PostalChars, "postal-chars", pubhealth.DefaultPostalChars, "postal code characters that make the region (1-4; fewer is coarser and safer)")
	_ = agg.MarkFlagRequired("from")
	_ = agg.MarkFlagRequired("to")
	var ro pubhealth.ExtractOptions
	research := &cobra.Command{
		Use:   "research",
		Short: "A pseudonymised row-level extract for an approved study (CSV)",
		Long: `Writes every reading of the period (the vital signs, or --code) as
subject,time,code,value,unit,birth_year,sex, where subject is a pseudonym keyed to
the study (HMAC-SHA256 under a key derived from DATA/research-key: the same
patient has one pseudonym per study, and two studies' cannot be linked without the
key), times are shifted by the patient's own 1 to 180 days either way, and names,
record numbers, device ids, postal codes and all date elements but the birth year
are left out (the very old as 90+).

This is pseudonymised personal data (GDPR Recital 26), not anonymous: hand it over
only under the study's approval and a data-use agreement. --approval names that
approval; the extract runs through the server, which audits it.`,
		Example: `  vigil export research --study copd-2027 --approval "REC 26/LO/0042" --from 2026-01-01 --to 2027-01-01 > copd.csv`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if ro.From, err = time.Parse("2006-01-02", from); err != nil {
				return fmt.Errorf("--from %q: give a date YYYY-MM-DD", from)
			}
			if ro.To, err = time.Parse("2006-01-02", to); err != nil {
				return fmt.Errorf("--to %q: give a date YYYY-MM-DD", to)
			}
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				return r.Extract(ctx, ro, g.stdout)
			})
		},
	}
	rf := research.Flags()
	rf.StringVar(&ro.Study, "study", "", "the study's id (its pseudonyms derive from it; required)")
	rf.StringVar(&ro.Approval, "approval", "", "the approval reference: ethics committee or data-access decision (required)")
	rf.StringVar(&from, "from", "", "first day, YYYY-MM-DD (required)")
	rf.StringVar(&to, "to", "", "day after the last, YYYY-MM-DD (required)")
	rf.StringSliceVar(&ro.Codes, "code", nil, "LOINC codes to include (default: the vital signs)")
	for _, f := range []string{"study", "approval", "from", "to"} {
		_ = research.MarkFlagRequired(f)
	}
	cmd.AddCommand(agg, research)
	return cmd
}
