package pebble

import (
	"bytes"
	"context"
	"slices"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/storerec"
)

// Records whose JSON form in the domain package hides secrets are stored
// through these wrappers.
const defaultLimit = storerec.DefaultLimit

func (s *Store) CreatePatient(ctx context.Context, p *vigil.Patient) error {
	if !vigil.ValidID(p.ID) {
		return vigil.FieldErrorf("id", "invalid", "patient id %q: use letters, digits and '-', up to 48 characters", p.ID)
	}
	return s.create(ctx, key(pPatient, p.ID), "patient "+p.ID, func() any {
		now := s.opts.Now().UTC()
		p.Version, p.Created, p.Updated = 1, now, now
		return p
	})
}

func (s *Store) UpdatePatient(ctx context.Context, p *vigil.Patient, version int) error {
	var old vigil.Patient
	return s.update(ctx, key(pPatient, p.ID), "patient "+p.ID, &old, func() (any, error) {
		if version != 0 && old.Version != version {
			return nil, vigil.Errorf(vigil.ECONFLICT, "patient %s was changed by someone else (version %d, not %d): reload and retry", p.ID, old.Version, version)
		}
		p.Version, p.Created, p.Updated = old.Version+1, old.Created, s.opts.Now().UTC()
		return p, nil
	})
}

