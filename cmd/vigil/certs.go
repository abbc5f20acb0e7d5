package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/certs"
)

func newCertsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "Make the TLS certificates Vigil serves with"}
	var hosts []string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create a local CA and a server certificate in DATA/tls",
		Long: `Create a local certificate authority (unless DATA/tls already has one) and a server
certificate signed by it, valid for localhost, 127.0.0.1, this machine's name and every
--host. vigil serve then speaks TLS on every listener: HTTPS, MQTT over TLS (port 8883 by
default) and MLLP over TLS.

Give devices and clients DATA/tls/ca.pem to trust. Keep DATA/tls/ca-key.pem secret (mode
0600), or move it offline and bring it back to issue the next certificate. Running init
again replaces the server certificate (for new host names) under the same CA.

A hospital's own certificate can be used instead: vigil serve --tls-cert F --tls-key F.`,
		Example: `  vigil certs init --data /var/lib/vigil --host vigil.ward4.example.org --host 10.20.0.5`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.data == "" {
				return fmt.Errorf("no data directory: pass --data DIR or set VIGIL_DATA")
			}
			if h, err := os.Hostname(); err == nil {
				hosts = append(hosts, h)
			}
			dir := certs.Dir(g.data)
			fp, err := certs.Init(dir, hosts, time.Now())
			if err != nil {
				return fmt.Errorf("make certificates: %w", err)
			}
			out := struct {
				CA          string   `json:"ca"`
				Certificate string   `json:"certificate"`
				Key         string   `json:"key"`
				Hosts       []string `json:"hosts"`
				Fingerprint string   `json:"sha256"`
			}{filepath.Join(dir, certs.CAFile), filepath.Join(dir, certs.CertFile), filepath.Join(dir, certs.KeyFile), append([]string{"localhost", "127.0.0.1", "::1"}, hosts...), fp}
			return g.print(out, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "server certificate:\t%s\n", out.Certificate)
				fmt.Fprintf(w, "valid for:\t%s\n", strings.Join(out.Hosts, ", "))
				fmt.Fprintf(w, "SHA-256:\t%s\n", fp)
				fmt.Fprintf(w, "CA to give devices and clients:\t%s\n", out.CA)
				fmt.Fprintf(w, "\nvigil serve --data %s now serves HTTPS, MQTT over TLS and MLLP over TLS.\n", g.data)
			})
		},
	}
	initCmd.Flags().StringSliceVar(&hosts, "host", nil, "DNS name or IP address the server is reached by (repeatable)")
	cmd.AddCommand(initCmd)
	return cmd
}

// clientTLS returns a client TLS configuration trusting the data
// directory's CA (DATA/tls/ca.pem), or nil when there is none.
func (g *globals) clientTLS() *tls.Config {
	if g.data == "" {
		return nil
	}
	pool, err := certs.Pool(filepath.Join(certs.Dir(g.data), certs.CAFile))
	if err != nil {
		return nil
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}
