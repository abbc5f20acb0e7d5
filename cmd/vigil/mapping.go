package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/mapping"
	"github.com/vigil-iomt/vigil/internal/medtech"
)

func newMappingCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "mapping", Short: "Work with Azure MedTech-compatible mapping templates"}
	var devT, fhirT, msg, patient string
	test := &cobra.Command{
		Use:   "test",
		Short: "Dry-run a device-mapping and FHIR-mapping template pair on a sample payload",
		Long: `Run MedTech device-mapping and FHIR-mapping templates (unchanged from Azure) on a sample
device payload and show the normalized measurements, Vigil's canonical values and the FHIR
Observations that would be stored — or exactly why not (the template line and column, or the
JSON path of the offending field). Nothing is stored; no server is needed.`,
		Example: `  vigil mapping test --device-template devicemapping.json --fhir-template fhirmapping.json --message sample.json
  vigil mapping test --device-template d.json --fhir-template f.json --message m.json --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			read := func(flag, path string) ([]byte, error) {
				b, err := os.ReadFile(path)
				if err != nil {
					return nil, fmt.Errorf("--%s: %w", flag, err)
				}
				return b, nil
			}
			d, err := read("device-template", devT)
			if err != nil {
				return err
			}
			f, err := read("fhir-template", fhirT)
			if err != nil {
				return err
			}
			m, err := read("message", msg)
			if err != nil {
				return err
			}
			res, err := medtech.Test(d, f, m, mapping.DefaultTable(), patient)
			if err != nil {
				return fmt.Errorf("template refused: %w", err)
			}
			if err := g.print(res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "normalized measurements: %d\n", len(res.Measurements))
				for _, ms := range res.Measurements {
					fmt.Fprintf(w, "  %s\tdevice %s\t%s\t", ms.Type, ms.DeviceID, ms.OccurrenceTimeUTC.Format("2006-01-02T15:04:05.000Z"))
					for _, p := range ms.Properties {
						fmt.Fprintf(w, "%s=%s ", p.Name, p.Value)
					}
					fmt.Fprintln(w)
				}
				fmt.Fprintf(w, "Vigil values: %d\n", len(res.Values))
				for _, v := range res.Values {
					orig := ""
					if v.OrigUnit != "" {
						orig = " (sent as " + v.OrigUnit + ")"
					}
					fmt.Fprintf(w, "  %s\t%g %s%s\n", v.Code, v.Value, v.Unit, orig)
				}
				fmt.Fprintf(w, "FHIR Observations: %d (use --json to see them)\n", len(res.Observations))
				for _, e := range res.Errors {
					fmt.Fprintf(w, "error: %s\n", e)
				}
			}); err != nil {
				return err
			}
			if len(res.Errors) > 0 {
				return fmt.Errorf("%d problem(s): the payload would not be stored as shown", len(res.Errors))
			}
			return nil
		},
	}
	f := test.Flags()
	f.StringVar(&devT, "device-template", "", "device-mapping template file (required)")
	f.StringVar(&fhirT, "fhir-template", "", "FHIR-mapping template file (required)")
	f.StringVar(&msg, "message", "", "sample device payload file (required)")
	f.StringVar(&patient, "patient", "", "patient id to show as the Observations' subject")
	for _, n := range []string{"device-template", "fhir-template", "message"} {
		_ = test.MarkFlagRequired(n)
	}
	cmd.AddCommand(test)
	return cmd
}
