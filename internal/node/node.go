// Package node wires one Vigil process: the embedded store, the ingest
// pipeline, the MQTT broker, the alert engine, the HTTP server (admin API,
// device ingest, FHIR, web app, health and metrics). cmd/vigil and the
// end-to-end tests both start Vigil through Start, so tests exercise the
// real wiring.
package node

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/adherence"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/auth"
	"github.com/vigil-iomt/vigil/internal/backup"
	"github.com/vigil-iomt/vigil/internal/baseline"
	"github.com/vigil-iomt/vigil/internal/broker"
	"github.com/vigil-iomt/vigil/internal/certs"
	"github.com/vigil-iomt/vigil/internal/diskguard"
	"github.com/vigil-iomt/vigil/internal/edge"
	"github.com/vigil-iomt/vigil/internal/ehrsync"
	"github.com/vigil-iomt/vigil/internal/fhir"
	"github.com/vigil-iomt/vigil/internal/gatt"
	"github.com/vigil-iomt/vigil/internal/hl7"
	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/ingest"
	"github.com/vigil-iomt/vigil/internal/jsqueue"
	"github.com/vigil-iomt/vigil/internal/live"
	"github.com/vigil-iomt/vigil/internal/mapping"
	"github.com/vigil-iomt/vigil/internal/medtech"
	"github.com/vigil-iomt/vigil/internal/mllp"
	"github.com/vigil-iomt/vigil/internal/netlimit"
	"github.com/vigil-iomt/vigil/internal/news2"
	"github.com/vigil-iomt/vigil/internal/notify"
	"github.com/vigil-iomt/vigil/internal/nursecall"
	"github.com/vigil-iomt/vigil/internal/omh"
	"github.com/vigil-iomt/vigil/internal/pcd"
	"github.com/vigil-iomt/vigil/internal/pebble"
	"github.com/vigil-iomt/vigil/internal/pgstore"
	"github.com/vigil-iomt/vigil/internal/pubhealth"
	"github.com/vigil-iomt/vigil/internal/seal"
	"github.com/vigil-iomt/vigil/internal/web"
)

// LocalAdminUser is the reserved account whose short-lived API token the
// running server writes to its data directory (ControlFile) so that the CLI
// on the same machine can administer it. It has no password and cannot log
// in.
const LocalAdminUser = "local-admin"

// ControlFile is the name, inside the data directory, of the file through
// which a running server tells the CLI where it listens and which token to
// use. It is created with mode 0600 and removed on Close.
const ControlFile = "control.json"

// Control is the content of ControlFile.
type Control struct {
	PID      int    `json:"pid"`
	HTTPURL  string `json:"http_url"`
	MQTTAddr string `json:"mqtt_addr"`
	MLLPAddr string `json:"mllp_addr,omitempty"`
	Token    string `json:"token"`
}

// ResolveAfter is the node's alert hysteresis: a value must be back in
// range this long before its alert resolves.
const ResolveAfter = time.Minute

// Roles of a node in JetStream mode.
const (
	RoleAll    = "all"    // ingest, work the stream, serve the API (the default)
	RoleIngest = "ingest" // take devices' readings into the stream only
	RoleWorker = "worker" // store from the stream and run rules; also serves the API
	RoleAPI    = "api"    // serve the API, FHIR and the web app only
)

// queueStore is the store as the ingest pipeline sees it in JetStream
// mode: readings go to the stream, the rest (devices, assignments, dead
// letters) to the store.
type queueStore struct {
	Store
	q *jsqueue.Queue
}

func (s queueStore) AppendReadings(ctx context.Context, rs []*vigil.Reading) ([]vigil.AppendResult, error) {
	return s.q.AppendReadings(ctx, rs)
}

// Store is where a node keeps its data: the embedded store
// (internal/pebble, the default) or PostgreSQL (internal/pgstore).
type Store interface {
	vigil.Store
	ehrsync.Feed
	DeviceChannels(ctx context.Context, deviceID string) ([]vigil.Channel, error)
	FillOrigins(ctx context.Context, obs []*vigil.Observation) error
	ReadingDays(ctx context.Context, patientID string, from, to time.Time) ([]time.Time, error)
	ReadSeries(ctx context.Context, patientID, code, deviceID string, from, to time.Time, max int) ([]vigil.SeriesData, error)
}

// AuditStore is where the node whose audit key is pub keeps its audit
// log in st: the embedded store holds one node's log; in PostgreSQL each
// node keeps its own (a Merkle log has one writer), named after its key.
func AuditStore(st Store, pub ed25519.PublicKey) (audit.Store, error) {
	switch st := st.(type) {
	case *pgstore.Store:
		if len(pub) == 0 {
			return nil, fmt.Errorf("which node's audit log? its audit public key (%s) is missing", audit.PubKeyFile)
		}
		sum := sha256.Sum256(pub)
		return st.AuditLog(hex.EncodeToString(sum[:8])), nil
	case audit.Store:
		return st, nil
	}
	return nil, fmt.Errorf("the store %T keeps no audit log", st)
}

