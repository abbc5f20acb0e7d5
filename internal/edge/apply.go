package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Local is what Apply writes on the edge.
type Local interface {
	Registry
	Assignments(ctx context.Context, deviceID string) ([]vigil.Assignment, error)
}

// Hooks let the running edge take a change into force at once.
type Hooks struct {
	// SaveRule stores and puts in force a rule (the alert engine's).
	SaveRule func(ctx context.Context, r vigil.Rule) error
	// DeviceChanged drops what is cached about a device (credentials,
	// assignments).
	DeviceChanged func(id string)
	// PatientChanged takes a patient's alert limits into force.
	PatientChanged func(p *vigil.Patient)
}

// Changes counts what Apply changed.
type Changes struct {
	Patients, Devices, Assignments, Rules, Mappings int
}

// Apply brings the edge's registry, rules and mappings to the bundle's.
// It only adds and updates: what the server no longer lists stays (its
// history is the edge's record), but a device no longer assigned to a
// served patient has its assignment closed, so its readings are refused.
func Apply(ctx context.Context, st Local, b *Bundle, h Hooks) (Changes, error) {
	var c Changes
	for _, p := range b.Patients {
		old, err := st.FindPatientByID(ctx, p.ID)
		switch {
		case vigil.ErrorCode(err) == vigil.ENOTFOUND:
			q := *p
			if err := st.CreatePatient(ctx, &q); err != nil {
				return c, fmt.Errorf("patient %s: %w", p.ID, err)
			}
		case err != nil:
			return c, err
		case samePatient(old, p):
			continue
		default:
			q := *p
			if err := st.UpdatePatient(ctx, &q, 0); err != nil {
				return c, fmt.Errorf("patient %s: %w", p.ID, err)
			}
		}
		c.Patients++
		if h.PatientChanged != nil {
			h.PatientChanged(p)
		}
	}
	for i := range b.Devices {
		d := b.Devices[i].Get()
		old, err := st.FindDeviceByID(ctx, d.ID)
		switch {
		case vigil.ErrorCode(err) == vigil.ENOTFOUND:
			q := *d
			if err := st.CreateDevice(ctx, &q); err != nil {
				return c, fmt.Errorf("device %s: %w", d.ID, err)
			}
		case err != nil:
			return c, err
		case sameDevice(old, d):
			continue
		default:
			q := *d
			q.LastSeen = old.LastSeen
			if err := st.UpdateDevice(ctx, &q, 0); err != nil {
				return c, fmt.Errorf("device %s: %w", d.ID, err)
			}
		}
		c.Devices++
		if h.DeviceChanged != nil {
			h.DeviceChanged(d.ID)
		}
	}
	n, err := applyAssignments(ctx, st, b.Assignments, h)
	c.Assignments = n
	if err != nil {
		return c, err
	}
	for _, r := range b.Rules {
		old, err := st.FindRule(ctx, r.ID, 0)
		if err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
			return c, err
		}
		if old != nil && old.Title == r.Title && old.Expr == r.Expr && old.ForSeconds == r.ForSeconds && old.Priority == r.Priority && old.Enabled == r.Enabled {
			continue
		}
		q := *r
		q.Note = fmt.Sprintf("from the upstream server (its version %d, saved by %s)", r.Version, r.SavedBy)
		q.SavedBy = "upstream"
		if h.SaveRule != nil {
			err = h.SaveRule(ctx, q)
		} else {
			err = st.SaveRule(ctx, &q)
		}
		if err != nil {
			return c, fmt.Errorf("rule %s: %w", r.ID, err)
		}
		c.Rules++
	}
	for _, m := range b.Mappings {
		old, err := st.FindMapping(ctx, m.ID, 0)
		if err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
			return c, err
		}
		if old != nil && jsonEqual(old.DeviceTemplate, m.DeviceTemplate) && jsonEqual(old.FhirTemplate, m.FhirTemplate) &&
			reflect.DeepEqual(old.Devices, m.Devices) && reflect.DeepEqual(old.Kinds, m.Kinds) {
			continue
		}
		q := *m
		q.SavedBy = "upstream"
		if err := st.SaveMapping(ctx, &q); err != nil {
			return c, fmt.Errorf("mapping %s: %w", m.ID, err)
		}
		c.Mappings++
	}
	return c, nil
}

// applyAssignments replays the server's assignments of each device that
// the edge does not have yet, in time order.
func applyAssignments(ctx context.Context, st Local, as []vigil.Assignment, h Hooks) (int, error) {
	byDevice := map[string][]vigil.Assignment{}
	var order []string
	for _, a := range as {
		if _, ok := byDevice[a.DeviceID]; !ok {
			order = append(order, a.DeviceID)
		}
		byDevice[a.DeviceID] = append(byDevice[a.DeviceID], a)
	}
	n := 0
	for _, did := range order {
		local, err := st.Assignments(ctx, did)
		if err != nil {
			return n, err
		}
		var latest *vigil.Assignment
		if len(local) > 0 {
			latest = &local[len(local)-1]
		}
		changed := false
		for _, a := range byDevice[did] {
			switch {
			case latest != nil && a.From.Before(latest.From):
				continue // history the edge already has (or predates it)
			case latest != nil && a.From.Equal(latest.From) && a.PatientID == latest.PatientID:
				if !a.To.IsZero() && latest.To.IsZero() {
					if err := st.AssignDevice(ctx, did, "", a.To); err != nil {
						return n, fmt.Errorf("unassign device %s: %w", did, err)
					}
					changed = true
				}
			default:
				if err := st.AssignDevice(ctx, did, a.PatientID, a.From); err != nil {
					return n, fmt.Errorf("assign device %s: %w", did, err)
				}
				if !a.To.IsZero() {
					if err := st.AssignDevice(ctx, did, "", a.To); err != nil {
						return n, fmt.Errorf("unassign device %s: %w", did, err)
					}
				}
				changed = true
			}
			latest = &a
		}
		if changed {
			n++
			if h.DeviceChanged != nil {
				h.DeviceChanged(did)
			}
		}
	}
	return n, nil
}

func samePatient(a, b *vigil.Patient) bool {
	x, y := *a, *b
	x.Version, x.Created, x.Updated = 0, time.Time{}, time.Time{}
	y.Version, y.Created, y.Updated = 0, time.Time{}, time.Time{}
	return reflect.DeepEqual(jsonOf(x), jsonOf(y))
}

func sameDevice(a, b *vigil.Device) bool {
	x, y := *a, *b
	for _, d := range []*vigil.Device{&x, &y} {
		d.Version, d.Created, d.Updated, d.LastSeen, d.Commands, d.CommandSeq = 0, time.Time{}, time.Time{}, time.Time{}, nil, 0
	}
	return x.SecretHash == y.SecretHash && reflect.DeepEqual(jsonOf(x), jsonOf(y))
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return string(a) == string(b)
	}
	return reflect.DeepEqual(x, y)
}
