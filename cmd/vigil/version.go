package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

// BuildInfo is what `vigil version` reports.
type BuildInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	Go       string `json:"go"`
	Platform string `json:"platform"`
	CGO      bool   `json:"cgo"`
	// Formats are the on-disk and backup formats this build reads and writes.
	StoreFormat  int `json:"storeFormat"`
	BackupFormat int `json:"backupFormat"`
}

func buildInfo() BuildInfo {
	b := BuildInfo{Version: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, StoreFormat: storeFormat(), BackupFormat: backupFormat()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			case "CGO_ENABLED":
				b.CGO = s.Value == "1"
			}
		}
		if b.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
	}
	return b
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show this build's version, commit and the data formats it reads",
		Example: `  vigil version
  vigil version --json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			b := buildInfo()
			return g.print(b, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "vigil\t%s\n", b.Version)
				if b.Commit != "" {
					mod := ""
					if b.Modified {
						mod = " (with uncommitted changes)"
					}
					fmt.Fprintf(w, "commit\t%s%s\n", b.Commit, mod)
				}
				if b.Time != "" {
					fmt.Fprintf(w, "built from\t%s\n", b.Time)
				}
				fmt.Fprintf(w, "go\t%s %s (cgo %v)\n", b.Go, b.Platform, b.CGO)
				fmt.Fprintf(w, "store format\t%d\nbackup format\t%d\n", b.StoreFormat, b.BackupFormat)
			})
		},
	}
}
