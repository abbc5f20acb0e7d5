package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/node"
)

func newKeysCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage the keys that encrypt patient data at rest"}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new data key for new writes (old records keep reading)",
		Long: `Patient records, user records, dead letters, reviews, device events and alerts are
encrypted at rest with AES-256-GCM under a data key wrapped by the master key
(VIGIL_MASTER_KEY, or DATA/master-key). rotate makes a new data key current: what is
written from now on uses it; what was written before still opens with its own key.
Run it on a stopped node, or restart the node afterwards.`,
		Example: `  vigil keys rotate --data /var/lib/vigil`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.data == "" {
				return fmt.Errorf("no data directory: pass --data DIR or set VIGIL_DATA")
			}
			s, err := node.OpenSealer(g.data)
			if err != nil {
				return err
			}
			if err := s.Rotate(); err != nil {
				return err
			}
			return g.print(map[string]uint32{"current": s.Current()}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "data key %d is now current\n", s.Current())
			})
		},
	}
	cmd.AddCommand(rotate)
	return cmd
}