func (s *Store) FindPatientByID(ctx context.Context, id string) (*vigil.Patient, error) {
	var p vigil.Patient
	if err := s.find(ctx, key(pPatient, id), "patient "+id, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func (s *Store) FindPatients(ctx context.Context, f vigil.PatientFilter) ([]*vigil.Patient, int, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, 0, err
	}
	if f.ID != "" {
		p, err := s.FindPatientByID(ctx, f.ID)
		if vigil.ErrorCode(err) == vigil.ENOTFOUND {
			return nil, 0, nil
		}
		if err != nil {
			return nil, 0, err
		}
		if !f.Matches(p) {
			return nil, 0, nil
		}
		return storerec.Page([]*vigil.Patient{p}, f.After, f.Offset, f.Limit, patientID)
	}
	var out []*vigil.Patient
	err := scan(s.db, prefixKey(pPatient), false, func(_, v []byte) (bool, error) {
		var p vigil.Patient
		if err := s.unmarshal(v, &p); err != nil {
			return false, err
		}
		if f.Matches(&p) {
			out = append(out, &p)
		}
		return true, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return storerec.Page(out, f.After, f.Offset, f.Limit, patientID)
}

func patientID(p *vigil.Patient) string { return p.ID }
func deviceID(d *vigil.Device) string   { return d.ID }

func (s *Store) CreateDevice(ctx context.Context, d *vigil.Device) error {
	if !vigil.ValidID(d.ID) {
		return vigil.FieldErrorf("id", "invalid", "device id %q: use letters, digits and '-', up to 48 characters", d.ID)
	}
	return s.create(ctx, key(pDevice, d.ID), "device "+d.ID, func() any {
		now := s.opts.Now().UTC()
		d.Version, d.Created, d.Updated = 1, now, now
		return storerec.NewDevice(d)
	})
}

func (s *Store) UpdateDevice(ctx context.Context, d *vigil.Device, version int) error {
	var old storerec.Device
	return s.update(ctx, key(pDevice, d.ID), "device "+d.ID, &old, func() (any, error) {
		if version != 0 && old.Version != version {
			return nil, vigil.Errorf(vigil.ECONFLICT, "device %s was changed by someone else (version %d, not %d): reload and retry", d.ID, old.Version, version)
		}
		d.Version, d.Created, d.Updated = old.Version+1, old.Created, s.opts.Now().UTC()
		return storerec.NewDevice(d), nil
	})
}

func (s *Store) FindDeviceByID(ctx context.Context, id string) (*vigil.Device, error) {
	var r storerec.Device
	if err := s.find(ctx, key(pDevice, id), "device "+id, &r); err != nil {
		return nil, err
	}
	return r.Get(), nil
}

func (s *Store) FindDevices(ctx context.Context, f vigil.DeviceFilter) ([]*vigil.Device, int, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, 0, err
	}
	var ids []string
	if f.PatientID != "" {
		as, err := s.PatientAssignments(ctx, f.PatientID)
		if err != nil {
			return nil, 0, err
		}
		for _, a := range as {
			if a.To.IsZero() && !slices.Contains(ids, a.DeviceID) {
				ids = append(ids, a.DeviceID)
			}
		}
		slices.Sort(ids)
	}
	var out []*vigil.Device
	add := func(v []byte) error {
		var r storerec.Device
		if err := s.unmarshal(v, &r); err != nil {
			return err
		}
		if (f.ID != "" && r.ID != f.ID) || (f.Serial != "" && r.Serial != f.Serial) {
			return nil
		}
		out = append(out, r.Get())
		return nil
	}
	if f.PatientID != "" {
		for _, id := range ids {
			v, ok, err := get(s.db, key(pDevice, id))
			if err != nil {
				return nil, 0, err
			}
			if ok {
				if err := add(v); err != nil {
					return nil, 0, err
				}
			}
		}
	} else {
		err := scan(s.db, prefixKey(pDevice), false, func(_, v []byte) (bool, error) { return true, add(v) })
		if err != nil {
			return nil, 0, err
		}
	}
	return storerec.Page(out, f.After, f.Offset, f.Limit, deviceID)
}

// AssignDevice assigns the device to the patient from the given time on,
// ending its current assignment then. Assigning a device to the patient it
// is already assigned to is a no-op. from must not be before the start of
// the current assignment (history is not rewritten): EINVALID.
func (s *Store) AssignDevice(ctx context.Context, deviceID, patientID string, from time.Time) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if from.IsZero() {
		return vigil.FieldErrorf("from", "required", "an assignment needs a start time")
	}
	from = from.UTC()
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if _, err := s.FindDeviceByID(ctx, deviceID); err != nil {
		return err
	}
	if patientID != "" {
		if _, err := s.FindPatientByID(ctx, patientID); err != nil {
			return err
		}
	}
	as, err := s.Assignments(ctx, deviceID)
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	if patientID == "" && (len(as) == 0 || !as[len(as)-1].To.IsZero()) {
		b.Close()
		return nil // nothing open to close
	}
	if n := len(as); n > 0 {
		last := as[n-1]
		if last.To.IsZero() && last.PatientID == patientID {
			b.Close()
			return nil
		}
		if !from.After(last.From) || (!last.To.IsZero() && from.Before(last.To)) {
			b.Close()
			return vigil.FieldErrorf("from", "overlaps", "device %s has an assignment from %s; a new one must start later", deviceID, last.From.Format(time.RFC3339))
		}
		if last.To.IsZero() {
			last.To = from
			if err := s.setJSON(b, assignKey(last), last); err != nil {
				b.Close()
				return err
			}
		}
	}
	if patientID == "" {
		return s.commitSync(b) // unassigned: the open assignment ends at from
	}
	a := vigil.Assignment{DeviceID: deviceID, PatientID: patientID, From: from}
	if err := s.setJSON(b, assignKey(a), a); err != nil {
		b.Close()
		return err
	}
	if err := b.Set(append(key(pPatAssign, patientID, deviceID), append([]byte{0}, be64(from.UnixNano())...)...), nil, nil); err != nil {
		b.Close()
		return err
	}
	return s.commitSync(b)
}

func assignKey(a vigil.Assignment) []byte {
	return append(prefixKey(pAssign, a.DeviceID), be64(a.From.UnixNano())...)
}

// Assignments returns the device's assignments, oldest first.
func (s *Store) Assignments(ctx context.Context, deviceID string) ([]vigil.Assignment, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var out []vigil.Assignment
	err := scan(s.db, prefixKey(pAssign, deviceID), false, func(_, v []byte) (bool, error) {
		var a vigil.Assignment
		if err := s.unmarshal(v, &a); err != nil {
			return false, err
		}
		out = append(out, a)
		return true, nil
	})
	return out, err
}

// PatientAssignments returns the patient's device assignments ordered by
// start time.
func (s *Store) PatientAssignments(ctx context.Context, patientID string) ([]vigil.Assignment, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var out []vigil.Assignment
	err := scan(s.db, prefixKey(pPatAssign, patientID), false, func(k, _ []byte) (bool, error) {
		rest := k[len(prefixKey(pPatAssign, patientID)):]
		i := bytes.IndexByte(rest, 0)
		if i < 0 || len(rest) != i+9 {
			return false, vigil.Errorf(vigil.EINTERNAL, "corrupt assignment index key")
		}
		deviceID := string(rest[:i])
		var a vigil.Assignment
		ok, err := s.getJSON(s.db, append(prefixKey(pAssign, deviceID), rest[i+1:]...), &a)
		if err != nil {
			return false, err
		}
		if ok {
			out = append(out, a)
		}
		return true, nil
	})
	slices.SortStableFunc(out, func(a, b vigil.Assignment) int { return a.From.Compare(b.From) })
	return out, err
}

func (s *Store) CreateUser(ctx context.Context, u *vigil.User) error {
	if !vigil.ValidID(u.ID) {
		return vigil.FieldErrorf("id", "invalid", "user id %q: use letters, digits and '-', up to 48 characters", u.ID)
	}
	return s.create(ctx, key(pUser, u.ID), "user "+u.ID, func() any {
		now := s.opts.Now().UTC()
		u.Version, u.Created, u.Updated = 1, now, now
		return storerec.NewUser(u)
	})
}

func (s *Store) UpdateUser(ctx context.Context, u *vigil.User, version int) error {
	var old storerec.User
	return s.update(ctx, key(pUser, u.ID), "user "+u.ID, &old, func() (any, error) {
		if version != 0 && old.Version != version {
			return nil, vigil.Errorf(vigil.ECONFLICT, "user %s was changed by someone else (version %d, not %d): reload and retry", u.ID, old.Version, version)
		}
		u.Version, u.Created, u.Updated = old.Version+1, old.Created, s.opts.Now().UTC()
		return storerec.NewUser(u), nil
	})
}

func (s *Store) FindUserByID(ctx context.Context, id string) (*vigil.User, error) {
	var r storerec.User
	if err := s.find(ctx, key(pUser, id), "user "+id, &r); err != nil {
		return nil, err
	}
	return r.Get(), nil
}

func (s *Store) FindUsers(ctx context.Context) ([]*vigil.User, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var out []*vigil.User
	err := scan(s.db, prefixKey(pUser), false, func(_, v []byte) (bool, error) {
		var r storerec.User
		if err := s.unmarshal(v, &r); err != nil {
			return false, err
		}
		out = append(out, r.Get())
		return true, nil
	})
	return out, err
}

func (s *Store) CreateToken(ctx context.Context, t *vigil.Token) error {
	if t.ID == "" {
		return vigil.FieldErrorf("id", "required", "a token needs an id")
	}
	return s.create(ctx, key(pToken, t.ID), "token "+t.ID, func() any {
		return storerec.NewToken(t)
	})
}

func (s *Store) FindTokenByID(ctx context.Context, id string) (*vigil.Token, error) {
	var r storerec.Token
	if err := s.find(ctx, key(pToken, id), "token", &r); err != nil {
		return nil, err
	}
	return r.Get(), nil
}

func (s *Store) DeleteToken(ctx context.Context, id string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if _, ok, err := get(s.db, key(pToken, id)); err != nil {
		return err
	} else if !ok {
		return vigil.Errorf(vigil.ENOTFOUND, "token %s not found", id)
	}
	b := s.db.NewBatch()
	b.Delete(key(pToken, id), nil)
	return s.commitSync(b)
}

// create stores the record made by rec under k unless k exists (ECONFLICT).
func (s *Store) create(ctx context.Context, k []byte, what string, rec func() any) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if _, ok, err := get(s.db, k); err != nil {
		return err
	} else if ok {
		return vigil.Errorf(vigil.ECONFLICT, "%s already exists", what)
	}
	b := s.db.NewBatch()
	if err := s.setJSON(b, k, rec()); err != nil {
		b.Close()
		return err
	}
	return s.commitSync(b)
}

// update reads k into old, asks next for the new record and stores it.
func (s *Store) update(ctx context.Context, k []byte, what string, old any, next func() (any, error)) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	ok, err := s.getJSON(s.db, k, old)
	if err != nil {
		return err
	}
	if !ok {
		return vigil.Errorf(vigil.ENOTFOUND, "%s not found", what)
	}
	rec, err := next()
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	if err := s.setJSON(b, k, rec); err != nil {
		b.Close()
		return err
	}
	return s.commitSync(b)
}

func (s *Store) find(ctx context.Context, k []byte, what string, v any) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	ok, err := s.getJSON(s.db, k, v)
	if err != nil {
		return err
	}
	if !ok {
		return vigil.Errorf(vigil.ENOTFOUND, "%s not found", what)
	}
	return nil
}