// Options configure a node. Zero values take the defaults noted.
type Options struct {
	DataDir string // required (keys, TLS material, exports; the embedded store)
	// NATS, a nats:// URL (comma-separated for a cluster), puts JetStream
	// between ingest and storage (internal/jsqueue; needs Postgres):
	// readings go to the stream NATSPrefix (default "vigil") with
	// NATSReplicas replicas; Role says whether this node also works the
	// stream (RoleAll, the default, or RoleWorker), only ingests
	// (RoleIngest) or only serves the API, FHIR and the web app (RoleAPI).
	// Only RoleAll and RoleIngest take devices (MQTT, MLLP, HTTP device
	// ingest); in JetStream mode every node relays its live events (new
	// readings, alerts, NEWS2) to the others' live views.
	NATS         string
	NATSPrefix   string
	NATSReplicas int
	Role         string
	// Postgres, a postgres:// URL, keeps the data in PostgreSQL instead
	// of the embedded store (internal/pgstore), in PostgresSchema
	// ("vigil" when empty).
	Postgres       string
	PostgresSchema string
	// PostgresCommits is how many group commits may wait on PostgreSQL
	// at once (without NATS; with it they wait on JetStream, 4 at once).
	// 0: 1 when PostgreSQL is on this machine (pgstore.OnThisMachine),
	// where it shares the cores and one commit at a time makes bigger,
	// cheaper batches; else 4, which keep it busy across the network's
	// round trips.
	PostgresCommits int
	HTTPAddr        string       // default ":8080"
	MQTTAddr        string       // default ":1883"
	MLLPAddr        string       // HL7 v2 over MLLP; "" disables it
	MLLPAllow       []*net.IPNet // networks allowed to send over MLLP; nil: loopback
	// TLS, when set, puts every listener (HTTPS, MQTT over TLS, MLLP over
	// TLS) behind it; nil: plaintext (vigil serve allows that only with
	// --plaintext).
	TLS *tls.Config
	// SessionIdle signs web sessions out after this long without activity
	// (0: 15 minutes; negative: never, for a wall display).
	SessionIdle time.Duration
	// RequireTOTP demands an authenticator code from clinicians and admins
	// at web sign-in (vigil serve sets it; the demo does not).
	RequireTOTP bool
	// OIDC enables hospital single sign-on on the web app (nil: off).
	OIDC *web.OIDC
	// AuditSyslogAddr sends every audit entry as RFC 5424 syslog to this
	// host:port, over TLS with AuditSyslogTLS (nil: plain TCP, which vigil
	// serve allows only to this machine). Empty: off.
	AuditSyslogAddr string
	AuditSyslogTLS  *tls.Config
	// AuditSyslogFormat is "vigil" (structured data) or "atna" (IHE ATNA
	// DICOM audit XML); see audit.SyslogOptions.
	AuditSyslogFormat string
	MaxPayload        int // bytes per message; default 1 MiB (a batch of 5,000 readings)
	// MQTTRate is messages per second per device over MQTT (0: the
	// broker's default, 1000; < 0: no limit); see broker.Options.
	MQTTRate float64
	// MQTTMaxConns caps concurrent MQTT connections in all (0: 50,000).
	MQTTMaxConns int
	// HTTPLimits are the HTTP rate limits (zero fields: the defaults,
	// httpapi.DefaultLimits).
	HTTPLimits    httpapi.Limits
	MaxReadingAge time.Duration            // oldest accepted reading time; 0: ingest's default (30 days); negative: unlimited
	PublicMetrics bool                     // serve /metrics without authentication
	Thresholds    []vigil.Threshold        // nil: alerting.DefaultThresholds()
	Limits        map[string]mapping.Limit // plausibility ranges replacing the defaults, by LOINC code
	// Escalation: unacknowledged firing alerts go up one tier after each
	// step. nil: 5 minutes, then 10 more; empty (non-nil): never.
	Escalation []time.Duration
	// Webhooks receive every alert transition (signed, retried).
	Webhooks []notify.Target
	// EHR pushes Observations (and, with EHRAlerts, alerts as
	// DetectedIssue) to an external FHIR server from the store's durable
	// change feed (empty URL: off). See internal/ehrsync.
	EHRURL    string
	EHRToken  string
	EHRAlerts bool
	Now       func() time.Time // nil: time.Now
	Logger    *slog.Logger     // nil: discard
	// CompactInterval overrides the store's background compaction period
	// (0: the store's default).
	CompactInterval time.Duration
	// DiskReserve is the free space of the data directory's file system
	// below which the embedded store refuses new readings (0: 5 % of the
	// file system, between 64 MiB and 1 GiB; negative: never refuse).
	// See internal/diskguard.
	DiskReserve int64
	// PublicHealthWebhooks receive every new biosurveillance signal (EARS
	// on noisy daily fever counts per region), checked every
	// SignalInterval (0: hourly), signed like the alert webhooks.
	PublicHealthWebhooks []notify.Target
	SignalInterval       time.Duration
	// PrivacyBudget is each analyst's differential-privacy budget for
	// aggregate exports (zero: pubhealth.DefaultBudget, ε 10 and δ 1e-4).
	PrivacyBudget pubhealth.Budget
	// Version is this build's version, recorded in backups.
	Version string
	// Retention says how long the embedded store keeps raw readings
	// (rolled up to 1-minute and 1-hour min/max/mean first), the rollups
	// and resolved alerts (zero: for ever); DeadLetterRetention dead
	// letters (0: 30 days).
	Retention           vigil.Retention
	DeadLetterRetention time.Duration
	// Edge, when set, makes this node an edge gateway (vigil edge): its
	// configuration comes from the upstream server and every reading it
	// stores is forwarded there (internal/edge). Embedded store only.
	Edge *EdgeOptions
}

// EdgeOptions configure an edge gateway's link to its upstream server.
type EdgeOptions struct {
	Upstream string // the server's base URL, https://vigil.example:8443
	ID       string // the edge's device id on the server (kind edge)
	// TLS is the client configuration towards the server: its CA and
	// the edge's certificate (mutual TLS).
	TLS *tls.Config
	// BufferMax bounds the store-and-forward buffer in bytes (0: only the
	// disk reserve does); BufferPolicy says what happens when it is full
	// (edge.PolicyRefuse, the default, or edge.PolicyDropOldest).
	BufferMax    int64
	BufferPolicy string
	// ConfigInterval is how often the configuration is fetched (default
	// 1 minute).
	ConfigInterval time.Duration
	// Batch is the most readings forwarded per request (default 2000).
	Batch int
}

