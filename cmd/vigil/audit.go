package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/audit"
)

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Check the tamper-evident audit log"}
	var pubFile string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Replay the audit log and check it against its signed tree head",
		Long: `Replay every audit record (logins, failed logins, PHI reads and writes, configuration
changes), recompute the Merkle tree (RFC 6962) and check the signed tree head. An edited,
deleted, reordered or truncated record is reported with its index; the command then exits
with status 1.

On a stopped node it reads the data directory and checks the head with --pubkey (a copy of
DATA/audit-key.pub kept elsewhere; default: the one in the data directory). With the server
running, the server checks with its own key.`,
		Example: `  vigil audit verify --data /var/lib/vigil --pubkey /secure/vigil-audit-key.pub
  vigil audit verify --data /var/lib/vigil --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var pub ed25519.PublicKey
			if pubFile != "" {
				var err error
				if pub, err = audit.LoadPublicKey(pubFile); err != nil {
					return err
				}
			}
			var rep *audit.Report
			err := g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				var err error
				rep, err = r.AuditVerify(ctx, pub)
				return err
			})
			if err != nil {
				return err
			}
			if err := g.print(rep, func(w *tabwriter.Writer) {
				if rep.OK {
					fmt.Fprintf(w, "audit log intact: %d records, signed tree head of %s\n", rep.Records, rep.Head.Time.Format("2006-01-02 15:04:05Z07:00"))
					return
				}
				fmt.Fprintf(w, "AUDIT LOG TAMPERED: %s\n", rep.Problem)
			}); err != nil {
				return err
			}
			if !rep.OK {
				return fmt.Errorf("audit log check failed: %s", rep.Problem)
			}
			return nil
		},
	}
	verify.Flags().StringVar(&pubFile, "pubkey", "", "the audit public key to check the signed head with (default DATA/audit-key.pub)")
	cmd.AddCommand(verify, newAuditLogCmd(g))
	return cmd
}

func newAuditLogCmd(g *globals) *cobra.Command {
	var q audit.Query
	var from, to string
	var fhirOut bool
	cmd := &cobra.Command{
		Use:   "log",
		Short: "List audit entries: who did what to whose data, when, from where",
		Long: `List audit entries oldest first, filtered by actor, patient, outcome and time. Entries hold
ids, never names or values. Page with --after (the "next" a page prints). --fhir prints a
Bundle of FHIR R4 AuditEvent for an audit repository or SIEM.

Works on a stopped node's data directory, or through the running server (as an admin or
auditor; see vigil user add --role auditor).`,
		Example: `  vigil audit log --data /var/lib/vigil --patient p-0042 --from 2026-11-01T00:00:00Z
  vigil audit log --data /var/lib/vigil --outcome denied --limit 1000 --json
  vigil audit log --data /var/lib/vigil --actor nurse-jo --fhir > audit-bundle.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, f := range []struct {
				name, v string
				t       *time.Time
			}{{"--from", from, &q.From}, {"--to", to, &q.To}} {
				if f.v == "" {
					continue
				}
				t, err := time.Parse(time.RFC3339, f.v)
				if err != nil {
					return fmt.Errorf("%s %q: use RFC 3339, e.g. 2026-12-01T00:00:00Z", f.name, f.v)
				}
				*f.t = t
			}
			switch q.Outcome {
			case "", audit.Success, audit.Denied, audit.Failure:
			default:
				return fmt.Errorf("--outcome %q: use success, denied or failure", q.Outcome)
			}
			var page *audit.Page
			err := g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				var err error
				page, err = r.AuditFind(ctx, q)
				return err
			})
			if err != nil {
				return err
			}
			if fhirOut {
				entries := make([]any, 0, len(page.Entries))
				for i := range page.Entries {
					entries = append(entries, map[string]any{"resource": page.Entries[i].AuditEvent()})
				}
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"resourceType": "Bundle", "type": "collection", "entry": entries})
			}
			return g.print(page, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "#\tTIME\tACTOR\tROLE\tACTION\tPATIENT\tOUTCOME\tFROM")
				for _, e := range page.Entries {
					outcome := e.Outcome
					if e.Detail != "" {
						outcome += " (" + e.Detail + ")"
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Index, e.Time.Format("2006-01-02 15:04:05Z07:00"),
						dash(e.Actor), dash(e.Role), e.Action, dash(e.Patient), outcome, dash(e.Remote))
				}
				if page.Next > 0 {
					fmt.Fprintf(w, "more: --after %d\n", page.Next)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Actor, "actor", "", "only this user or device")
	f.StringVar(&q.Patient, "patient", "", "only entries about this patient id")
	f.StringVar(&q.Outcome, "outcome", "", "only success, denied or failure")
	f.StringVar(&from, "from", "", "only entries at or after this time (RFC 3339)")
	f.StringVar(&to, "to", "", "only entries before this time (RFC 3339)")
	f.Uint64Var(&q.After, "after", 0, "entries after this index (the next page)")
	f.IntVar(&q.Limit, "limit", 100, "at most this many entries (≤ 1000)")
	f.BoolVar(&fhirOut, "fhir", false, "print a Bundle of FHIR R4 AuditEvent")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
