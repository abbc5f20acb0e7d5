package pgstore

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/storerec"
)

const defaultLimit = storerec.DefaultLimit

func invalidID(what, id string) error {
	return vigil.FieldErrorf("id", "invalid", "%s id %q: use letters, digits and '-', up to 48 characters", what, id)
}

func conflict(what, id string, have, want int) error {
	return vigil.Errorf(vigil.ECONFLICT, "%s %s was changed by someone else (version %d, not %d): reload and retry", what, id, have, want)
}

func (s *Store) CreatePatient(ctx context.Context, p *vigil.Patient) error {
	if !vigil.ValidID(p.ID) {
		return invalidID("patient", p.ID)
	}
	now := s.opts.Now().UTC()
	p.Version, p.Created, p.Updated = 1, now, now
	return s.create(ctx, "patients", p.ID, "patient "+p.ID, p)
}

func (s *Store) UpdatePatient(ctx context.Context, p *vigil.Patient, version int) error {
	var old vigil.Patient
	return s.update(ctx, "patients", p.ID, "patient "+p.ID, &old, func() (any, error) {
		if version != 0 && old.Version != version {
			return nil, conflict("patient", p.ID, old.Version, version)
		}
		p.Version, p.Created, p.Updated = old.Version+1, old.Created, s.opts.Now().UTC()
		return p, nil
	})
}

func (s *Store) FindPatientByID(ctx context.Context, id string) (*vigil.Patient, error) {
	var p vigil.Patient
	if err := s.find(ctx, "patients", id, "patient "+id, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// FindPatients matches with vigil.PatientFilter.Matches, as every store.
func (s *Store) FindPatients(ctx context.Context, f vigil.PatientFilter) ([]*vigil.Patient, int, error) {
	q, args := "SELECT doc FROM patients ORDER BY id", []any{}
	switch {
	case f.ID != "":
		q, args = "SELECT doc FROM patients WHERE id = $1", []any{f.ID}
	case f.Identifier != "":
		q, args = "SELECT doc FROM patients WHERE doc->>'identifier' = $1 ORDER BY id", []any{f.Identifier}
	case f.Ward != "":
		q, args = "SELECT doc FROM patients WHERE doc->>'ward' = $1 ORDER BY id", []any{f.Ward}
	}
	all, err := docs[vigil.Patient](ctx, s, q, args...)
	if err != nil {
		return nil, 0, err
	}
	var out []*vigil.Patient
	for _, p := range all {
		if f.Matches(p) {
			out = append(out, p)
		}
	}
	return storerec.Page(out, f.After, f.Offset, f.Limit, func(p *vigil.Patient) string { return p.ID })
}

func (s *Store) CreateDevice(ctx context.Context, d *vigil.Device) error {
	if !vigil.ValidID(d.ID) {
		return invalidID("device", d.ID)
	}
	now := s.opts.Now().UTC()
	d.Version, d.Created, d.Updated = 1, now, now
	return s.create(ctx, "devices", d.ID, "device "+d.ID, storerec.NewDevice(d), "serial", d.Serial)
}

func (s *Store) UpdateDevice(ctx context.Context, d *vigil.Device, version int) error {
	var old storerec.Device
	return s.update(ctx, "devices", d.ID, "device "+d.ID, &old, func() (any, error) {
		if version != 0 && old.Version != version {
			return nil, conflict("device", d.ID, old.Version, version)
		}
		d.Version, d.Created, d.Updated = old.Version+1, old.Created, s.opts.Now().UTC()
		return storerec.NewDevice(d), nil
	}, "serial", d.Serial)
}

func (s *Store) FindDeviceByID(ctx context.Context, id string) (*vigil.Device, error) {
	var r storerec.Device
	if err := s.find(ctx, "devices", id, "device "+id, &r); err != nil {
		return nil, err
	}
	return r.Get(), nil
}

func (s *Store) FindDevices(ctx context.Context, f vigil.DeviceFilter) ([]*vigil.Device, int, error) {
	q, args := "SELECT doc FROM devices WHERE ($1 = '' OR id = $1) AND ($2 = '' OR serial = $2)", []any{f.ID, f.Serial}
	if f.PatientID != "" {
		q += " AND id IN (SELECT device FROM assignments WHERE patient = $3 AND to_ns IS NULL)"
		args = append(args, f.PatientID)
	}
	recs, err := docs[storerec.Device](ctx, s, q+" ORDER BY id", args...)
	if err != nil {
		return nil, 0, err
	}
	out := make([]*vigil.Device, len(recs))
	for i, r := range recs {
		out[i] = r.Get()
	}
	return storerec.Page(out, f.After, f.Offset, f.Limit, func(d *vigil.Device) string { return d.ID })
}

// AssignDevice assigns the device to the patient from the given time on,
// ending its current assignment then (as the embedded store: assigning it
// to the patient it is on is a no-op; from must come after the current
// assignment's start).
func (s *Store) AssignDevice(ctx context.Context, deviceID, patientID string, from time.Time) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if from.IsZero() {
		return vigil.FieldErrorf("from", "required", "an assignment needs a start time")
	}
	from = from.UTC()
	if _, err := s.FindDeviceByID(ctx, deviceID); err != nil {
		return err
	}
	if patientID != "" {
		if _, err := s.FindPatientByID(ctx, patientID); err != nil {
			return err
		}
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		// Assignments of one device serialize on its row.
		if _, err := tx.Exec(ctx, "SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", deviceID); err != nil {
			return err
		}
		var last vigil.Assignment
		var lastFrom int64
		var lastTo *int64
		err := tx.QueryRow(ctx, "SELECT patient, from_ns, to_ns FROM assignments WHERE device = $1 ORDER BY from_ns DESC LIMIT 1", deviceID).Scan(&last.PatientID, &lastFrom, &lastTo)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if patientID == "" {
				return nil // nothing open to close
			}
		case err != nil:
			return err
		default:
			last.From = time.Unix(0, lastFrom).UTC()
			if patientID == "" && lastTo != nil {
				return nil
			}
			if lastTo == nil && last.PatientID == patientID {
				return nil
			}
			if !from.After(last.From) || (lastTo != nil && from.UnixNano() < *lastTo) {
				return vigil.FieldErrorf("from", "overlaps", "device %s has an assignment from %s; a new one must start later", deviceID, last.From.Format(time.RFC3339))
			}
			if lastTo == nil {
				if _, err := tx.Exec(ctx, "UPDATE assignments SET to_ns = $3 WHERE device = $1 AND from_ns = $2", deviceID, lastFrom, from.UnixNano()); err != nil {
					return err
				}
			}
		}
		if patientID == "" {
			return nil // unassigned: the open assignment ends at from
		}
		_, err = tx.Exec(ctx, "INSERT INTO assignments (device, patient, from_ns) VALUES ($1, $2, $3)", deviceID, patientID, from.UnixNano())
		return err
	})
}