// Node is a running Vigil process.
type Node struct {
	Store     Store
	Queue     *jsqueue.Queue // JetStream mode only
	stopRelay func()         // the live relay over NATS (JetStream mode)
	// researchSecret is DATA/research-key, read (or made) on first use.
	researchSecret func() ([]byte, error)
	// Disk refuses readings while the embedded store's disk is nearly
	// full (nil with PostgreSQL).
	Disk *diskguard.Guard
	// AuditStore holds this node's audit log (in Store).
	AuditStore audit.Store
	Pipeline   *ingest.Pipeline
	Broker     *broker.Broker
	MLLP       *mllp.Server     // nil unless Options.MLLPAddr is set
	Notifier   *notify.Notifier // nil without webhooks
	// PublicHealth delivers biosurveillance signals (nil without
	// public-health webhooks).
	PublicHealth *notify.Notifier
	stopSignals  func()
	// NurseCall publishes alert transitions on vigil/v1/alerts/... for
	// nurse-call systems (devices of kind nurse-call).
	NurseCall *nursecall.Publisher
	Alerts    *alerting.Engine
	News2     *news2.Evaluator
	Baseline  *baseline.Detector
	// AuditLog is the tamper-evident audit log (DATA/audit-key signs it).
	AuditLog *audit.Log
	// AuditSyslog ships the audit log to a syslog collector (nil: off).
	AuditSyslog *audit.Shipper
	audit       audit.Recorder
	auditVerify func(ctx context.Context) (*audit.Report, error)
	routes      []string
	// Adherence raises missed-dose alerts (checked every minute).
	Adherence *adherence.Monitor
	Hub       *live.Hub
	Auth      *auth.Authenticator
	Admin     *admin.Service
	// Exporter runs FHIR Bulk Data exports (files in DATA/exports, sealed).
	Exporter *fhir.Exporter
	// Subscriptions sends FHIR topic-based subscription notifications.
	Subscriptions *fhir.Subscriptions
	// EHRSync pushes to an EHR's FHIR server (nil unless Options.EHRURL).
	EHRSync *ehrsync.Syncer
	// Forwarder and EdgeConfig run on an edge gateway (Options.Edge).
	Forwarder  *edge.Forwarder
	EdgeConfig *edge.Syncer
	Registry   *prometheus.Registry

	opts       Options
	httpLn     net.Listener
	httpSrv    *http.Server
	httpDone   chan error
	kinds      sync.Map // device id → kind, for offline detection
	stopTick   chan struct{}
	stopWorker context.CancelFunc // JetStream mode: the stream's worker
	workerDone chan struct{}
	tickDone   chan struct{}
	stopWarm   context.CancelFunc
	warmDone   chan struct{}
	closeOnce  sync.Once
	closeErr   error
	ready      bool
	notices    map[string]live.Notice // system notices in force (guarded by mu)
	mu         sync.Mutex
	tokenID    string
}

