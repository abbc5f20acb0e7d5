package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-iomt/vigil"
)

// The embedded store (internal/pebble) and the authenticator
// (internal/auth) were being written by other engineers when these tests
// were; until they are in the tree the tests use the small in-memory
// versions below, which follow the documented contracts of
// vigil.Store and auth.Authenticator for the methods the web app uses.

// memStore is an in-memory vigil.Store. Methods the web app and the
// alert engine never call are left to the embedded nil interface (they
// panic if called).
type memStore struct {
	vigil.Store

	mu       sync.Mutex
	patients map[string]*vigil.Patient
	users    map[string]*vigil.User
	tokens   map[string]*vigil.Token
	alerts   map[string]*vigil.Alert
	obs      map[string][]*vigil.Observation // patient → all observations
	seen     map[string]bool                 // device \x00 reading id
}

func newMemStore() *memStore {
	return &memStore{
		patients: make(map[string]*vigil.Patient),
		users:    make(map[string]*vigil.User),
		tokens:   make(map[string]*vigil.Token),
		alerts:   make(map[string]*vigil.Alert),
		obs:      make(map[string][]*vigil.Observation),
		seen:     make(map[string]bool),
	}
}

func (s *memStore) CreatePatient(_ context.Context, p *vigil.Patient) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.patients[p.ID]; ok {
		return vigil.Errorf(vigil.ECONFLICT, "patient exists")
	}
	p.Version = 1
	c := *p
	s.patients[p.ID] = &c
	return nil
}

func (s *memStore) FindPatientByID(_ context.Context, id string) (*vigil.Patient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.patients[id]
	if !ok {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "patient not found")
	}
	c := *p
	return &c, nil
}

func (s *memStore) FindPatients(_ context.Context, f vigil.PatientFilter) ([]*vigil.Patient, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []*vigil.Patient
	for _, p := range s.patients {
		c := *p
		all = append(all, &c)
	}
	slices.SortFunc(all, func(a, b *vigil.Patient) int { return strings.Compare(a.ID, b.ID) })
	total := len(all)
	if f.Offset >= total {
		return nil, total, nil
	}
	all = all[f.Offset:]
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	if len(all) > limit {
		all = all[:limit]
	}
	return all, total, nil
}

func (s *memStore) CreateUser(_ context.Context, u *vigil.User) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[u.ID]; ok {
		return vigil.Errorf(vigil.ECONFLICT, "user exists")
	}
	c := *u
	s.users[u.ID] = &c
	return nil
}

func (s *memStore) FindUserByID(_ context.Context, id string) (*vigil.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[id]
	if !ok {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "user not found")
	}
	c := *u
	return &c, nil
}

func (s *memStore) CreateToken(_ context.Context, t *vigil.Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tokens[t.ID]; ok {
		return vigil.Errorf(vigil.ECONFLICT, "token exists")
	}
	c := *t
	s.tokens[t.ID] = &c
	return nil
}

func (s *memStore) FindTokenByID(_ context.Context, id string) (*vigil.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[id]
	if !ok {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "token not found")
	}
	c := *t
	return &c, nil
}

func (s *memStore) DeleteToken(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, id)
	return nil
}

func (s *memStore) AppendReadings(_ context.Context, rs []*vigil.Reading) ([]vigil.AppendResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]vigil.AppendResult, len(rs))
	for i, r := range rs {
		k := r.DeviceID + "\x00" + r.ID
		if s.seen[k] {
			out[i].Duplicate = true
			continue
		}
		s.seen[k] = true
		for j, m := range r.Values {
			s.obs[r.PatientID] = append(s.obs[r.PatientID], &vigil.Observation{
				ID: k + "\x00" + string(rune('0'+j)), PatientID: r.PatientID, DeviceID: r.DeviceID,
				Code: m.Code, Value: m.Value, Unit: m.Unit, Time: r.Time, Received: r.Received,
			})
		}
	}
	return out, nil
}

