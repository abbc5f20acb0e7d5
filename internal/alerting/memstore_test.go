package alerting

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/vigil-iomt/vigil"
)

// memStore is an in-memory vigil.AlertStore for tests (the embedded store,
// internal/pebble, was not in the tree when these tests were written). It
// stores copies, as a real store does, and can be told to fail saves.
type memStore struct {
	mu      sync.Mutex
	alerts  map[string]*vigil.Alert
	failing bool

	// Optional restore source (patients and their latest observations).
	patients []*vigil.Patient
	obs      map[string]map[string][]*vigil.Observation // patient → code → newest first
}

var _ vigil.AlertStore = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{alerts: make(map[string]*vigil.Alert)} }

func (s *memStore) SaveAlert(_ context.Context, a *vigil.Alert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing {
		return errors.New("disk on fire")
	}
	s.alerts[a.ID] = cloneAlert(a)
	return nil
}

func (s *memStore) FindAlertByID(_ context.Context, id string) (*vigil.Alert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.alerts[id]
	if !ok {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "alert %s not found", id)
	}
	return cloneAlert(a), nil
}

func (s *memStore) FindAlerts(_ context.Context, f vigil.AlertFilter) ([]*vigil.Alert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*vigil.Alert
	for _, a := range s.alerts {
		if f.PatientID != "" && a.PatientID != f.PatientID {
			continue
		}
		if len(f.States) > 0 && !slices.Contains(f.States, a.State) {
			continue
		}
		out = append(out, cloneAlert(a))
	}
	slices.SortFunc(out, func(a, b *vigil.Alert) int {
		if c := b.Raised.Compare(a.Raised); c != 0 {
			return c
		}
		return -1 * compareStrings(a.ID, b.ID)
	})
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// restoringStore adds the optional restore interface to memStore.
type restoringStore struct{ *memStore }

func (s restoringStore) FindPatients(_ context.Context, f vigil.PatientFilter) ([]*vigil.Patient, int, error) {
	ps := s.patients
	if f.Offset >= len(ps) {
		return nil, len(ps), nil
	}
	ps = ps[f.Offset:]
	if f.Limit > 0 && len(ps) > f.Limit {
		ps = ps[:f.Limit]
	}
	return ps, len(s.patients), nil
}

func (s restoringStore) LatestObservations(_ context.Context, patientID string, codes []string, max int) (map[string][]*vigil.Observation, error) {
	out := make(map[string][]*vigil.Observation)
	for _, c := range codes {
		obs := s.obs[patientID][c]
		if len(obs) > max {
			obs = obs[:max]
		}
		if len(obs) > 0 {
			out[c] = obs
		}
	}
	return out, nil
}