// Start opens the store in opts.DataDir and starts every listener. On
// error everything started so far is stopped again.
func Start(ctx context.Context, opts Options) (_ *Node, err error) {
	if opts.DataDir == "" {
		return nil, errors.New("no data directory: pass --data DIR or set VIGIL_DATA")
	}
	if opts.HTTPAddr == "" {
		opts.HTTPAddr = ":8080"
	}
	if opts.MQTTAddr == "" {
		opts.MQTTAddr = ":1883"
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = 1 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	log := opts.Logger
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", opts.DataDir, err)
	}

	n := &Node{opts: opts, Hub: &live.Hub{}, Registry: prometheus.NewRegistry()}
	n.researchSecret = sync.OnceValues(func() ([]byte, error) {
		b, err := pubhealth.LoadOrCreateSecret(filepath.Join(opts.DataDir, pubhealth.ResearchSecretFile))
		if err != nil {
			return nil, fmt.Errorf("research secret: %w", err)
		}
		return b, nil
	})
	n.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	if opts.Edge != nil && (opts.Postgres != "" || opts.NATS != "") {
		return nil, errors.New("an edge gateway keeps its buffer in the embedded store: drop --postgres and --nats")
	}
	if opts.Postgres != "" {
		if n.Store, err = pgstore.Open(ctx, opts.Postgres, pgstore.Options{Schema: opts.PostgresSchema, Now: opts.Now, ChangeFeed: opts.EHRURL != "", Retention: opts.Retention, Registerer: n.Registry}); err != nil {
			return nil, fmt.Errorf("PostgreSQL store: %w", err)
		}
	} else {
		sopts := pebble.DefaultOptions()
		sopts.ChangeFeed = opts.EHRURL != ""
		sopts.Outbox = opts.Edge != nil
		sopts.Retention = opts.Retention
		if opts.DeadLetterRetention > 0 {
			sopts.DeadLetterRetention = opts.DeadLetterRetention
		}
		sopts.Now = opts.Now
		sopts.Logger = log
		sopts.Registerer = n.Registry
		if opts.CompactInterval != 0 {
			sopts.CompactInterval = opts.CompactInterval
		}
		if sopts.Sealer, err = OpenSealer(opts.DataDir); err != nil {
			return nil, err
		}
		var ps *pebble.Store
		if ps, err = pebble.Open(filepath.Join(opts.DataDir, "store"), sopts); err != nil {
			return nil, err
		}
		n.Store = ps
	}

	n.Auth = auth.NewAuthenticator(n.Store, auth.Options{Now: opts.Now, Registerer: n.Registry})

	// The tamper-evident audit log, signed with the node's key.
	akey, err := audit.LoadOrCreateKey(filepath.Join(opts.DataDir, audit.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	apub := akey.Public().(ed25519.PublicKey)
	// The embedded store holds this node's log; in PostgreSQL each node
	// keeps its own (a Merkle log has one writer), named after its key.
	auditStore, err := AuditStore(n.Store, apub)
	if err != nil {
		return nil, err
	}
	n.AuditStore = auditStore
	if n.AuditLog, err = audit.Open(ctx, auditStore, akey, opts.Now); err != nil {
		return nil, err
	}
	auditErrs := prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_audit_errors_total", Help: "Audit entries that could not be stored (the request itself went on)."})
	n.Registry.MustRegister(auditErrs)
	if opts.AuditSyslogAddr != "" {
		if n.AuditSyslog, err = audit.StartSyslog(audit.SyslogOptions{Addr: opts.AuditSyslogAddr, TLS: opts.AuditSyslogTLS, Store: auditStore, Format: opts.AuditSyslogFormat,
			CursorFile: filepath.Join(opts.DataDir, "audit-syslog.cursor"), Logger: log}); err != nil {
			return nil, fmt.Errorf("audit syslog export: %w", err)
		}
	}
	n.audit = func(ctx context.Context, e audit.Entry) {
		if err := n.AuditLog.Record(context.WithoutCancel(ctx), e); err != nil {
			auditErrs.Inc()
			log.Error("audit entry not stored", "action", e.Action, "err", err)
		}
		if n.AuditSyslog != nil {
			n.AuditSyslog.Kick()
		}
	}
	n.auditVerify = func(ctx context.Context) (*audit.Report, error) { return audit.Verify(ctx, auditStore, apub) }

	aopts := alerting.DefaultOptions()
	aopts.Now = opts.Now
	aopts.Logger = log
	aopts.Registerer = n.Registry
	if opts.Thresholds != nil {
		aopts.Thresholds = opts.Thresholds
	}
	aopts.ResolveAfter = ResolveAfter
	aopts.OfflineAfter = n.offlineAfter
	aopts.RuleStore = n.Store
	aopts.Escalation = opts.Escalation
	if aopts.Escalation == nil {
		aopts.Escalation = []time.Duration{5 * time.Minute, 10 * time.Minute}
	}
	if n.Alerts, err = alerting.New(ctx, n.Store, n.Hub, aopts); err != nil {
		return nil, fmt.Errorf("start alerting: %w", err)
	}

	// Patient-specific alert limits survive restarts in the patient records.
	if ps, _, err := n.Store.FindPatients(ctx, vigil.PatientFilter{Limit: 1_000_000}); err == nil {
		for _, p := range ps {
			if len(p.Overrides) > 0 {
				if err := n.Alerts.SetOverrides(p.ID, p.Overrides); err != nil {
					log.Warn("a stored patient-specific alert limit was not restored", "err", err)
				}
			}
		}
	}

	iopts := ingest.DefaultOptions()
	iopts.MaxPayload = opts.MaxPayload
	if opts.MaxReadingAge != 0 {
		iopts.MaxAge = opts.MaxReadingAge
	}
	iopts.Now = opts.Now
	iopts.Logger = log
	iopts.Registerer = n.Registry
	n.News2 = &news2.Evaluator{Store: n.Store, Alerts: n.Alerts, Now: opts.Now, Logger: log,
		Publish: func(u news2.Update) {
			n.Hub.Publish(live.Event{Type: live.TypeNEWS2, PatientID: u.PatientID, Data: &u})
		}}
	n.Adherence = &adherence.Monitor{Store: n.Store, Alerts: n.Alerts, Logger: log}
	n.Baseline = baseline.New(baseline.Options{Alerts: n.Alerts, Logger: log, Now: opts.Now})
	iopts.OnStored = []func(context.Context, []*vigil.Reading){n.Alerts.Observe, n.News2.Observe, n.Baseline.Observe, n.publishReadings}
	if opts.EHRURL != "" {
		if n.EHRSync, err = ehrsync.Start(ehrsync.Options{URL: opts.EHRURL, Token: opts.EHRToken, Store: n.Store, Alerts: opts.EHRAlerts,
			Now: opts.Now, Logger: log, Registerer: n.Registry}); err != nil {
			return nil, err
		}
		iopts.OnStored = append(iopts.OnStored, func(context.Context, []*vigil.Reading) { n.EHRSync.Kick() })
	}
	n.warm(opts.Now())
	table := mapping.DefaultTable()
	if len(opts.Limits) > 0 {
		if table, err = table.WithLimits(opts.Limits); err != nil {
			return nil, err
		}
	}
	iopts.Decoders = map[string]ingest.Decoder{
		pcd.Format:     ingest.PayloadDecoder(pcd.Decode),
		gatt.Format:    ingest.PayloadDecoder(gatt.DecodePayload),
		omh.Format:     ingest.PayloadDecoder(omh.DecodePayload),
		fhir.Format:    ingest.PayloadDecoder(fhir.DecodePayload),
		medtech.Format: medtech.NewDecoder(n.Store, table).Decode,
		edge.Format:    edge.Decode,
	}
	switch {
	case opts.NATS != "":
		// A commit waits on JetStream's acknowledgement: several under
		// way keep it busy while this node prepares the next.
		iopts.Commits = 4
	case opts.Postgres != "":
		// A commit waits on PostgreSQL. Over a network, several under way
		// keep it busy while this node prepares the next: vigil bench
		// through a proxy adding 0.5 ms each way, 14.8k–16.1k readings/s
		// with 4, 11.8k–12.6k with 1. On this machine's loopback, where
		// PostgreSQL shares the two cores, one at a time: 69k–77k
		// readings/s with 1, 63k–68k with 4 (docs/benchmarks.md).
		iopts.Commits = opts.PostgresCommits
		if iopts.Commits <= 0 {
			iopts.Commits = 4
			if pgstore.OnThisMachine(opts.Postgres) {
				iopts.Commits = 1
			}
		}
	}
	if opts.Postgres == "" {
		if n.Disk, err = diskguard.Start(diskguard.Options{Dir: opts.DataDir, Reserve: opts.DiskReserve, Logger: log, Registerer: n.Registry}); err != nil {
			return nil, err
		}
		iopts.Admit = n.Disk.Admit
	}
	if !n.takesDevices() {
		iopts.Admit = func() error {
			return vigil.Errorf(vigil.EUNAVAILABLE, "this Vigil node does not take device readings (--role %s): send them to an ingest node", opts.Role)
		}
	}
	if e := opts.Edge; e != nil {
		client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: e.TLS.Clone(), ForceAttemptHTTP2: true,
			MaxIdleConns: 4, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second}}
		if n.Forwarder, err = edge.StartForwarder(edge.ForwarderOptions{Upstream: e.Upstream, ID: e.ID, Client: client,
			Store: n.Store.(*pebble.Store), Batch: e.Batch, MaxBytes: e.BufferMax, Policy: e.BufferPolicy, Notify: n.notify,
			Now: opts.Now, Logger: log, Registerer: n.Registry}); err != nil {
			return nil, err
		}
		iopts.OnStored = append(iopts.OnStored, func(context.Context, []*vigil.Reading) { n.Forwarder.Kick() })
		diskAdmit := iopts.Admit
		iopts.Admit = func() error {
			if err := n.Forwarder.Admit(); err != nil {
				return err
			}
			if diskAdmit != nil {
				return diskAdmit()
			}
			return nil
		}
	}
	var pipelineStore ingest.Store = n.Store
	if opts.NATS != "" {
		// JetStream between ingest and storage: the pipeline appends to the
		// stream (a device is acknowledged once JetStream has its reading);
		// a worker stores from the stream and runs the observers.
		if opts.Postgres == "" {
			return nil, fmt.Errorf("JetStream mode (--nats) needs --postgres: ingest nodes and workers share the database")
		}
		if n.Queue, err = jsqueue.Open(ctx, jsqueue.Options{URL: opts.NATS, Prefix: opts.NATSPrefix, Replicas: opts.NATSReplicas, Logger: log, Registerer: n.Registry}); err != nil {
			return nil, err
		}
		pipelineStore = queueStore{Store: n.Store, q: n.Queue}
		observers := iopts.OnStored
		iopts.OnStored = nil
		if err := n.relayLive(); err != nil {
			return nil, err
		}
		if opts.Role == RoleAll || opts.Role == RoleWorker {
			wctx, stop := context.WithCancel(context.Background())
			n.stopWorker, n.workerDone = stop, make(chan struct{})
			go func() {
				defer close(n.workerDone)
				n.Queue.Work(wctx, n.Store, func(ctx context.Context, rs []*vigil.Reading) {
					for _, f := range observers {
						f(ctx, rs)
					}
				})
			}()
		}
	}
	n.Pipeline = ingest.New(pipelineStore, table, iopts)
	if len(opts.PublicHealthWebhooks) > 0 {
		n.PublicHealth = notify.Start(notify.Options{Targets: opts.PublicHealthWebhooks, Events: []string{live.TypeSignal}, Hub: n.Hub, DeadLetters: n.Store,
			Now: opts.Now, Logger: log})
		n.watchSignals(cmp.Or(opts.SignalInterval, time.Hour))
	}
	if len(opts.Webhooks) > 0 {
		n.Notifier = notify.Start(notify.Options{Targets: opts.Webhooks, Hub: n.Hub, DeadLetters: n.Store, Now: opts.Now, Logger: log, Registerer: n.Registry})
	}

	// Device commands are signed with the node's command key (devices hold
	// its public key: GET /api/v1/commands/key).
	ckey, err := audit.LoadOrCreateKey(filepath.Join(opts.DataDir, CommandKeyFile))
	if err != nil {
		return nil, fmt.Errorf("command key: %w", err)
	}
	n.Admin = &admin.Service{Store: n.Store, Auth: n.Auth, Now: opts.Now, OnDeviceChanged: n.deviceChanged,
		OnCredentialChanged: func(id string) {
			if n.Broker != nil {
				n.Broker.Disconnect(id)
			}
		},
		CommandKey: ckey,
		PublishCommand: func(deviceID string, payload []byte) error {
			if n.Broker == nil {
				return vigil.Errorf(vigil.EUNAVAILABLE, "this Vigil node takes no device connections (--role %s): send the command through an ingest node", opts.Role)
			}
			return n.Broker.PublishCommand(deviceID, payload)
		}}

	if e := opts.Edge; e != nil {
		client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: e.TLS.Clone(), TLSHandshakeTimeout: 10 * time.Second}}
		if n.EdgeConfig, err = edge.StartSync(edge.SyncOptions{Upstream: e.Upstream, ID: e.ID, Client: client, Store: n.Store,
			StateFile: filepath.Join(opts.DataDir, "edge-config.json"), Interval: e.ConfigInterval, Logger: log,
			Hooks: edge.Hooks{
				SaveRule: func(ctx context.Context, r vigil.Rule) error {
					_, err := n.Alerts.SaveRule(ctx, r)
					return err
				},
				DeviceChanged: n.deviceChanged,
				PatientChanged: func(p *vigil.Patient) {
					if err := n.Alerts.SetOverrides(p.ID, p.Overrides); err != nil {
						log.Warn("a patient-specific alert limit from upstream was not taken into force", "err", err)
					}
				},
			}}); err != nil {
			return nil, err
		}
	}

	// Connection caps: no host can exhaust a listener; loopback clients
	// have no per-address cap. Refusals and slow clients are counted.
	conns := netlimit.NewMetrics(n.Registry)
	if n.takesDevices() {
		bopts := broker.DefaultOptions()
		bopts.Addr = opts.MQTTAddr
		bopts.Auth = n.Auth
		bopts.Ingester = n.Pipeline
		bopts.MaxPayload = opts.MaxPayload
		bopts.Logger = log
		bopts.Registerer = n.Registry
		bopts.TLSConfig = opts.TLS
		bopts.RatePerDevice = opts.MQTTRate
		bopts.WrapListener = func(ln net.Listener) net.Listener {
			return netlimit.Wrap(ln, "mqtt", netlimit.Limits{Total: cmp.Or(opts.MQTTMaxConns, 50000), PerAddr: 2048}, conns)
		}
		bopts.OnCommandAck = func(deviceID string, payload []byte) {
			if err := n.Admin.CommandAck(context.Background(), deviceID, payload); err != nil {
				log.Warn("device command answer not recorded", "device", deviceID, "err", err)
			}
		}
		if n.Broker, err = broker.New(bopts); err != nil {
			return nil, fmt.Errorf("start MQTT broker: %w", err)
		}
		if err = n.Broker.Start(); err != nil {
			return nil, err
		}
		if n.NurseCall, err = nursecall.Start(nursecall.Options{Hub: n.Hub, Broker: n.Broker, Patients: n.Store.FindPatientByID, Logger: log, Registerer: n.Registry}); err != nil {
			return nil, err
		}

		if opts.MLLPAddr != "" {
			if n.MLLP, err = mllp.Start(mllp.Options{Addr: opts.MLLPAddr, Ingester: n.Pipeline, Devices: n.Store, Allow: opts.MLLPAllow, TLS: opts.TLS,
				WrapListener: func(ln net.Listener) net.Listener {
					return netlimit.Wrap(ln, "mllp", netlimit.Limits{Total: 1024, PerAddr: 256}, conns)
				},
				Alarms: n.deviceAlarms, Now: opts.Now, Logger: log, Registerer: n.Registry}); err != nil {
				return nil, err
			}
		}
	}

	if n.httpLn, err = net.Listen("tcp", opts.HTTPAddr); err != nil {
		return nil, fmt.Errorf("listen for HTTP on %s: %w (is another server using it? choose another address with --http)", opts.HTTPAddr, err)
	}
	n.httpLn = netlimit.Wrap(n.httpLn, "http", netlimit.Limits{Total: 10000, PerAddr: 512}, conns)
	if opts.TLS != nil {
		n.httpLn = tls.NewListener(n.httpLn, opts.TLS)
	}
	// Bulk exports are sealed under keys held in memory; what an earlier
	// process left in DATA/exports is unreadable and removed.
	if n.Exporter, err = fhir.NewExporter(fhir.ExportOptions{Dir: filepath.Join(opts.DataDir, "exports"), Now: opts.Now}); err != nil {
		return nil, fmt.Errorf("bulk export directory: %w", err)
	}
	if n.Subscriptions, err = fhir.NewSubscriptions(fhir.SubscriptionOptions{
		Store: n.Store, Hub: n.Hub, Observations: n.Store, Patients: n.Store, Principal: n.Auth.UserPrincipal,
		BaseURL: func() string { return n.URL() + fhir.Base }, Client: &http.Client{Timeout: 2 * time.Minute},
		Now: opts.Now, Logger: log,
	}); err != nil {
		return nil, fmt.Errorf("start FHIR subscriptions: %w", err)
	}
	fh := fhir.NewHandler(fhir.Options{
		Exporter:           n.Exporter,
		Subscriptions:      n.Subscriptions,
		Alerts:             n.Store,
		Audit:              n.audit,
		Patients:           n.Store,
		Devices:            n.Store,
		Observations:       n.Store,
		Authenticate:       n.authenticateRequest,
		Now:                opts.Now,
		Logger:             log,
		Ingester:           n.Pipeline,
		AuthenticateDevice: n.Auth.DeviceFromRequest,
		MaxBody:            opts.MaxPayload,
	})
	// The web app's admin page reaches the API through the web app (which
	// checks the session's CSRF token and idle timeout); the API is made
	// after the web handler it mounts.
	var apiHandler http.Handler
	wh := web.NewHandler(web.Options{
		API:         http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { apiHandler.ServeHTTP(w, r) }),
		Store:       n.Store,
		Auth:        n.Auth,
		Hub:         n.Hub,
		Alerts:      n.Alerts,
		Audit:       n.audit,
		IdleTimeout: opts.SessionIdle,
		RequireTOTP: opts.RequireTOTP,
		OIDC:        opts.OIDC,
		NEWS2:       n.News2.Compute,
		NEWS2Record: n.News2.Record,
		DeviceState: n.deviceState,
		Thresholds:  n.Alerts.Thresholds,
		Connected:   n.connected,
		Notices:     n.currentNotices,
		// Over TLS the session cookie is Secure and browsers are told to
		// keep to HTTPS (HSTS).
		SecureCookies: opts.TLS != nil,
		Now:           opts.Now,
		Logger:        log,
	})
	api := httpapi.New(httpapi.Options{
		Store:       n.Store,
		Auth:        n.Auth,
		Admin:       n.Admin,
		Ingester:    n.Pipeline,
		Alerts:      n.Alerts,
		NEWS2:       func(ctx context.Context, id string) (any, error) { return n.News2.Compute(ctx, id) },
		NEWS2Record: n.News2.Record,
		Aggregate: func(ctx context.Context, o pubhealth.Options) (*pubhealth.Table, error) {
			return pubhealth.Aggregate(ctx, n.Store, o)
		},
		Signals: func(ctx context.Context, o pubhealth.SignalOptions) (*pubhealth.Surveillance, error) {
			var err error
			if o.Secret, err = n.researchSecret(); err != nil {
				return nil, err
			}
			return pubhealth.Signals(ctx, n.Store, o)
		},
		Extract: func(ctx context.Context, o pubhealth.ExtractOptions, w io.Writer) (int, error) {
			var err error
			if o.Secret, err = n.researchSecret(); err != nil {
				return 0, err
			}
			return pubhealth.WriteExtract(ctx, n.Store, o, w)
		},
		ChargePrivacy: func(ctx context.Context, userID string, epsilon, delta float64) (*vigil.PrivacySpent, error) {
			b := opts.PrivacyBudget
			if b == (pubhealth.Budget{}) {
				b = pubhealth.DefaultBudget
			}
			return pubhealth.Charge(ctx, n.Store, userID, epsilon, delta, b)
		},
		Baselines:   func(id string) any { return n.Baseline.Current(id) },
		Opened:      n.Adherence.Opened,
		Audit:       n.audit,
		AuditVerify: n.auditVerify,
		AuditFind: func(ctx context.Context, q audit.Query) (*audit.Page, error) {
			return audit.Find(ctx, auditStore, q)
		},
		EdgeStatus: n.edgeStatus(),
		Backup:     n.Backup,
		ErasePatient: func(ctx context.Context, id string) (any, error) {
			return n.ErasePatient(ctx, id)
		},
		IssueDeviceCert: func(id string) ([]byte, []byte, string, error) {
			return certs.IssueClient(certs.Dir(opts.DataDir), id, opts.Now())
		},
		FHIR:          fh,
		Web:           wh,
		Gatherer:      n.Registry,
		Ready:         n.readyErr,
		MaxBody:       opts.MaxPayload,
		PublicMetrics: opts.PublicMetrics,
		Limits:        opts.HTTPLimits,
		Now:           opts.Now,
		Logger:        log,
		Registerer:    n.Registry,
	})
	n.routes = append(append(api.Routes(), fhir.Routes(fh)...), web.Routes(wh)...)
	apiHandler = api.Handler()
	n.httpSrv = &http.Server{
		Handler:           apiHandler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	n.httpDone = make(chan error, 1)
	go func() { n.httpDone <- n.httpSrv.Serve(n.httpLn) }()

	if err = n.writeControl(ctx); err != nil {
		return nil, err
	}
	n.stopTick, n.tickDone = make(chan struct{}), make(chan struct{})
	go n.tick()
	n.mu.Lock()
	n.ready = true
	n.mu.Unlock()
	log.Info("vigil started", "http", n.URL(), "mqtt", n.MQTTAddr(), "data", opts.DataDir)
	return n, nil
}

