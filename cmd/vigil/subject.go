package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/node"
)

// runningClient is the admin API of the server (or edge) running on
// --data, for what must go through it: subject requests (audited there;
// an erasure also clears the server's memory), an edge's status.
func (g *globals) runningClient(what string) (*httpapi.Client, error) {
	if g.data == "" {
		return nil, fmt.Errorf("no data directory: pass --data DIR or set VIGIL_DATA")
	}
	c, err := node.ReadControl(g.data)
	if err != nil || !processAlive(c.PID) {
		return nil, fmt.Errorf("%s goes through the Vigil running on %s, and none runs there: start it (vigil serve, or vigil edge) first", what, g.data)
	}
	return httpapi.NewClient(c.HTTPURL, c.Token).WithTLS(g.clientTLS()), nil
}

func newPatientExportCmd(g *globals) *cobra.Command {
	var out, ref string
	cmd := &cobra.Command{
		Use:   "export PATIENT",
		Short: "Subject access: everything held about a patient, as one FHIR Bundle",
		Long: `Write everything Vigil holds about the patient — registry entry, the devices that measured them,
every observation, every alert, device events and clinician reviews — as one FHIR R4 Bundle
(type collection) to --out, for a subject access request. Audited with --reference. Who looked
at the record is in the audit log: vigil audit log --patient PATIENT.`,
		Example: `  vigil patient export p-0001 --reference DPO-2026-114 --out p-0001.json --data /var/lib/vigil`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" || ref == "" {
				return fmt.Errorf("give --out FILE and --reference (the request's reference, for the audit log)")
			}
			c, err := g.runningClient("a subject access export")
			if err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			err = c.SubjectExport(cmd.Context(), args[0], ref, f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(out)
				return err
			}
			st, _ := os.Stat(out)
			return g.print(map[string]any{"patient": args[0], "file": out, "bytes": st.Size()}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "everything held about %s:\t%s (%d bytes, FHIR Bundle)\n", args[0], out, st.Size())
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the Bundle to (must not exist; mode 0600)")
	cmd.Flags().StringVar(&ref, "reference", "", "the request's reference, e.g. the data protection officer's case number (audited; no names)")
	return cmd
}

func newPatientEraseCmd(g *globals) *cobra.Command {
	var ref string
	var yes bool
	cmd := &cobra.Command{
		Use:   "erase PATIENT",
		Short: "Erase a patient on a lawful request: readings, registry entry, alerts, derived data",
		Long: `Erase everything Vigil holds about the patient: the registry entry, every reading (samples,
chunks, origins), alerts, device events, reviews, the patient's own login accounts, device
assignments to them and unsent change-feed entries; the ranges are compacted so the bytes leave
the disk. The devices stay (they belong to the hospital), and so does the audit log, which gets a
tombstone: who, when, the request's reference and the counts — no patient data. It cannot be
undone; backups made before still hold the data until they expire.

Export first (vigil patient export) if the request asks for a copy.`,
		Example: `  vigil patient erase p-0001 --reference DPO-2026-114 --yes --data /var/lib/vigil`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ref == "" {
				return fmt.Errorf("give --reference (the request's reference, for the audit log)")
			}
			if !yes {
				return fmt.Errorf("erasing %s cannot be undone: add --yes", args[0])
			}
			c, err := g.runningClient("an erasure")
			if err != nil {
				return err
			}
			out, err := c.ErasePatient(cmd.Context(), args[0], ref)
			if err != nil {
				return err
			}
			return g.print(out, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "erased %s:\t%v\n", args[0], out["erased"])
			})
		},
	}
	cmd.Flags().StringVar(&ref, "reference", "", "the lawful request's reference (audited; no names)")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm: erasure cannot be undone")
	return cmd
}
