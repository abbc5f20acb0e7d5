package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

func newStoreCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "store", Short: "Repair the embedded store"}
	var yes bool
	salvage := &cobra.Command{
		Use:   "salvage",
		Short: "Open a store whose write-ahead log is damaged in the middle, keeping what precedes the damage",
		Long: `vigil serve refuses a store whose newest write-ahead log has damage followed by whole
records (disk damage, not an interrupted write): opening it anyway would silently drop
the records after the damage, acknowledged readings among them. Restore from a backup if
you can. If you cannot, salvage copies the damaged log to DATA/store.damaged-{time}/ and
cuts the log at the last whole record before the damage, so the store opens with
everything before it. What followed is lost from the store (the copy keeps the bytes).
Stop the server first. Without --yes it only says what it would do.`,
		Example: `  vigil store salvage --data ./vigil-data          # what would be cut
  vigil store salvage --data ./vigil-data --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.data == "" {
				return errors.New("no data directory: pass --data DIR or set VIGIL_DATA")
			}
			if c, err := node.ReadControl(g.data); err == nil && processAlive(c.PID) {
				return fmt.Errorf("a server (pid %d) runs on %s: stop it first", c.PID, g.data)
			}
			dir := filepath.Join(g.data, "store")
			if !yes {
				st, err := pebble.Open(dir, pebble.Options{CompactInterval: -1})
				if err == nil {
					st.Close()
					return g.print(map[string]string{"status": "sound"}, func(w *tabwriter.Writer) {
						fmt.Fprintln(w, "the store opens: nothing to salvage")
					})
				}
				return fmt.Errorf("%v\n\nrun again with --yes to salvage", err)
			}
			sv, err := pebble.SalvageWAL(dir, time.Now())
			if err != nil {
				return err
			}
			if sv == nil {
				return g.print(map[string]string{"status": "sound"}, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "the write-ahead log is not damaged: nothing to salvage")
				})
			}
			return g.print(sv, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "log:\t%s\nkept:\t%d bytes (up to the last whole record before the damage)\ndropped:\t%d bytes (readings acknowledged in them are gone from the store)\ncopy:\t%s\n", sv.Log, sv.Kept, sv.Dropped, sv.Copy)
			})
		},
	}
	salvage.Flags().BoolVar(&yes, "yes", false, "cut the log (after copying it)")
	cmd.AddCommand(salvage)
	return cmd
}