// URL is the base URL of the HTTP server, e.g. "http://127.0.0.1:8080".
func (n *Node) URL() string {
	if n.opts.TLS != nil {
		return "https://" + dialable(n.httpLn.Addr())
	}
	return "http://" + dialable(n.httpLn.Addr())
}

// MQTTAddr is the host:port of the MQTT listener.
func (n *Node) MQTTAddr() string {
	if n.Broker == nil {
		return "" // a worker or API node takes no devices
	}
	return dialable(n.Broker.Addr())
}

// takesDevices reports whether this node runs the device listeners (MQTT,
// MLLP) and takes HTTP device ingest: roles all and ingest.
func (n *Node) takesDevices() bool {
	return n.opts.Role == "" || n.opts.Role == RoleAll || n.opts.Role == RoleIngest
}

// connected is the web app's view of which devices are connected here.
func (n *Node) connected() map[string]bool {
	if n.Broker == nil {
		return map[string]bool{}
	}
	return n.Broker.Connected()
}

// dialable turns a listen address such as [::]:8080 into 127.0.0.1:8080.
func dialable(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func (n *Node) readyErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.ready {
		return vigil.Errorf(vigil.EUNAVAILABLE, "starting or shutting down")
	}
	return nil
}

func (n *Node) authenticateRequest(r *http.Request) (*vigil.Principal, error) {
	tok := auth.Bearer(r)
	if tok == "" {
		return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "a bearer token is required")
	}
	return n.Auth.Principal(r.Context(), tok)
}

