package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/edge"
	"github.com/vigil-iomt/vigil/internal/node"
)

func newEdgeCmd(g *globals) *cobra.Command {
	var opts node.Options
	eo := &node.EdgeOptions{BufferMax: 1 << 30}
	var cert, key, ca string
	var plaintext bool
	var tlsCert, tlsKey, cpuProfile string
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run Vigil at the edge: monitor near the devices, forward upstream when the network allows",
		Long: `Run an edge gateway: a ward gateway, a home hub or an ambulance runs the same device ingest
(MQTT, HTTP, HL7 v2 over MLLP), mapping, rules, alerts, web page and nurse-call topics as the
server, on its own data directory, and forwards every reading to the upstream server.

Every reading a device is told is stored is in a durable buffer (the embedded store's outbox,
synced before the acknowledgement) and leaves it only once the upstream server has stored it.
Forwarding is exactly once in effect (the server drops repeats by device and reading id) and in
order per device. While the uplink is down the patients are monitored all the same: rules run
here, alerts show on this edge's web page and nurse-call topics.

The edge is registered on the server as a device of kind edge that serves wards or patients:

  server$ vigil device add --id ward7-edge --kind edge --serves-ward 7
  server$ vigil device cert ward7-edge --out ./ward7-edge     # its client certificate
  copy ward7-edge.pem, ward7-edge-key.pem and the server's DATA/tls/ca.pem to the edge

It fetches its configuration from the server over mutual TLS (the served patients, their
devices with their hashed secrets, assignments, rules and mapping templates; versioned, an older
one refused) at start and every --config-interval; devices then connect to the edge with their
usual credentials.

When the buffer (--buffer-max) is 80 % full the edge logs an error and raises an edge-buffer
event. Full, it refuses new readings (--buffer-policy refuse, the default: devices keep them and
send them again, nothing acknowledged is lost) or removes the oldest unforwarded ones (drop-oldest:
monitoring goes on; every eviction is logged, counted and listed in a dead letter).

Local listeners use TLS from DATA/tls (vigil certs init) like vigil serve, or --plaintext on
loopback for tests. Environment: VIGIL_UPSTREAM mirrors --upstream.`,
		Example: `  vigil edge --data /var/lib/vigil-edge --upstream https://vigil.hospital.example:8443 \
      --cert ward7-edge.pem --key ward7-edge-key.pem --upstream-ca ca.pem
  vigil edge --data ./edge --upstream https://vigil.example --cert e.pem --key e-key.pem \
      --buffer-max 4GiB --buffer-policy drop-oldest --http 127.0.0.1:8081 --mqtt 127.0.0.1:1884 --plaintext`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.data == "" {
				return fmt.Errorf("no data directory: pass --data DIR or set VIGIL_DATA")
			}
			opts.DataDir, opts.Version = g.data, buildInfo().Version
			u, err := url.Parse(eo.Upstream)
			if eo.Upstream == "" || err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
				return fmt.Errorf("--upstream %q: give the server's base URL, https://vigil.example:8443 (env VIGIL_UPSTREAM)", eo.Upstream)
			}
			if u.Scheme == "http" {
				if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
					return fmt.Errorf("--upstream %s: patient data leaves this machine only over TLS: use https://", eo.Upstream)
				}
			}
			if cert == "" || key == "" {
				return fmt.Errorf("give --cert and --key: the edge's client certificate from the server (vigil device cert EDGE on the server)")
			}
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				return fmt.Errorf("--cert/--key: %w", err)
			}
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil {
				return fmt.Errorf("--cert: %w", err)
			}
			if eo.ID == "" {
				eo.ID = leaf.Subject.CommonName
			}
			if !vigil.ValidID(eo.ID) {
				return fmt.Errorf("edge id %q (from the certificate's CN, or --id) is not a Vigil device id", eo.ID)
			}
			eo.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, ServerName: u.Hostname()}
			if ca != "" {
				pem, err := os.ReadFile(ca)
				if err != nil {
					return fmt.Errorf("--upstream-ca: %w", err)
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return fmt.Errorf("--upstream-ca %s holds no PEM certificate", ca)
				}
				eo.TLS.RootCAs = pool
			}
			switch eo.BufferPolicy {
			case edge.PolicyRefuse, edge.PolicyDropOldest:
			default:
				return fmt.Errorf("--buffer-policy %q: use refuse (devices keep what does not fit) or drop-oldest (the oldest unforwarded readings go, each eviction recorded)", eo.BufferPolicy)
			}
			opts.Edge = eo
			if err := g.listeners(&opts, tlsCert, tlsKey, plaintext); err != nil {
				return err
			}
			stopProfile, err := cpuProfiling(cpuProfile)
			if err != nil {
				return err
			}
			defer stopProfile()
			fmt.Fprintf(g.stderr, "vigil: edge %s forwarding to %s\n", eo.ID, strings.TrimSuffix(eo.Upstream, "/"))
			return serve(cmd.Context(), g, opts)
		},
	}
	cmd.AddCommand(newEdgeStatusCmd(g))
	f := cmd.Flags()
	f.StringVar(&eo.Upstream, "upstream", envOr("VIGIL_UPSTREAM", ""), "the upstream Vigil server's base URL, https://vigil.example:8443 (env VIGIL_UPSTREAM)")
	f.StringVar(&eo.ID, "id", "", "this edge's device id on the server (default: its certificate's CN)")
	f.StringVar(&cert, "cert", "", "the edge's client certificate (PEM) from the server's CA: vigil device cert EDGE")
	f.StringVar(&key, "key", "", "its private key (PEM)")
	f.StringVar(&ca, "upstream-ca", "", "CA certificate (PEM) that signed the server's certificate, e.g. the server's DATA/tls/ca.pem (default: the system's)")
	f.Var(&sizeFlag{&eo.BufferMax}, "buffer-max", "bound of the store-and-forward buffer, e.g. 2GiB (default: 1GiB; off: only the disk reserve bounds it)")
	f.StringVar(&eo.BufferPolicy, "buffer-policy", edge.PolicyRefuse, "when the buffer is full: refuse (new readings are refused, devices keep them) or drop-oldest (the oldest unforwarded readings are removed, each eviction recorded)")
	f.DurationVar(&eo.ConfigInterval, "config-interval", time.Minute, "how often to fetch the configuration (patients, devices, rules, mappings) from the server")
	f.IntVar(&eo.Batch, "batch", 2000, "most readings forwarded per request")
	f.StringVar(&opts.HTTPAddr, "http", envOr("VIGIL_HTTP", ":8080"), "local HTTP listen address: device ingest, the web page, the API (env VIGIL_HTTP)")
	f.StringVar(&opts.MQTTAddr, "mqtt", envOr("VIGIL_MQTT", ""), "local MQTT listen address (env VIGIL_MQTT; default :8883 with TLS, :1883 with --plaintext)")
	f.StringVar(&opts.MLLPAddr, "mllp", envOr("VIGIL_MLLP", ""), "local HL7 v2 MLLP listen address, e.g. :2575 (empty: off)")
	f.BoolVar(&plaintext, "plaintext", false, "local listeners without TLS (tests on loopback only)")
	f.StringVar(&tlsCert, "tls-cert", "", "local listeners' certificate (PEM) instead of DATA/tls/server.pem")
	f.StringVar(&tlsKey, "tls-key", "", "its private key (PEM)")
	f.BoolVar(&opts.RequireTOTP, "require-totp", true, "clinicians and admins sign in to the edge's web page with an authenticator code as well")
	f.Var(&sizeFlag{&opts.DiskReserve}, "disk-reserve", "refuse new readings while the data disk has less free space than this (default: 5% of the disk, between 64MiB and 1GiB; off: never)")
	retentionFlags(f, &opts)
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of the whole run to this file (read it with go tool pprof)")
	f.Float64Var(&opts.MQTTRate, "mqtt-rate", 0, "MQTT messages per second per device (0: the default; -1: no limit)")
	return cmd
}

func newEdgeStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show a running edge gateway's uplink, buffer and configuration",
		Long: `Ask the edge gateway running on --data what it is doing: whether the uplink answers, how
many readings wait in the buffer (and how full it is), what was forwarded, refused or evicted,
the clock skew to the server, and which configuration version is in force.`,
		Example: `  vigil edge status --data /var/lib/vigil-edge
  vigil edge status --data /var/lib/vigil-edge --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.runningClient("vigil edge status")
			if err != nil {
				return err
			}
			raw, err := c.EdgeStatus(cmd.Context())
			if err != nil {
				return err
			}
			var st node.EdgeStatus
			if err := json.Unmarshal(raw, &st); err != nil {
				return err
			}
			return g.print(st, func(w *tabwriter.Writer) {
				f := st.Forwarder
				up := "DOWN"
				if f.Connected {
					up = "up"
				}
				fmt.Fprintf(w, "edge:\t%s\nupstream:\t%s (%s)\n", st.Edge, f.Upstream, up)
				if f.LastError != "" {
					fmt.Fprintf(w, "last error:\t%s\n", f.LastError)
				}
				if !f.LastOK.IsZero() {
					fmt.Fprintf(w, "last forwarded:\t%s\n", f.LastOK.Format(time.RFC3339))
				}
				full := ""
				if f.MaxBytes > 0 {
					full = fmt.Sprintf(" (%.0f %% of %d bytes, policy %s)", 100*float64(f.PendingBytes)/float64(f.MaxBytes), f.MaxBytes, f.Policy)
				}
				fmt.Fprintf(w, "buffered:\t%d readings, %d bytes%s\n", f.Pending, f.PendingBytes, full)
				fmt.Fprintf(w, "forwarded:\t%d (refused %d, evicted %d; alerts reconciled %d)\n", f.Forwarded, f.Refused, f.Evicted, f.AlertsReconciled)
				fmt.Fprintf(w, "clock skew:\t%d ms behind the server\n", f.ClockSkewMS)
				cfg := "none yet"
				if st.Config.Version != "" {
					cfg = fmt.Sprintf("%s (issued %s)", st.Config.Version, st.Config.Issued.Format(time.RFC3339))
				}
				fmt.Fprintf(w, "configuration:\t%s\n", cfg)
				if st.Config.LastError != "" {
					fmt.Fprintf(w, "configuration error:\t%s\n", st.Config.LastError)
				}
			})
		},
	}
}
