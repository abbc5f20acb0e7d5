// Package edge is Vigil at the edge of the network (vigil edge): a ward
// gateway, a home hub or an ambulance runs the same ingest, mapping, rules
// and alerts as the server, keeps every reading in a durable outbox
// (internal/pebble Options.Outbox) and forwards it upstream over HTTPS
// with mutual TLS, deleting it only once the server has acknowledged it.
//
// Both halves live here: what the server does for an edge (Build the
// configuration Bundle of the patients the edge serves; Decode the
// readings it forwards) and what the edge does (Apply a Bundle, Forward
// the outbox, Sync the configuration). Wire formats: docs/edge.md.
package edge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/storerec"
)

// Bundle is an edge's configuration as the server sends it: the registry
// entries of the patients it serves and of their devices (with the
// devices' argon2id secret hashes, so the edge authenticates them itself),
// their assignments, and every rule and mapping template.
type Bundle struct {
	Edge string `json:"edge"`
	// Version identifies the content (SHA-256, hex, of everything below
	// Issued): the same configuration always has the same version, and the
	// server answers 304 to an edge that already has it.
	Version string    `json:"version"`
	Issued  time.Time `json:"issued"`
	// Scope is what the edge serves, as registered.
	Scope       vigil.EdgeScope    `json:"scope"`
	Patients    []*vigil.Patient   `json:"patients"`
	Devices     []storerec.Device  `json:"devices"`
	Assignments []vigil.Assignment `json:"assignments"`
	Rules       []*vigil.Rule      `json:"rules"`
	Mappings    []*vigil.Mapping   `json:"mappings"`
}

// Registry is what Build reads on the server.
type Registry interface {
	vigil.PatientStore
	vigil.DeviceStore
	vigil.RuleStore
	vigil.MappingStore
}

// EdgeDevice returns the registered edge gateway id, or an error that
// says what is wrong with it (EFORBIDDEN for a device that is not an edge
// or serves nobody).
func EdgeDevice(ctx context.Context, st vigil.DeviceStore, id string) (*vigil.Device, error) {
	d, err := st.FindDeviceByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if d.Kind != vigil.DeviceEdge {
		return nil, vigil.Errorf(vigil.EFORBIDDEN, "device %s is a %q, not an edge gateway (register it with --kind edge)", id, d.Kind)
	}
	if d.Serves == nil || (len(d.Serves.Wards) == 0 && len(d.Serves.Patients) == 0) {
		return nil, vigil.Errorf(vigil.EFORBIDDEN, "edge %s serves no ward or patient yet (vigil device add --kind edge --serves-ward W, or the admin API's serves)", id)
	}
	return d, nil
}

// Patients returns the patients the scope covers, by id.
func Patients(ctx context.Context, st vigil.PatientStore, scope *vigil.EdgeScope) ([]*vigil.Patient, error) {
	byID := map[string]*vigil.Patient{}
	for _, w := range scope.Wards {
		after := ""
		for {
			ps, _, err := st.FindPatients(ctx, vigil.PatientFilter{Ward: w, After: after, Limit: 1000})
			if err != nil {
				return nil, err
			}
			for _, p := range ps {
				byID[p.ID] = p
			}
			if len(ps) < 1000 {
				break
			}
			after = ps[len(ps)-1].ID
		}
	}
	for _, id := range scope.Patients {
		p, err := st.FindPatientByID(ctx, id)
		if vigil.ErrorCode(err) == vigil.ENOTFOUND {
			continue
		}
		if err != nil {
			return nil, err
		}
		byID[p.ID] = p
	}
	out := make([]*vigil.Patient, 0, len(byID))
	for _, p := range byID {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Build assembles the configuration of the edge gateway id.
func Build(ctx context.Context, st Registry, id string, now time.Time) (*Bundle, error) {
	ed, err := EdgeDevice(ctx, st, id)
	if err != nil {
		return nil, err
	}
	b := &Bundle{Edge: id, Issued: now.UTC(), Scope: *ed.Serves}
	if b.Patients, err = Patients(ctx, st, ed.Serves); err != nil {
		return nil, err
	}
	inScope := map[string]bool{}
	for _, p := range b.Patients {
		inScope[p.ID] = true
	}
	devices := map[string]bool{}
	for _, p := range b.Patients {
		as, err := st.PatientAssignments(ctx, p.ID)
		if err != nil {
			return nil, err
		}
		for _, a := range as {
			devices[a.DeviceID] = true
		}
	}
	ids := make([]string, 0, len(devices))
	for d := range devices {
		ids = append(ids, d)
	}
	slices.Sort(ids)
	for _, did := range ids {
		d, err := st.FindDeviceByID(ctx, did)
		if err != nil {
			return nil, err
		}
		// What changes with every connection or command stays on the server.
		d.LastSeen, d.Commands, d.CommandSeq, d.EnrollHash, d.EnrollExpires = time.Time{}, nil, 0, nil, time.Time{}
		b.Devices = append(b.Devices, storerec.NewDevice(d))
		as, err := st.Assignments(ctx, did)
		if err != nil {
			return nil, err
		}
		for _, a := range as {
			if inScope[a.PatientID] {
				b.Assignments = append(b.Assignments, a)
			}
		}
	}
	if b.Rules, err = st.FindRules(ctx); err != nil {
		return nil, err
	}
	if b.Mappings, err = st.FindMappings(ctx); err != nil {
		return nil, err
	}
	b.Version = b.digest()
	return b, nil
}

// digest is the content's version: what an edge applies, not when.
func (b *Bundle) digest() string {
	c := *b
	c.Version, c.Issued = "", time.Time{}
	// Record versions and times of the server's own bookkeeping do not
	// change what the edge does.
	v, _ := json.Marshal(c)
	sum := sha256.Sum256(v)
	return hex.EncodeToString(sum[:16])
}

// Verify checks that the bundle is for edge id and that its version
// matches its content.
func (b *Bundle) Verify(id string) error {
	if b.Edge != id {
		return fmt.Errorf("the upstream server sent the configuration of edge %q, not of %q: check --id and the certificate", b.Edge, id)
	}
	if d := b.digest(); d != b.Version {
		return fmt.Errorf("configuration version %s does not match its content (%s): refused", b.Version, d)
	}
	return nil
}