// LatestObservations returns, per code, the newest max observations; a
// LOINCBPPanel code gets panels built from systolic and diastolic values
// of the same device and time, as the real store returns them.
func (s *memStore) LatestObservations(_ context.Context, patientID string, codes []string, max int) (map[string][]*vigil.Observation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := slices.Clone(s.obs[patientID])
	slices.SortStableFunc(all, func(a, b *vigil.Observation) int { return b.Time.Compare(a.Time) })
	out := make(map[string][]*vigil.Observation)
	for _, code := range codes {
		var got []*vigil.Observation
		for _, o := range all {
			if len(got) == max {
				break
			}
			switch {
			case code == vigil.LOINCBPPanel && o.Code == vigil.LOINCSystolic:
				panel := &vigil.Observation{ID: o.ID, PatientID: o.PatientID, DeviceID: o.DeviceID, Code: vigil.LOINCBPPanel,
					Unit: o.Unit, Time: o.Time, Received: o.Received,
					Components: []vigil.Measurement{{Code: o.Code, Value: o.Value, Unit: o.Unit}}}
				for _, d := range all {
					if d.Code == vigil.LOINCDiastolic && d.DeviceID == o.DeviceID && d.Time.Equal(o.Time) {
						panel.Components = append(panel.Components, vigil.Measurement{Code: d.Code, Value: d.Value, Unit: d.Unit})
					}
				}
				got = append(got, panel)
			case o.Code == code && code != vigil.LOINCSystolic && code != vigil.LOINCDiastolic:
				c := *o
				got = append(got, &c)
			}
		}
		if len(got) > 0 {
			out[code] = got
		}
	}
	return out, nil
}

func (s *memStore) SaveAlert(_ context.Context, a *vigil.Alert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *a
	c.History = slices.Clone(a.History)
	s.alerts[a.ID] = &c
	return nil
}

func (s *memStore) FindAlertByID(_ context.Context, id string) (*vigil.Alert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.alerts[id]
	if !ok {
		return nil, vigil.Errorf(vigil.ENOTFOUND, "alert not found")
	}
	c := *a
	return &c, nil
}

func (s *memStore) FindAlerts(_ context.Context, f vigil.AlertFilter) ([]*vigil.Alert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*vigil.Alert
	for _, a := range s.alerts {
		if (f.PatientID == "" || a.PatientID == f.PatientID) && (len(f.States) == 0 || slices.Contains(f.States, a.State)) {
			c := *a
			out = append(out, &c)
		}
	}
	slices.SortFunc(out, func(a, b *vigil.Alert) int { return b.Raised.Compare(a.Raised) })
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (s *memStore) Close() error { return nil }

// testAuth implements Authenticator over the store's users and tokens:
// passwords are kept as "sha256$<hex>" (test only; the real one uses
// argon2id) and tokens as "vgl_<id>_<secret>" with only the secret's
// SHA-256 stored.
type testAuth struct {
	store *memStore
	now   func() time.Time
}

func passwordHash(pw string) string {
	h := sha256.Sum256([]byte(pw))
	return "sha256$" + hex.EncodeToString(h[:])
}

func (a *testAuth) Login(ctx context.Context, userID, password string) (*vigil.User, error) {
	u, err := a.store.FindUserByID(ctx, userID)
	if err != nil || u.PasswordHash == "" ||
		subtle.ConstantTimeCompare([]byte(u.PasswordHash), []byte(passwordHash(password))) != 1 {
		return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "wrong user name or password")
	}
	return u, nil
}

func (a *testAuth) IssueToken(ctx context.Context, userID, kind, name string, ttl time.Duration) (string, *vigil.Token, error) {
	id, secret := make([]byte, 8), make([]byte, 32)
	_, _ = rand.Read(id)
	_, _ = rand.Read(secret)
	sum := sha256.Sum256([]byte(hex.EncodeToString(secret)))
	t := &vigil.Token{ID: hex.EncodeToString(id), Hash: sum[:], UserID: userID, Name: name, Kind: kind, Created: a.now()}
	if ttl > 0 {
		t.Expires = a.now().Add(ttl)
	}
	if err := a.store.CreateToken(ctx, t); err != nil {
		return "", nil, err
	}
	return "vgl_" + t.ID + "_" + hex.EncodeToString(secret), t, nil
}

func (a *testAuth) Principal(ctx context.Context, token string) (*vigil.Principal, error) {
	bad := vigil.Errorf(vigil.EUNAUTHORIZED, "invalid token")
	rest, ok := strings.CutPrefix(token, "vgl_")
	id, secret, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 {
		return nil, bad
	}
	t, err := a.store.FindTokenByID(ctx, id)
	if err != nil {
		return nil, bad
	}
	sum := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(sum[:], t.Hash) != 1 || (!t.Expires.IsZero() && !a.now().Before(t.Expires)) {
		return nil, bad
	}
	u, err := a.store.FindUserByID(ctx, t.UserID)
	if err != nil {
		return nil, bad
	}
	return &vigil.Principal{UserID: u.ID, Role: u.Role, PatientID: u.PatientID}, nil
}

func (a *testAuth) RevokeToken(ctx context.Context, id string) error {
	return a.store.DeleteToken(ctx, id)
}
