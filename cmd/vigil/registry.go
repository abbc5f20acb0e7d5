package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/auth"
	"github.com/vigil-iomt/vigil/internal/certs"
	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/medtech"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/pebble"
	"github.com/vigil-iomt/vigil/internal/pgstore"
	"github.com/vigil-iomt/vigil/internal/pubhealth"
	"github.com/vigil-iomt/vigil/internal/rules"
)

// registry is what the registry commands need. It is served directly by
// the store when the server is stopped (offline) and by the admin API when
// it runs (online).
type registry interface {
	AddPatient(ctx context.Context, p *vigil.Patient) error
	AddDevice(ctx context.Context, d *vigil.Device) (string, error)
	RotateDeviceSecret(ctx context.Context, id string) (string, error)
	RevokeDevice(ctx context.Context, id string) error
	EnrollmentCode(ctx context.Context, id string, ttl time.Duration) (string, time.Time, error)
	IssueDeviceCert(ctx context.Context, id string) (certPEM, keyPEM []byte, serial string, err error)
	Assign(ctx context.Context, deviceID, patientID string, from time.Time) error
	AddUser(ctx context.Context, u *vigil.User, password string) error
	CreateToken(ctx context.Context, userID string, spec admin.TokenSpec) (string, *vigil.Token, error)
	EnrollTOTP(ctx context.Context, userID string) (url, secret string, err error)
	ListPatients(ctx context.Context) ([]*vigil.Patient, error)
	ListDevices(ctx context.Context) ([]*vigil.Device, error)
	ListUsers(ctx context.Context) ([]*vigil.User, error)
	DeadLetters(ctx context.Context, f vigil.DeadLetterFilter) ([]*vigil.DeadLetter, error)
	DeadLetter(ctx context.Context, id string) (*vigil.DeadLetter, error)
	DeleteDeadLetter(ctx context.Context, id string) error
	ReplayDeadLetter(ctx context.Context, id string) (*httpapi.ReplayResult, error)
	ReplayDeadLetters(ctx context.Context, f vigil.DeadLetterFilter) (*httpapi.ReplaySummary, error)
	PutMapping(ctx context.Context, id string, req httpapi.MappingRequest) (*vigil.Mapping, error)
	Mappings(ctx context.Context) ([]*vigil.Mapping, error)
	Alerts(ctx context.Context, f vigil.AlertFilter) ([]*vigil.Alert, error)
	PutRule(ctx context.Context, id string, req httpapi.RuleRequest) (*vigil.Rule, error)
	Rules(ctx context.Context) ([]*vigil.Rule, error)
	RuleHistory(ctx context.Context, id string) ([]*vigil.Rule, error)
	Backtest(ctx context.Context, req httpapi.BacktestRequest) (*alerting.BacktestReport, error)
	// AuditVerify checks the audit log: offline with pub (nil: the data
	// directory's audit-key.pub), online by the server with its own key.
	AuditVerify(ctx context.Context, pub ed25519.PublicKey) (*audit.Report, error)
	// Aggregates computes public-health aggregates (through the running
	// server only: every export is audited).
	Aggregates(ctx context.Context, o pubhealth.Options) (*pubhealth.Table, error)
	// Extract writes a study's pseudonymised research extract (through
	// the running server only: audited).
	Extract(ctx context.Context, o pubhealth.ExtractOptions, w io.Writer) error
	// AuditFind reads one page of the audit log.
	AuditFind(ctx context.Context, q audit.Query) (*audit.Page, error)
	Close() error
}

