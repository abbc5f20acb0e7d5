package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/pubhealth"
)

func newExportCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "export", Short: "Export data that may leave Vigil: public-health aggregates"}
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
	cmd.AddCommand(agg)
	return cmd
}
