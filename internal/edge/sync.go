package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vigil-iomt/vigil/internal/pump"
)

// SyncOptions configure a Syncer.
type SyncOptions struct {
	Upstream string
	ID       string
	Client   *http.Client
	Store    Local
	Hooks    Hooks
	// StateFile keeps the version applied (and when it was issued), so a
	// restart asks only for what changed and an older configuration is
	// refused.
	StateFile string
	// Interval is how often the server is asked (default 1 minute).
	Interval time.Duration
	Logger   *slog.Logger
}

// Syncer keeps the edge's configuration at the server's.
type Syncer struct {
	o      SyncOptions
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{}

	mu    sync.Mutex
	state SyncState
}

// SyncState is the configuration the edge runs.
type SyncState struct {
	Version   string    `json:"version,omitempty"`
	Issued    time.Time `json:"issued,omitzero"`
	Applied   time.Time `json:"applied,omitzero"`
	LastCheck time.Time `json:"lastCheck,omitzero"`
	LastError string    `json:"lastError,omitempty"`
}

// StartSync loads the state and begins asking the server.
func StartSync(o SyncOptions) (*Syncer, error) {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: time.Minute}
	}
	if o.Interval <= 0 {
		o.Interval = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Upstream = strings.TrimSuffix(o.Upstream, "/")
	s := &Syncer{o: o, done: make(chan struct{}), kick: make(chan struct{}, 1)}
	if b, err := os.ReadFile(o.StateFile); err == nil {
		if err := json.Unmarshal(b, &s.state); err != nil {
			return nil, fmt.Errorf("edge configuration state %s is corrupt (%v): remove it to fetch the configuration afresh", o.StateFile, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		pump.Run(ctx, s.kick, o.Interval, 2*time.Second, o.Interval, func(ctx context.Context) (bool, time.Duration, error) {
			_, _, err := s.Once(ctx)
			return false, 0, err
		})
	}()
	return s, nil
}

// Close stops asking.
func (s *Syncer) Close() {
	s.cancel()
	<-s.done
}

// State is the configuration in force.
func (s *Syncer) State() SyncState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Once asks the server for the configuration and applies it when it is
// new; changed says whether it was.
func (s *Syncer) Once(ctx context.Context) (Changes, bool, error) {
	c, changed, err := s.once(ctx)
	s.mu.Lock()
	s.state.LastCheck = time.Now().UTC()
	s.state.LastError = ""
	if err != nil {
		s.state.LastError = err.Error()
	}
	s.mu.Unlock()
	if err != nil {
		s.o.Logger.Warn("edge configuration not updated from the upstream server; the one in force stays", "err", err)
	}
	return c, changed, err
}

func (s *Syncer) once(ctx context.Context) (Changes, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.o.Upstream+"/api/v1/edges/"+s.o.ID+"/config", nil)
	if err != nil {
		return Changes{}, false, err
	}
	cur := s.State()
	if cur.Version != "" {
		req.Header.Set("If-None-Match", `"`+cur.Version+`"`)
	}
	res, err := s.o.Client.Do(req)
	if err != nil {
		return Changes{}, false, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 256<<20))
	if err != nil {
		return Changes{}, false, err
	}
	switch res.StatusCode {
	case http.StatusNotModified:
		return Changes{}, false, nil
	case http.StatusOK:
	default:
		var p struct{ Detail string }
		json.Unmarshal(body, &p)
		return Changes{}, false, fmt.Errorf("upstream answered %s: %s", res.Status, p.Detail)
	}
	var b Bundle
	if err := json.Unmarshal(body, &b); err != nil {
		return Changes{}, false, fmt.Errorf("the upstream configuration is not a bundle: %v", err)
	}
	if err := b.Verify(s.o.ID); err != nil {
		return Changes{}, false, err
	}
	if b.Version == cur.Version {
		return Changes{}, false, nil
	}
	if b.Issued.Before(cur.Issued) {
		return Changes{}, false, fmt.Errorf("the upstream server sent configuration %s issued %s, older than %s in force (issued %s): refused (remove %s to accept it)",
			b.Version, b.Issued.Format(time.RFC3339), cur.Version, cur.Issued.Format(time.RFC3339), s.o.StateFile)
	}
	c, err := Apply(ctx, s.o.Store, &b, s.o.Hooks)
	if err != nil {
		return c, true, fmt.Errorf("apply configuration %s: %w", b.Version, err)
	}
	st := SyncState{Version: b.Version, Issued: b.Issued, Applied: time.Now().UTC()}
	if err := writeFileAtomic(s.o.StateFile, st); err != nil {
		return c, true, err
	}
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
	s.o.Logger.Info("edge configuration applied", "version", b.Version, "patients", c.Patients, "devices", c.Devices,
		"assignments", c.Assignments, "rules", c.Rules, "mappings", c.Mappings)
	return c, true, nil
}

func writeFileAtomic(path string, v any) error {
	b, _ := json.MarshalIndent(v, "", "  ")
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