// Backup writes a consistent snapshot of the node's data directory (the
// embedded store's checkpoint, taken while ingest continues, and the
// keys) to w as a tar stream (internal/backup). PostgreSQL is backed up
// with its own tools (docs/operations.md).
func (n *Node) Backup(ctx context.Context, w io.Writer, base *backup.Manifest, withMasterKey bool) (*backup.Manifest, error) {
	ps, ok := n.Store.(*pebble.Store)
	if !ok {
		return nil, vigil.Errorf(vigil.EINVALID, "the data is in PostgreSQL: back it up with pg_dump or a base backup, and keep DATA's key files (data-keys.json, audit-key, command-key, research-key, tls/) with it")
	}
	id := backup.NewID(n.opts.Now())
	snap := filepath.Join(n.opts.DataDir, "backup-"+id)
	defer os.RemoveAll(snap)
	if err := backup.Prepare(n.opts.DataDir, snap, ps.Checkpoint, withMasterKey); err != nil {
		return nil, err
	}
	return backup.Write(w, snap, base, id, n.opts.Version, n.opts.Now())
}

// ErasePatient erases everything the node holds about a patient (the
// store's ErasePatient) and what it keeps in memory (alert
// states and windows, cached identifiers and assignments). The caller
// audits it.
func (n *Node) ErasePatient(ctx context.Context, id string) (*vigil.ErasureReport, error) {
	ps, ok := n.Store.(vigil.Lifecycle)
	if !ok {
		return nil, vigil.Errorf(vigil.EUNAVAILABLE, "this store cannot erase patients")
	}
	as, err := n.Store.PatientAssignments(ctx, id)
	if err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
		return nil, err
	}
	rep, err := ps.ErasePatient(ctx, id)
	if err != nil {
		return nil, err
	}
	n.Alerts.ForgetPatient(id)
	n.Pipeline.InvalidatePatients()
	for _, a := range as {
		n.deviceChanged(a.DeviceID)
	}
	return rep, nil
}

