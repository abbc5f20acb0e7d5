package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vigil-iomt/vigil/internal/broker"
	"github.com/vigil-iomt/vigil/internal/certs"
	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/notify"
	"github.com/vigil-iomt/vigil/internal/pubhealth"
	"github.com/vigil-iomt/vigil/internal/web"
)

func newServeCmd(g *globals) *cobra.Command {
	var opts node.Options
	var allow []string
	var limitsFile string
	var webhooks []string
	var phWebhooks []string
	var webhookSecretFile, ehrTokenFile, oidcSecretFile, syslogURL, syslogCA, syslogCert, syslogKey string
	var noHTTPLimits bool
	var oidcCfg web.OIDC
	var plaintext bool
	var tlsCert, tlsKey string
	var cpuProfile, memProfile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Vigil server on a data directory",
		Long: `Run the Vigil server: MQTT and HTTP device ingest, FHIR R4 API, alerts, web app.

Every listener speaks TLS: HTTPS, MQTT over TLS (:8883) and MLLP over TLS, with the
certificate in DATA/tls (make it once with vigil certs init) or --tls-cert/--tls-key.
Without a certificate Vigil refuses to start; --plaintext serves in the clear for a
test setup, with a warning (never for patient data on a network).

Every reading is acknowledged only after it is on disk. SIGINT or SIGTERM shuts
down gracefully: listeners close, in-flight readings are committed, and nothing
acknowledged is lost.

With --mllp, Vigil also takes HL7 v2 (IHE PCD-01 ORU^R01) over MLLP from gateways
registered as devices of kind gateway (device id = MSH-3's EUI-64 or namespace id).
MLLP has no credentials: connections are accepted only from --mllp-allow networks
(loopback by default).

With --postgres, the data (registry, readings, alerts, audit log) lives in a
PostgreSQL database instead of the embedded store in DATA/store; DATA still holds the
node's keys and TLS material. A database on another machine must be reached over TLS
(sslmode=verify-full, verify-ca or require in the URL). docs/formats/postgres.md has the
schema, which is created and migrated at start.

With --nats (and --postgres), NATS JetStream sits between ingest and storage: a
device is acknowledged once JetStream has its reading, and workers store readings
from the stream and run the rules. --role ingest takes devices only; --role worker
works the stream; all (the default) does both. Run nats-server with jetstream
{ sync_interval: always } so that JetStream fsyncs before it acknowledges.

Environment variables VIGIL_DATA, VIGIL_HTTP, VIGIL_MQTT, VIGIL_MLLP, VIGIL_POSTGRES,
VIGIL_NATS and VIGIL_ROLE mirror the flags.`,
		Example: `  vigil certs init --data /var/lib/vigil --host vigil.ward4.example.org && vigil serve --data /var/lib/vigil
  vigil serve --data ./vigil-data --tls-cert /etc/pki/vigil.pem --tls-key /etc/pki/vigil-key.pem
  vigil serve --data ./vigil-data --http 127.0.0.1:8080 --mqtt 127.0.0.1:1883 --plaintext
  vigil serve --data ./vigil-data --mllp :2575 --mllp-allow 10.20.0.0/16
  vigil serve --data ./vigil-data --postgres 'postgres://vigil@db.example.org/vigil?sslmode=verify-full'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.data == "" {
				return fmt.Errorf("no data directory: pass --data DIR or set VIGIL_DATA")
			}
			opts.DataDir, opts.Version = g.data, buildInfo().Version
			if len(webhooks) > 0 || len(phWebhooks) > 0 {
				secret := os.Getenv("VIGIL_WEBHOOK_SECRET")
				if webhookSecretFile != "" {
					b, err := os.ReadFile(webhookSecretFile)
					if err != nil {
						return fmt.Errorf("--webhook-secret-file: %w", err)
					}
					secret = strings.TrimSpace(string(b))
				}
				if len(secret) < 16 {
					return fmt.Errorf("webhooks need a signing secret of at least 16 characters: --webhook-secret-file FILE or VIGIL_WEBHOOK_SECRET")
				}
				for _, u := range webhooks {
					if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://127.") && !strings.HasPrefix(u, "http://localhost") {
						return fmt.Errorf("--webhook %s: use https:// (plain http only to loopback): alerts carry patient data", u)
					}
					opts.Webhooks = append(opts.Webhooks, notify.Target{URL: u, Secret: secret})
				}
				for _, u := range phWebhooks {
					if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://127.") && !strings.HasPrefix(u, "http://localhost") {
						return fmt.Errorf("--public-health-webhook %s: use https:// (plain http only to loopback)", u)
					}
					opts.PublicHealthWebhooks = append(opts.PublicHealthWebhooks, notify.Target{URL: u, Secret: secret})
				}
			}
			if limitsFile != "" {
				b, err := os.ReadFile(limitsFile)
				if err != nil {
					return fmt.Errorf("--limits: %w", err)
				}
				if err := json.Unmarshal(b, &opts.Limits); err != nil {
					return fmt.Errorf("--limits %s: %v (expected {\"8867-4\": {\"min\": 20, \"max\": 300}, ...})", limitsFile, err)
				}
			}
			for _, a := range allow {
				_, n, err := net.ParseCIDR(a)
				if err != nil {
					return fmt.Errorf("bad --mllp-allow %q: use CIDR notation such as 10.20.0.0/16", a)
				}
				opts.MLLPAllow = append(opts.MLLPAllow, n)
			}
			if oidcCfg.Issuer != "" {
				if !strings.HasPrefix(oidcCfg.Issuer, "https://") && !strings.HasPrefix(oidcCfg.Issuer, "http://127.") && !strings.HasPrefix(oidcCfg.Issuer, "http://localhost") {
					return fmt.Errorf("--oidc-issuer %s: the identity provider must be reached over https", oidcCfg.Issuer)
				}
				if oidcCfg.ClientID == "" {
					return fmt.Errorf("--oidc-issuer needs --oidc-client-id (the client Vigil is registered as at the identity provider)")
				}
				oidcCfg.ClientSecret = os.Getenv("VIGIL_OIDC_CLIENT_SECRET")
				if oidcSecretFile != "" {
					b, err := os.ReadFile(oidcSecretFile)
					if err != nil {
						return fmt.Errorf("--oidc-client-secret-file: %w", err)
					}
					oidcCfg.ClientSecret = strings.TrimSpace(string(b))
				}
				opts.OIDC = &oidcCfg
			}
			if noHTTPLimits {
				const huge = 1e9 // no limit in practice
				opts.HTTPLimits = httpapi.Limits{Address: huge, AddressBurst: 1 << 30, User: huge, UserBurst: 1 << 30, Device: huge, DeviceBurst: 1 << 30}
			}
			if syslogURL != "" {
				u, err := url.Parse(syslogURL)
				if err != nil || u.Host == "" || (u.Scheme != "tls" && u.Scheme != "tcp") {
					return fmt.Errorf("--audit-syslog %s: use tls://collector:6514 (or tcp://127.0.0.1:514 on this machine)", syslogURL)
				}
				if u.Scheme == "tcp" && !strings.HasPrefix(u.Hostname(), "127.") && u.Hostname() != "localhost" {
					return fmt.Errorf("--audit-syslog %s: the audit trail leaves this machine only over TLS (tls://…)", syslogURL)
				}
				opts.AuditSyslogAddr = u.Host
				if u.Scheme == "tls" {
					opts.AuditSyslogTLS = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
					if syslogCA != "" {
						pem, err := os.ReadFile(syslogCA)
						if err != nil {
							return fmt.Errorf("--audit-syslog-ca: %w", err)
						}
						pool := x509.NewCertPool()
						if !pool.AppendCertsFromPEM(pem) {
							return fmt.Errorf("--audit-syslog-ca %s holds no PEM certificate", syslogCA)
						}
						opts.AuditSyslogTLS.RootCAs = pool
					}
					if syslogCert != "" || syslogKey != "" {
						// Mutual TLS, as IHE ATNA repositories require.
						cert, err := tls.LoadX509KeyPair(syslogCert, syslogKey)
						if err != nil {
							return fmt.Errorf("--audit-syslog-cert/--audit-syslog-key: %w", err)
						}
						opts.AuditSyslogTLS.Certificates = []tls.Certificate{cert}
					}
				}
				switch opts.AuditSyslogFormat {
				case "vigil", "atna":
				default:
					return fmt.Errorf("--audit-syslog-format %q: use vigil (structured data, for a SIEM) or atna (IHE ATNA DICOM audit messages, for an audit record repository)", opts.AuditSyslogFormat)
				}
			}
			if ehrTokenFile != "" {
				b, err := os.ReadFile(ehrTokenFile)
				if err != nil {
					return fmt.Errorf("--ehr-token-file: %w", err)
				}
				opts.EHRToken = strings.TrimSpace(string(b))
			} else {
				opts.EHRToken = os.Getenv("VIGIL_EHR_TOKEN")
			}
			if err := checkPostgresURL(g.postgres); err != nil {
				return err
			}
			switch {
			case opts.Role != node.RoleAll && opts.Role != node.RoleIngest && opts.Role != node.RoleWorker && opts.Role != node.RoleAPI:
				return fmt.Errorf("--role %q: use all, ingest, worker or api", opts.Role)
			case opts.Role != node.RoleAll && opts.NATS == "":
				return fmt.Errorf("--role %s needs --nats: roles share work through NATS JetStream", opts.Role)
			case opts.NATS != "" && g.postgres == "":
				return fmt.Errorf("--nats needs --postgres: ingest nodes and workers share the database")
			}
			if err := checkNATSURL(opts.NATS); err != nil {
				return err
			}
			opts.Postgres, opts.PostgresSchema = g.postgres, g.postgresSchema
			if u := opts.EHRURL; u != "" && !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "mllps://") &&
				!strings.HasPrefix(u, "http://127.") && !strings.HasPrefix(u, "http://localhost") && !strings.HasPrefix(u, "mllp://127.") && !strings.HasPrefix(u, "mllp://localhost") {
				return fmt.Errorf("--ehr-url %s: patient data leaves this machine only over TLS: https:// (FHIR) or mllps:// (HL7 v2); plain http:// or mllp:// only to this machine", u)
			}
			if err := g.listeners(&opts, tlsCert, tlsKey, plaintext); err != nil {
				return err
			}
			if os.Getenv("GOGC") == "" {
				// Ingest allocates per reading and keeps little: collecting at
				// 300 % heap growth instead of 100 % cut the collector's CPU from
				// 6–8 % to 2–3 % under vigil bench (docs/benchmarks.md). GOGC
				// in the environment overrides it.
				debug.SetGCPercent(300)
			}
			stopProfile, err := cpuProfiling(cpuProfile)
			if err != nil {
				return err
			}
			defer stopProfile()
			if memProfile != "" {
				// Each SIGUSR1 writes the live heap (after a collection).
				stop := writeHeapOnSignal(memProfile)
				defer stop()
			}
			return serve(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.HTTPAddr, "http", envOr("VIGIL_HTTP", ":8080"), "HTTP listen address (env VIGIL_HTTP)")
	f.StringVar(&opts.MQTTAddr, "mqtt", envOr("VIGIL_MQTT", ""), "MQTT listen address (env VIGIL_MQTT; default :8883 with TLS, :1883 with --plaintext)")
	f.BoolVar(&opts.RequireTOTP, "require-totp", true, "clinicians and admins sign in with an authenticator code as well (enroll with vigil user totp)")
	f.DurationVar(&opts.SessionIdle, "session-idle", 15*time.Minute, "sign web sessions out after this long without activity (-1s: never, for a wall display)")
	f.BoolVar(&plaintext, "plaintext", false, "serve without TLS (tests on loopback only: nothing is encrypted)")
	f.StringVar(&tlsCert, "tls-cert", "", "server certificate (PEM) instead of DATA/tls/server.pem")
	f.StringVar(&tlsKey, "tls-key", "", "its private key (PEM)")
	f.StringVar(&opts.MLLPAddr, "mllp", envOr("VIGIL_MLLP", ""), "HL7 v2 MLLP listen address, e.g. :2575 (env VIGIL_MLLP; empty: off)")
	f.StringSliceVar(&allow, "mllp-allow", nil, "networks allowed to send HL7 over MLLP, CIDR (default: loopback only)")
	f.StringSliceVar(&webhooks, "webhook", nil, "URL that receives every alert transition as a signed JSON POST (repeatable; https, or http to loopback)")
	f.StringSliceVar(&phWebhooks, "public-health-webhook", nil, "URL that receives every new biosurveillance signal (EARS on noisy daily fever counts per region, checked hourly) as a signed JSON POST with a stable event id (repeatable; https, or http to loopback)")
	f.StringVar(&webhookSecretFile, "webhook-secret-file", "", "file holding the webhook signing secret (or env VIGIL_WEBHOOK_SECRET)")
	f.StringVar(&limitsFile, "limits", "", `JSON file of plausibility ranges by LOINC code, e.g. {"8867-4": {"min": 20, "max": 300}}`)
	f.IntVar(&opts.MaxPayload, "max-payload", 1<<20, "largest accepted device message, in bytes (a batch holds at most 5,000 readings)")
	f.Float64Var(&opts.PrivacyBudget.Epsilon, "dp-budget-epsilon", pubhealth.DefaultBudget.Epsilon, "each analyst's differential-privacy budget ε for aggregate exports (spent by every query; default ten queries at ε 1)")
	f.Float64Var(&opts.PrivacyBudget.Delta, "dp-budget-delta", pubhealth.DefaultBudget.Delta, "each analyst's budget δ (every private query spends its delta, default 1e-5)")
	f.Var(&sizeFlag{&opts.DiskReserve}, "disk-reserve", "refuse new readings (MQTT 0x97, HTTP 507; devices send them again) while the data directory's disk has less free space than this, e.g. 2GiB (env VIGIL_DISK_RESERVE; default: 5% of the disk, between 64MiB and 1GiB; off: never)")
	f.BoolVar(&noHTTPLimits, "no-http-rate-limits", false, "lift the HTTP rate limits (per address, user and device) — for load tests only: they protect the server from a flood")
	f.StringVar(&opts.NATS, "nats", envOr("VIGIL_NATS", ""), "JetStream mode: put NATS JetStream between ingest and storage, nats://host:4222 (comma-separated for a cluster; needs --postgres; env VIGIL_NATS)")
	f.StringVar(&opts.NATSPrefix, "nats-prefix", envOr("VIGIL_NATS_PREFIX", "vigil"), "JetStream subject prefix; the stream is PREFIX_READINGS")
	f.IntVar(&opts.PostgresCommits, "postgres-commits", 0, "with --postgres and without --nats: group commits waiting on PostgreSQL at once (0: 1 when PostgreSQL is on this machine — loopback or a Unix socket — where it shares the cores, else 4 to cover the network round trip)")
	f.IntVar(&opts.NATSReplicas, "nats-replicas", 1, "JetStream stream replicas (3 on a three-node cluster)")
	f.StringVar(&opts.Role, "role", envOr("VIGIL_ROLE", "all"), "with --nats: all (take devices, work the stream, serve the API), ingest (take devices into the stream; serves the API), worker (store from the stream and run rules; serves the API, no devices) or api (the API, FHIR and the web app only); every node's live views show what any worker stored")
	f.IntVar(&opts.MQTTMaxConns, "mqtt-max-conns", 50000, "concurrent MQTT connections in all (each client address at most 2,048, loopback unlimited); raise the process's open-file limit to match")
	f.Float64Var(&opts.MQTTRate, "mqtt-rate", broker.DefaultRatePerDevice, "MQTT messages per second per device (bursts of twice that); past it Vigil reads that device's connection more slowly, refusing nothing (-1: no limit)")
	f.StringVar(&opts.EHRURL, "ehr-url", envOr("VIGIL_EHR_URL", ""), "push every Observation to this EHR: its FHIR R4 base https://… (conditional updates, batched, retried) or an HL7 v2 interface engine mllps://host:port (ORU^R01 over MLLP); env VIGIL_EHR_URL; empty: off")
	f.StringVar(&ehrTokenFile, "ehr-token-file", "", "file holding the EHR's bearer token (or env VIGIL_EHR_TOKEN)")
	f.BoolVar(&opts.EHRAlerts, "ehr-alerts", false, "also push alerts to the EHR, as DetectedIssue")
	f.StringVar(&oidcCfg.Issuer, "oidc-issuer", envOr("VIGIL_OIDC_ISSUER", ""), "hospital single sign-on: the OpenID Connect issuer URL (env VIGIL_OIDC_ISSUER; empty: passwords only)")
	f.StringVar(&oidcCfg.ClientID, "oidc-client-id", envOr("VIGIL_OIDC_CLIENT_ID", ""), "the client id Vigil is registered as at the identity provider")
	f.StringVar(&oidcSecretFile, "oidc-client-secret-file", "", "file holding the client secret (or env VIGIL_OIDC_CLIENT_SECRET)")
	f.StringVar(&oidcCfg.UserClaim, "oidc-user-claim", "preferred_username", "ID-token claim holding the Vigil user id (the user must exist in Vigil: the provider says who, Vigil what they may do)")
	f.StringVar(&oidcCfg.RedirectURL, "oidc-redirect-url", "", "Vigil's https://…/login/oidc/callback as registered at the provider (default: from the request's host)")
	f.StringVar(&oidcCfg.Label, "oidc-label", "Hospital sign-in", "the sign-in button's text")
	f.StringVar(&syslogURL, "audit-syslog", envOr("VIGIL_AUDIT_SYSLOG", ""), "also send every audit entry as RFC 5424 syslog to tls://collector:6514 (tcp:// only to this machine); resumes where it stopped")
	f.StringVar(&syslogCA, "audit-syslog-ca", "", "CA certificate (PEM) that signed the collector's certificate (default: the system's)")
	f.StringVar(&syslogCert, "audit-syslog-cert", "", "client certificate (PEM) for mutual TLS with the collector (IHE ATNA requires it)")
	f.StringVar(&syslogKey, "audit-syslog-key", "", "its private key (PEM)")
	f.StringVar(&opts.AuditSyslogFormat, "audit-syslog-format", "vigil", "vigil (RFC 5424 structured data, for a SIEM) or atna (IHE ATNA ITI-20: DICOM audit message XML, for an audit record repository)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of the whole run to this file (read it with go tool pprof)")
	f.StringVar(&memProfile, "memprofile", "", "on each SIGUSR1, write a Go heap profile to this file (read it with go tool pprof) and the runtime's memory classes, goroutine stacks included, to FILE.memory.txt")
	retentionFlags(f, &opts)
	f.BoolVar(&opts.PublicMetrics, "public-metrics", false, "serve /metrics without authentication (for a Prometheus on a trusted network)")
	return cmd
}

// listeners sets up what serve and edge share: the logger, TLS for the
// listeners, the MQTT port that goes with it, and the warning for
// --plaintext.
func (g *globals) listeners(opts *node.Options, tlsCert, tlsKey string, plaintext bool) error {
	log, err := g.logger()
	if err != nil {
		return err
	}
	opts.Logger = log
	if opts.TLS, err = listenerTLS(g, tlsCert, tlsKey, plaintext); err != nil {
		return err
	}
	if opts.MQTTAddr == "" {
		opts.MQTTAddr = ":8883"
		if opts.TLS == nil {
			opts.MQTTAddr = ":1883"
		}
	}
	if opts.TLS == nil {
		fmt.Fprintln(g.stderr, "vigil: WARNING: --plaintext: HTTP, MQTT and MLLP are NOT encrypted; credentials and patient data cross the network in the clear. Use it on loopback for tests only; run `vigil certs init` for anything else.")
		log.Warn("serving without TLS (--plaintext)", "http", opts.HTTPAddr, "mqtt", opts.MQTTAddr, "loopback_only", loopbackOnly(opts.HTTPAddr, opts.MQTTAddr, opts.MLLPAddr))
	}
	return nil
}

// cpuProfiling writes a CPU profile of the run to path (none when
// empty); stop writes it out.
func cpuProfiling(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// listenerTLS is the TLS configuration of a node's listeners: --tls-cert
// and --tls-key, else DATA/tls (vigil certs init), with client
// certificates from Vigil's CA accepted; nil only with --plaintext.
func listenerTLS(g *globals, tlsCert, tlsKey string, plaintext bool) (*tls.Config, error) {
	dir := certs.Dir(g.data)
	var cfg *tls.Config
	var err error
	switch {
	case tlsCert != "" || tlsKey != "":
		if tlsCert == "" || tlsKey == "" {
			return nil, fmt.Errorf("give both --tls-cert and --tls-key")
		}
		if cfg, err = certs.ServerConfig(tlsCert, tlsKey); err != nil {
			return nil, err
		}
	case !plaintext && certs.Exists(dir):
		if cfg, err = certs.ServerConfig(filepath.Join(dir, certs.CertFile), filepath.Join(dir, certs.KeyFile)); err != nil {
			return nil, err
		}
	}
	if cfg != nil {
		if _, err := os.Stat(filepath.Join(dir, certs.CAFile)); err == nil {
			// Devices may present a certificate from Vigil's CA (vigil device cert).
			if err := certs.RequireClientCertsFrom(cfg, filepath.Join(dir, certs.CAFile)); err != nil {
				return nil, err
			}
		}
	}
	if cfg == nil && !plaintext {
		return nil, fmt.Errorf("no TLS certificate in %s: run `vigil certs init --data %s` (or give --tls-cert and --tls-key); --plaintext serves in the clear for a test setup only", dir, g.data)
	}
	return cfg, nil
}

// serve runs a node until ctx ends, then shuts it down gracefully.
func serve(ctx context.Context, g *globals, opts node.Options) error {
	n, err := node.Start(ctx, opts)
	if err != nil {
		return err
	}
	sec := "TLS"
	if opts.TLS == nil {
		sec = "PLAINTEXT"
	}
	if n.MQTTAddr() == "" {
		fmt.Fprintf(g.stderr, "vigil: serving %s on %s, role %s: no device connections (data %s)\n", map[bool]string{true: "HTTPS", false: "HTTP"}[opts.TLS != nil], n.URL(), opts.Role, opts.DataDir)
	} else {
		fmt.Fprintf(g.stderr, "vigil: serving %s on %s and MQTT (%s) on %s (data %s)\n", map[bool]string{true: "HTTPS", false: "HTTP"}[opts.TLS != nil], n.URL(), sec, n.MQTTAddr(), opts.DataDir)
	}
	if n.MLLP != nil {
		fmt.Fprintf(g.stderr, "vigil: HL7 v2 over MLLP on %s\n", n.MLLP.Addr())
	}
	<-ctx.Done()
	fmt.Fprintln(g.stderr, "vigil: shutting down; committing in-flight readings")
	return n.Close()
}

// loopbackOnly reports whether every non-empty listen address is on a
// loopback interface.
func loopbackOnly(addrs ...string) bool {
	for _, a := range addrs {
		if a == "" {
			continue
		}
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return false
		}
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return false
		}
	}
	return true
}

func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(g.logLevel))); err != nil {
		return nil, fmt.Errorf("bad --log-level %q: use debug, info, warn or error", g.logLevel)
	}
	return slog.New(slog.NewJSONHandler(g.stderr, &slog.HandlerOptions{Level: lvl})), nil
}

// checkPostgresURL refuses a database reached in the clear over a network:
// patient data leaves this machine only over TLS.
func checkPostgresURL(u string) error {
	if u == "" {
		return nil
	}
	cfg, err := pgconn.ParseConfig(u)
	if err != nil {
		return fmt.Errorf("--postgres: %v", err)
	}
	local := strings.HasPrefix(cfg.Host, "/") || cfg.Host == "localhost"
	if ip := net.ParseIP(cfg.Host); ip != nil && ip.IsLoopback() {
		local = true
	}
	// sslmode=require, verify-ca or verify-full: TLS with no plaintext
	// fallback (prefer, the default, falls back).
	tlsOnly := cfg.TLSConfig != nil
	for _, fb := range cfg.Fallbacks {
		tlsOnly = tlsOnly && fb.TLSConfig != nil
	}
	if !local && !tlsOnly {
		return fmt.Errorf("--postgres: %s is reached over the network: add sslmode=verify-full (or verify-ca, require) to the URL; patient data leaves this machine only over TLS", cfg.Host)
	}
	return nil
}

// checkNATSURL refuses a NATS server reached in the clear over a network:
// readings carry patient data, so only tls:// leaves this machine.
func checkNATSURL(urls string) error {
	if urls == "" {
		return nil
	}
	for _, u := range strings.Split(urls, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Host == "" {
			return fmt.Errorf("--nats %q: use nats://host:4222 (loopback) or tls://host:4222", u)
		}
		host := pu.Hostname()
		ip := net.ParseIP(host)
		if pu.Scheme != "tls" && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("--nats %s is reached over the network: use tls://%s; patient data leaves this machine only over TLS", u, pu.Host)
		}
	}
	return nil
}

// sizeFlag is a byte count given as 512MiB, 2GiB, 100MB or a plain number
// of bytes; "off" is -1 and "" or "default" 0.
type sizeFlag struct{ p *int64 }

func (f *sizeFlag) String() string {
	if f.p == nil || *f.p == 0 {
		return "default"
	}
	if *f.p < 0 {
		return "off"
	}
	return strconv.FormatInt(*f.p, 10)
}

func (f *sizeFlag) Type() string { return "size" }

func (f *sizeFlag) Set(s string) error {
	switch s = strings.TrimSpace(s); strings.ToLower(s) {
	case "off":
		*f.p = -1
		return nil
	case "", "default":
		*f.p = 0
		return nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(strings.ToLower(s), strings.ToLower(u.suffix)) {
			s, mult = strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a size: give bytes or a number with KiB, MiB, GiB (or KB, MB, GB), or off", s)
	}
	*f.p = int64(n * float64(mult))
	return nil
}

// retentionFlags are the retention settings of serve and edge.
func retentionFlags(f *pflag.FlagSet, opts *node.Options) {
	opts.DeadLetterRetention = 30 * 24 * time.Hour
	f.Var(&ageFlag{&opts.Retention.Readings}, "retain-readings", "keep raw readings this long by device time, e.g. 2y, 90d (rolled up to 1-minute and 1-hour min/max/mean/count first, which stay --retain-rollups); default: for ever")
	f.Var(&ageFlag{&opts.Retention.Rollups}, "retain-rollups", "keep the 1-minute and 1-hour rollups this long, e.g. 10y; default: for ever")
	f.Var(&ageFlag{&opts.Retention.Alerts}, "retain-alerts", "keep resolved alerts this long after they were raised, e.g. 10y (open alerts always stay); default: for ever")
	f.Var(&ageFlag{&opts.DeadLetterRetention}, "retain-dead-letters", "keep dead letters (refused device messages) this long")
}

// ageFlag is a duration that also takes days, weeks and years (365 days):
// 90d, 6w, 2y; 0 or forever is for ever.
type ageFlag struct{ p *time.Duration }

func (f *ageFlag) String() string {
	if f.p == nil || *f.p == 0 {
		return "forever"
	}
	d := *f.p
	switch {
	case d%(365*24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(365*24*time.Hour)), 10) + "y"
	case d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

func (f *ageFlag) Type() string { return "age" }

func (f *ageFlag) Set(s string) error {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "0" || s == "forever" || s == "" {
		*f.p = 0
		return nil
	}
	for suffix, unit := range map[string]time.Duration{"y": 365 * 24 * time.Hour, "w": 7 * 24 * time.Hour, "d": 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			if err != nil || v < 0 {
				return fmt.Errorf("%q is not an age: give e.g. 90d, 6w, 2y, 720h or forever", s)
			}
			*f.p = time.Duration(v * float64(unit))
			return nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("%q is not an age: give e.g. 90d, 6w, 2y, 720h or forever", s)
	}
	*f.p = d
	return nil
}
