package medtech

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/ingest"
	"github.com/vigil-iomt/vigil/internal/mapping"
)

// Format is the vigil.Message format of payloads mapped by templates:
// MQTT topic vigil/v1/devices/{id}/medtech, HTTP POST
// /api/v1/devices/{id}/medtech.
const Format = "medtech"

// Store is what the decoder reads.
type Store interface {
	FindDeviceByID(ctx context.Context, id string) (*vigil.Device, error)
	FindMappings(ctx context.Context) ([]*vigil.Mapping, error)
}

// Decoder maps payloads with the templates bound to the sending device
// (by device id, else by device kind).
type Decoder struct {
	st    Store
	table *mapping.Table
	mu    sync.Mutex
	cache map[string]compiled // by mapping id and version
}

type compiled struct {
	dt *DeviceTemplate
	ft *FhirTemplate
}

// NewDecoder returns a decoder over st.
func NewDecoder(st Store, table *mapping.Table) *Decoder {
	return &Decoder{st: st, table: table, cache: make(map[string]compiled)}
}

// Decode implements ingest.Decoder.
func (d *Decoder) Decode(ctx context.Context, m vigil.Message, maxReadings int) ([]ingest.Raw, error) {
	dev, err := d.st.FindDeviceByID(ctx, m.DeviceID)
	if err != nil {
		return nil, err
	}
	ms, err := d.st.FindMappings(ctx)
	if err != nil {
		return nil, vigil.Errorf(vigil.EUNAVAILABLE, "cannot read mapping templates")
	}
	var chosen *vigil.Mapping
	for _, mp := range ms {
		if slices.Contains(mp.Devices, dev.ID) {
			chosen = mp
			break
		}
		if chosen == nil && slices.Contains(mp.Kinds, dev.Kind) {
			chosen = mp
		}
	}
	if chosen == nil {
		return nil, vigil.FieldErrorf("", "no-mapping", "no mapping template is bound to device %s or its kind %s (vigil mapping put)", dev.ID, dev.Kind)
	}
	c, err := d.compile(chosen)
	if err != nil {
		return nil, vigil.FieldErrorf("mapping", "bad-mapping", "mapping %s v%d: %v", chosen.ID, chosen.Version, err)
	}
	meas, err := c.dt.Normalize(m.Payload)
	if err != nil {
		return nil, vigil.FieldErrorf("", "unmappable", "mapping %s v%d: %v", chosen.ID, chosen.Version, err)
	}
	if len(meas) == 0 {
		return nil, vigil.FieldErrorf("", "unmappable", "mapping %s v%d: no template matches this message", chosen.ID, chosen.Version)
	}
	if len(meas) > maxReadings {
		return nil, vigil.FieldErrorf("", "too-many", "%d measurements in one message; at most %d", len(meas), maxReadings)
	}
	out := make([]ingest.Raw, len(meas))
	for i, mm := range meas {
		prefix := fmt.Sprintf("measurements[%d].", i)
		h := sha256.New()
		fmt.Fprintf(h, "%s\x00%d\x00", mm.Type, mm.OccurrenceTimeUTC.UnixNano())
		for _, p := range mm.Properties {
			fmt.Fprintf(h, "%s=%s\x00", p.Name, p.Value)
		}
		r := ingest.Raw{ID: "mt-" + hex.EncodeToString(h.Sum(nil)[:16]), Time: mm.OccurrenceTimeUTC, Field: prefix}
		vs, err := c.ft.Map(mm)
		if err != nil {
			r.Err = vigil.FieldErrorf(prefix+"type", "unmappable", "%v", err)
			out[i] = r
			continue
		}
		for _, v := range vs {
			r.Values = append(r.Values, ingest.RawValue{System: v.System, Code: v.Code, Unit: v.Unit, Value: v.Value, Text: v.Text, Concept: v.Concept, Sampling: v.Sampling, Field: prefix + v.Field})
		}
		out[i] = r
	}
	return out, nil
}

func (d *Decoder) compile(m *vigil.Mapping) (compiled, error) {
	key := fmt.Sprintf("%s@%d", m.ID, m.Version)
	d.mu.Lock()
	c, ok := d.cache[key]
	d.mu.Unlock()
	if ok {
		return c, nil
	}
	dt, err := ParseDeviceTemplate(m.DeviceTemplate)
	if err != nil {
		return c, err
	}
	ft, err := ParseFhirTemplate(m.FhirTemplate)
	if err != nil {
		return c, err
	}
	c = compiled{dt, ft}
	d.mu.Lock()
	d.cache[key] = c
	d.mu.Unlock()
	return c, nil
}
