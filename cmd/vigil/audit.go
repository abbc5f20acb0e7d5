package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"text/tabwriter"

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
	cmd.AddCommand(verify)
	return cmd
}