// openRegistry opens the data directory directly, or, when a server holds
// it, talks to that server through the admin API named in its control file.
func (g *globals) openRegistry(ctx context.Context) (registry, error) {
	if g.data == "" {
		return nil, errors.New("no data directory: pass --data DIR or set VIGIL_DATA")
	}
	if c, err := node.ReadControl(g.data); err == nil {
		if processAlive(c.PID) {
			return onlineRegistry{httpapi.NewClient(c.HTTPURL, c.Token).WithTLS(g.clientTLS())}, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(g.data, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", g.data, err)
	}
	var st node.Store
	if g.postgres != "" {
		if err := checkPostgresURL(g.postgres); err != nil {
			return nil, err
		}
		ps, err := pgstore.Open(ctx, g.postgres, pgstore.Options{Schema: g.postgresSchema})
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL store: %w", err)
		}
		st = ps
	} else {
		opts := pebble.DefaultOptions()
		opts.CompactInterval = -1
		sl, err := node.OpenSealer(g.data)
		if err != nil {
			return nil, err
		}
		opts.Sealer = sl
		ps, err := pebble.Open(filepath.Join(g.data, "store"), opts)
		if err != nil {
			return nil, fmt.Errorf("%w (if a server is running on this data directory, its %s is missing)", err, node.ControlFile)
		}
		st = ps
	}
	a := auth.NewAuthenticator(st, auth.Options{})
	return &offlineRegistry{Service: &admin.Service{Store: st, Auth: a, Now: time.Now}, store: st, data: g.data}, nil
}

type offlineRegistry struct {
	*admin.Service
	store node.Store
	data  string
}

func (o *offlineRegistry) ListPatients(ctx context.Context) ([]*vigil.Patient, error) {
	ps, _, err := o.store.FindPatients(ctx, vigil.PatientFilter{Limit: 100000})
	return ps, err
}

func (o *offlineRegistry) ListDevices(ctx context.Context) ([]*vigil.Device, error) {
	ds, _, err := o.store.FindDevices(ctx, vigil.DeviceFilter{Limit: 100000})
	return ds, err
}

func (o *offlineRegistry) ListUsers(ctx context.Context) ([]*vigil.User, error) {
	return o.store.FindUsers(ctx)
}

func (o *offlineRegistry) DeadLetters(ctx context.Context, f vigil.DeadLetterFilter) ([]*vigil.DeadLetter, error) {
	return o.store.FindDeadLetters(ctx, f)
}

func (o *offlineRegistry) DeadLetter(ctx context.Context, id string) (*vigil.DeadLetter, error) {
	return o.store.FindDeadLetterByID(ctx, id)
}

func (o *offlineRegistry) DeleteDeadLetter(ctx context.Context, id string) error {
	return o.store.DeleteDeadLetter(ctx, id)
}

var errReplayOffline = errors.New("replaying dead letters needs the running server (it ingests them again): start vigil serve on this data directory")

func (o *offlineRegistry) ReplayDeadLetter(context.Context, string) (*httpapi.ReplayResult, error) {
	return nil, errReplayOffline
}

func (o *offlineRegistry) ReplayDeadLetters(context.Context, vigil.DeadLetterFilter) (*httpapi.ReplaySummary, error) {
	return nil, errReplayOffline
}

func (o *offlineRegistry) PutMapping(ctx context.Context, id string, req httpapi.MappingRequest) (*vigil.Mapping, error) {
	if _, err := medtech.ParseDeviceTemplate(req.DeviceTemplate); err != nil {
		return nil, fmt.Errorf("device template: %w", err)
	}
	if _, err := medtech.ParseFhirTemplate(req.FhirTemplate); err != nil {
		return nil, fmt.Errorf("FHIR template: %w", err)
	}
	m := &vigil.Mapping{ID: id, DeviceTemplate: req.DeviceTemplate, FhirTemplate: req.FhirTemplate, Devices: req.Devices, Kinds: req.Kinds, SavedBy: "cli"}
	if err := o.store.SaveMapping(ctx, m); err != nil {
		return nil, err
	}
	return m, nil
}

func (o *offlineRegistry) Mappings(ctx context.Context) ([]*vigil.Mapping, error) {
	return o.store.FindMappings(ctx)
}

func (o *offlineRegistry) Alerts(ctx context.Context, f vigil.AlertFilter) ([]*vigil.Alert, error) {
	return o.store.FindAlerts(ctx, f)
}

func (o *offlineRegistry) PutRule(ctx context.Context, id string, req httpapi.RuleRequest) (*vigil.Rule, error) {
	env, err := rules.NewEnv(nil)
	if err != nil {
		return nil, err
	}
	r := vigil.Rule{ID: id, Title: req.Title, Expr: req.Expr, ForSeconds: req.ForSeconds, Priority: req.Priority,
		Enabled: req.Enabled == nil || *req.Enabled, Note: req.Note, SavedBy: "cli"}
	saved, _, err := alerting.StoreRule(ctx, o.store, env, r)
	return saved, err
}

func (o *offlineRegistry) Rules(ctx context.Context) ([]*vigil.Rule, error) {
	return o.store.FindRules(ctx)
}

func (o *offlineRegistry) RuleHistory(ctx context.Context, id string) ([]*vigil.Rule, error) {
	return o.store.RuleHistory(ctx, id)
}

// Backtest replays history with the hysteresis vigil serve uses.
func (o *offlineRegistry) Backtest(ctx context.Context, req httpapi.BacktestRequest) (*alerting.BacktestReport, error) {
	return alerting.Backtest(ctx, o.store, nil, node.ResolveAfter, req)
}

func (o *offlineRegistry) AuditVerify(ctx context.Context, pub ed25519.PublicKey) (*audit.Report, error) {
	if pub == nil {
		var err error
		if pub, err = audit.LoadPublicKey(filepath.Join(o.data, audit.PubKeyFile)); err != nil {
			return nil, fmt.Errorf("audit public key: %w (pass --pubkey FILE)", err)
		}
	}
	as, err := node.AuditStore(o.store, pub)
	if err != nil {
		return nil, err
	}
	return audit.Verify(ctx, as, pub)
}

// AuditFind reads the log of the node whose data directory this is.
func (o *offlineRegistry) Aggregates(context.Context, pubhealth.Options) (*pubhealth.Table, error) {
	return nil, errors.New("start the server (vigil serve) first: aggregate exports go through it, so that each is audited")
}

func (o *offlineRegistry) Extract(context.Context, pubhealth.ExtractOptions, io.Writer) error {
	return errors.New("start the server (vigil serve) first: research extracts go through it, so that each is audited")
}

func (o *offlineRegistry) AuditFind(ctx context.Context, q audit.Query) (*audit.Page, error) {
	pub, _ := audit.LoadPublicKey(filepath.Join(o.data, audit.PubKeyFile)) // PostgreSQL: names the log
	as, err := node.AuditStore(o.store, pub)
	if err != nil {
		return nil, err
	}
	return audit.Find(ctx, as, q)
}

// IssueDeviceCert signs with the data directory's CA and records the
// certificate as the device's current one.
func (o *offlineRegistry) IssueDeviceCert(ctx context.Context, id string) ([]byte, []byte, string, error) {
	if _, err := o.store.FindDeviceByID(ctx, id); err != nil {
		return nil, nil, "", err
	}
	cert, key, serial, err := certs.IssueClient(certs.Dir(o.data), id, time.Now())
	if err != nil {
		return nil, nil, "", err
	}
	return cert, key, serial, o.SetDeviceCert(ctx, id, serial)
}

func (o *offlineRegistry) Close() error { return o.store.Close() }

type onlineRegistry struct{ *httpapi.Client }

func (r onlineRegistry) AuditVerify(ctx context.Context, _ ed25519.PublicKey) (*audit.Report, error) {
	return r.Client.AuditVerify(ctx)
}

func (onlineRegistry) Close() error { return nil }

// withRegistry runs fn with an open registry and closes it afterwards.
func (g *globals) withRegistry(cmd *cobra.Command, fn func(context.Context, registry) error) error {
	ctx := cmd.Context()
	r, err := g.openRegistry(ctx)
	if err != nil {
		return err
	}
	err = fn(ctx, r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return err
}

// print writes v as indented JSON with --json, and otherwise calls human.
func (g *globals) print(v any, human func(w *tabwriter.Writer)) error {
	if g.json {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	human(w)
	return w.Flush()
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	return p.Signal(syscallZero) == nil
}

func age(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}
