package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/httpapi"
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
					switch {
					case v.Text != "":
						fmt.Fprintf(w, "  %s\t%q\n", v.Code, v.Text)
					case v.Concept != nil:
						fmt.Fprintf(w, "  %s\t%s", v.Code, v.Concept.Text)
						for _, c := range v.Concept.Coding {
							fmt.Fprintf(w, " [%s|%s]", c.System, c.Code)
						}
						fmt.Fprintln(w)
					default:
						fmt.Fprintf(w, "  %s\t%g %s%s\n", v.Code, v.Value, v.Unit, orig)
					}
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
	var pd, pf string
	var devices, kinds []string
	put := &cobra.Command{
		Use:   "put ID",
		Short: "Save (a new version of) a template pair and bind it to devices or device kinds",
		Long: `Save a MedTech device-mapping and FHIR-mapping template pair under ID. Both are
validated first; a broken template is refused with its line and column or the JSON path
of the offending field, and the previous version stays in force. Devices send payloads
for it to vigil/v1/devices/{id}/medtech (MQTT) or POST /api/v1/devices/{id}/medtech.`,
		Example: `  vigil mapping put acme-hr --device-template d.json --fhir-template f.json --kind wearable --data DIR
  vigil mapping put lab-7 --device-template d.json --fhir-template f.json --device mon-7 --data DIR`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := os.ReadFile(pd)
			if err != nil {
				return fmt.Errorf("--device-template: %w", err)
			}
			f, err := os.ReadFile(pf)
			if err != nil {
				return fmt.Errorf("--fhir-template: %w", err)
			}
			if len(devices) == 0 && len(kinds) == 0 {
				return fmt.Errorf("bind the mapping with --device ID or --kind KIND (repeatable)")
			}
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				m, err := r.PutMapping(ctx, args[0], httpapi.MappingRequest{DeviceTemplate: d, FhirTemplate: f, Devices: devices, Kinds: kinds})
				if err != nil {
					return err
				}
				return g.print(m, func(w *tabwriter.Writer) { fmt.Fprintf(w, "saved mapping %s version %d\n", m.ID, m.Version) })
			})
		},
	}
	put.Flags().StringVar(&pd, "device-template", "", "device-mapping template file (required)")
	put.Flags().StringVar(&pf, "fhir-template", "", "FHIR-mapping template file (required)")
	put.Flags().StringSliceVar(&devices, "device", nil, "device id it applies to (repeatable)")
	put.Flags().StringSliceVar(&kinds, "kind", nil, "device kind it applies to (repeatable)")
	_ = put.MarkFlagRequired("device-template")
	_ = put.MarkFlagRequired("fhir-template")
	list := &cobra.Command{
		Use: "list", Short: "List mapping templates (latest versions) and their bindings", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				ms, err := r.Mappings(ctx)
				if err != nil {
					return err
				}
				return g.print(ms, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "ID\tVERSION\tSAVED\tDEVICES\tKINDS")
					for _, m := range ms {
						fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", m.ID, m.Version, m.Saved.Format("2006-01-02 15:04"), strings.Join(m.Devices, ","), strings.Join(m.Kinds, ","))
					}
				})
			})
		},
	}
	cmd.AddCommand(test, put, list)
	return cmd
}