// EdgeStatus is what GET /api/v1/edge/status reports on an edge gateway.
type EdgeStatus struct {
	Edge      string         `json:"edge"`
	Forwarder edge.Status    `json:"forwarder"`
	Config    edge.SyncState `json:"config"`
}

// edgeStatus is the status function of an edge gateway (nil otherwise).
func (n *Node) edgeStatus() func() any {
	if n.opts.Edge == nil {
		return nil
	}
	return func() any {
		return EdgeStatus{Edge: n.opts.Edge.ID, Forwarder: n.Forwarder.Status(), Config: n.EdgeConfig.State()}
	}
}

// notify puts a system notice in force (or withdraws it): every web page
// shows it across the top, live (an edge gateway's link to its server
// down, its buffer nearly full).
func (n *Node) notify(id string, active bool, text string) {
	nt := &live.Notice{ID: id, Active: active, Text: text}
	n.mu.Lock()
	if n.notices == nil {
		n.notices = map[string]live.Notice{}
	}
	if active {
		n.notices[id] = *nt
	} else {
		delete(n.notices, id)
	}
	n.mu.Unlock()
	n.Hub.Publish(live.Event{Type: live.TypeNotice, Time: n.opts.Now().UTC(), Data: nt})
}

// currentNotices are the system notices in force, by id.
func (n *Node) currentNotices() []live.Notice {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]live.Notice, 0, len(n.notices))
	for _, nt := range n.notices {
		out = append(out, nt)
	}
	slices.SortFunc(out, func(a, b live.Notice) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// CommandKeyFile (in the data directory) holds the Ed25519 key that signs
// device commands.
const CommandKeyFile = "command-key"

// deviceAlarms raises and resolves alerts from an ORU^R40 (IHE PCD ACM).
func (n *Node) deviceAlarms(ctx context.Context, sender string, received time.Time, m *hl7.Message) error {
	alarms, err := pcd.Alarms(m)
	if err != nil {
		return err
	}
	table := mapping.DefaultTable()
	for _, a := range alarms {
		ps, _, err := n.Store.FindPatients(ctx, vigil.PatientFilter{Identifier: a.PatientIdentifier, Limit: 2})
		if err != nil {
			return vigil.Errorf(vigil.EUNAVAILABLE, "registry unavailable")
		}
		if len(ps) != 1 {
			return vigil.FieldErrorf("PID[1].3", "unknown-patient", "no single patient with identifier %q is registered", a.PatientIdentifier)
		}
		code, title := a.SourceCode, "Device alarm"
		if l, ok := table.FromMDC(a.SourceCode); ok {
			code = l
			if c, ok := table.Lookup(l); ok {
				title = c.Display + ": device alarm"
			}
		}
		if a.EventName != "" {
			title += " (" + a.EventName + ")"
		}
		if _, err := n.Alerts.DeviceAlarm(ctx, alerting.DeviceAlarm{
			PatientID: ps[0].ID, DeviceID: sender, AlarmID: a.AlarmID, Code: code, Title: title, Priority: a.Priority,
			Value: a.Value, Unit: a.Unit, Time: a.Time, Received: received, Active: a.Active,
		}); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) deviceChanged(id string) {
	n.kinds.Delete(id)
	n.Pipeline.InvalidateDevice(id)
	n.Auth.ForgetDevice(id)
}

func (n *Node) publishReadings(_ context.Context, rs []*vigil.Reading) {
	events := make([]live.Event, len(rs))
	for i, r := range rs {
		events[i] = live.Event{Type: live.TypeReading, PatientID: r.PatientID, Data: r}
	}
	n.Hub.PublishAll(events)
}

// writeControl issues the local admin token and writes ControlFile.
func (n *Node) writeControl(ctx context.Context) error {
	if _, err := n.Store.FindUserByID(ctx, LocalAdminUser); vigil.ErrorCode(err) == vigil.ENOTFOUND {
		u := &vigil.User{ID: LocalAdminUser, Name: "local CLI access", Role: vigil.RoleAdmin}
		if err := n.Store.CreateUser(ctx, u); err != nil {
			return fmt.Errorf("create %s user: %w", LocalAdminUser, err)
		}
	} else if err != nil {
		return fmt.Errorf("find %s user: %w", LocalAdminUser, err)
	}
	tok, t, err := n.Auth.IssueToken(ctx, LocalAdminUser, "api", "local CLI (control file)", 0)
	if err != nil {
		return fmt.Errorf("issue local admin token: %w", err)
	}
	n.tokenID = t.ID
	c := Control{PID: os.Getpid(), HTTPURL: n.URL(), MQTTAddr: n.MQTTAddr(), Token: tok}
	if n.MLLP != nil {
		c.MLLPAddr = dialable(n.MLLP.Addr())
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(n.opts.DataDir, ControlFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write control file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write control file: %w", err)
	}
	return nil
}

// ReadControl reads the control file of a server running on dataDir.
// It returns an error wrapping os.ErrNotExist when no server has written one.
func ReadControl(dataDir string) (*Control, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, ControlFile))
	if err != nil {
		return nil, err
	}
	var c Control
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("read %s: %w", ControlFile, err)
	}
	return &c, nil
}