func (s *Store) assignments(ctx context.Context, col, id string) ([]vigil.Assignment, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, "SELECT device, patient, from_ns, to_ns FROM assignments WHERE "+col+" = $1 ORDER BY from_ns, device", id)
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	var out []vigil.Assignment
	for rows.Next() {
		var a vigil.Assignment
		var from int64
		var to *int64
		if err := rows.Scan(&a.DeviceID, &a.PatientID, &from, &to); err != nil {
			return nil, storeErr(err)
		}
		a.From = time.Unix(0, from).UTC()
		if to != nil {
			a.To = time.Unix(0, *to).UTC()
		}
		out = append(out, a)
	}
	return out, storeErr(rows.Err())
}

// Assignments returns the device's assignments, oldest first.
func (s *Store) Assignments(ctx context.Context, deviceID string) ([]vigil.Assignment, error) {
	return s.assignments(ctx, "device", deviceID)
}

// PatientAssignments returns the patient's device assignments by start.
func (s *Store) PatientAssignments(ctx context.Context, patientID string) ([]vigil.Assignment, error) {
	return s.assignments(ctx, "patient", patientID)
}

func (s *Store) CreateUser(ctx context.Context, u *vigil.User) error {
	if !vigil.ValidID(u.ID) {
		return invalidID("user", u.ID)
	}
	now := s.opts.Now().UTC()
	u.Version, u.Created, u.Updated = 1, now, now
	return s.create(ctx, "users", u.ID, "user "+u.ID, storerec.NewUser(u))
}

func (s *Store) UpdateUser(ctx context.Context, u *vigil.User, version int) error {
	var old storerec.User
	return s.update(ctx, "users", u.ID, "user "+u.ID, &old, func() (any, error) {
		if version != 0 && old.Version != version {
			return nil, conflict("user", u.ID, old.Version, version)
		}
		u.Version, u.Created, u.Updated = old.Version+1, old.Created, s.opts.Now().UTC()
		return storerec.NewUser(u), nil
	})
}

func (s *Store) FindUserByID(ctx context.Context, id string) (*vigil.User, error) {
	var r storerec.User
	if err := s.find(ctx, "users", id, "user "+id, &r); err != nil {
		return nil, err
	}
	return r.Get(), nil
}

func (s *Store) FindUsers(ctx context.Context) ([]*vigil.User, error) {
	recs, err := docs[storerec.User](ctx, s, "SELECT doc FROM users ORDER BY id")
	out := make([]*vigil.User, len(recs))
	for i, r := range recs {
		out[i] = r.Get()
	}
	return out, err
}

func (s *Store) CreateToken(ctx context.Context, t *vigil.Token) error {
	if t.ID == "" {
		return vigil.FieldErrorf("id", "required", "a token needs an id")
	}
	return s.create(ctx, "tokens", t.ID, "token "+t.ID, storerec.NewToken(t))
}

func (s *Store) FindTokenByID(ctx context.Context, id string) (*vigil.Token, error) {
	var r storerec.Token
	if err := s.find(ctx, "tokens", id, "token", &r); err != nil {
		return nil, err
	}
	return r.Get(), nil
}

func (s *Store) DeleteToken(ctx context.Context, id string) error {
	return s.deleteByID(ctx, "tokens", id, "token "+id)
}