// Close shuts down gracefully: it stops accepting connections, waits for
// in-flight requests and MQTT acknowledgements, drains the pipeline so
// every acknowledged reading is durable, and closes the store. It is safe
// to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

// offlineAfter is how long a device may be silent before an alert: devices
// that stream (bedside monitors, wearables, gateways) are expected to
// report continuously; home devices that report a few times a day never
// raise one. Device kinds are cached.
// deviceState is what the web app's device fleet shows of a device.
func (n *Node) deviceState(deviceID string) web.DeviceState {
	st := web.DeviceState{SilentAfter: n.offlineAfter(deviceID)}
	if s, ok := n.Alerts.DeviceStatus(deviceID); ok {
		st.LastSeen, st.Battery = s.LastSeen, s.Battery
		if s.BatteryAt != nil {
			st.BatteryAt = *s.BatteryAt
		}
	}
	return st
}

func (n *Node) offlineAfter(deviceID string) time.Duration {
	kind, ok := n.kinds.Load(deviceID)
	if !ok {
		d, err := n.Store.FindDeviceByID(context.Background(), deviceID)
		if err != nil {
			return 0
		}
		kind = d.Kind
		n.kinds.Store(deviceID, kind)
	}
	switch kind {
	case vigil.DeviceBedsideMonitor:
		return 2 * time.Minute
	case vigil.DeviceWearable, vigil.DeviceGateway:
		return 10 * time.Minute
	}
	return 0
}

// OpenSealer loads the data directory's encryption at rest: the master
// key (VIGIL_MASTER_KEY or DATA/master-key, made on first use) and the
// data keys it wraps (DATA/data-keys.json).
func OpenSealer(dataDir string) (*seal.Sealer, error) {
	mk, err := seal.MasterKey(dataDir)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	w, err := seal.NewLocalKey(mk)
	if err != nil {
		return nil, err
	}
	return seal.Open(dataDir, w)
}

// Routes returns every HTTP route pattern the node serves (API, FHIR and
// web app), for the authorization-matrix test.
func (n *Node) Routes() []string { return slices.Clone(n.routes) }

// tick runs the alert timers (escalation, snooze, timed rules) every
// second and the missed-dose check every minute.
func (n *Node) tick() {
	defer close(n.tickDone)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-n.stopTick:
			return
		case <-t.C:
			n.Alerts.Tick(context.Background())
			if i%60 == 0 {
				if err := n.Adherence.Check(context.Background(), n.opts.Now()); err != nil {
					n.opts.Logger.Error("missed-dose check failed", "err", err)
				}
			}
		}
	}
}

// warm rebuilds the personal baselines from history in the background:
// with a long history it can take a while, and nothing waits for it.
func (n *Node) warm(now time.Time) {
	ctx, cancel := context.WithCancel(context.Background())
	n.stopWarm, n.warmDone = cancel, make(chan struct{})
	go func() {
		defer close(n.warmDone)
		start := time.Now()
		if err := n.Baseline.Warm(ctx, n.Store, now); err != nil && ctx.Err() == nil {
			n.opts.Logger.Error("personal baselines not rebuilt from history; they learn from new readings", "err", err)
			return
		}
		n.opts.Logger.Info("personal baselines rebuilt from history", "took", time.Since(start))
	}()
}

func (n *Node) close() error {
	n.mu.Lock()
	n.ready = false
	n.mu.Unlock()
	if n.stopWarm != nil {
		n.stopWarm()
		<-n.warmDone
	}
	if n.stopTick != nil {
		close(n.stopTick)
		<-n.tickDone
	}
	var errs []error
	if n.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if err := n.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop HTTP: %w", err))
		}
		cancel()
		<-n.httpDone
	} else if n.httpLn != nil {
		n.httpLn.Close()
	}
	if n.MLLP != nil {
		if err := n.MLLP.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stop MLLP: %w", err))
		}
	}
	if n.NurseCall != nil {
		n.NurseCall.Close() // the broker stops next: alerts from here on reach webhooks and the web app only
	}
	if n.Broker != nil {
		if err := n.Broker.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stop MQTT: %w", err))
		}
	}
	if n.Pipeline != nil {
		if err := n.Pipeline.Close(); err != nil {
			errs = append(errs, fmt.Errorf("drain pipeline: %w", err))
		}
	}
	if n.Disk != nil {
		n.Disk.Close()
	}
	if n.EdgeConfig != nil {
		n.EdgeConfig.Close()
	}
	if n.Forwarder != nil {
		n.Forwarder.Close() // what is not forwarded stays in the outbox
	}
	if n.stopRelay != nil {
		n.stopRelay()
	}
	if n.stopWorker != nil {
		n.stopWorker() // what it has not acknowledged comes again to a worker
		<-n.workerDone
	}
	if n.Queue != nil {
		n.Queue.Close()
	}
	if n.stopSignals != nil {
		n.stopSignals()
	}
	if n.PublicHealth != nil {
		n.PublicHealth.Close()
	}
	if n.Notifier != nil {
		n.Notifier.Close() // after the pipeline drained (its alerts still go out), before the store closes
	}
	if n.Subscriptions != nil {
		n.Subscriptions.Close() // after the pipeline drained: its last events went out
	}
	if n.EHRSync != nil {
		n.EHRSync.Close() // what it has not pushed stays in the feed for the next start
	}
	if n.AuditSyslog != nil {
		n.AuditSyslog.Close() // its cursor stays: the next start sends the rest
	}
	if n.Exporter != nil {
		if err := n.Exporter.Close(); err != nil { // after HTTP: no new jobs; before the store
			errs = append(errs, fmt.Errorf("stop bulk exports: %w", err))
		}
	}
	if n.Store != nil {
		if n.tokenID != "" {
			_ = n.Auth.RevokeToken(context.Background(), n.tokenID)
			os.Remove(filepath.Join(n.opts.DataDir, ControlFile))
		}
		if err := n.Store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close store: %w", err))
		}
	}
	return errors.Join(errs...)
}
