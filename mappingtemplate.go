package vigil

import (
	"context"
	"encoding/json"
	"time"
)

// Mapping is a pair of Azure MedTech-compatible templates (device mapping
// and FHIR mapping) and the devices it applies to. Every save makes a new
// version; readings record nothing of it, but the previous versions stay
// readable for audit.
type Mapping struct {
	ID             string          `json:"id"`
	Version        int             `json:"version"`
	DeviceTemplate json.RawMessage `json:"deviceTemplate"`
	FhirTemplate   json.RawMessage `json:"fhirTemplate"`
	Devices        []string        `json:"devices,omitempty"` // device ids it applies to
	Kinds          []string        `json:"kinds,omitempty"`   // device kinds it applies to (a device binding wins)
	Saved          time.Time       `json:"saved"`
	SavedBy        string          `json:"savedBy,omitempty"`
}

// MappingStore keeps mapping templates.
type MappingStore interface {
	// SaveMapping stores m as the next version of m.ID (setting Version
	// and Saved).
	SaveMapping(ctx context.Context, m *Mapping) error
	// FindMapping returns the latest version (version 0) or the given one.
	FindMapping(ctx context.Context, id string, version int) (*Mapping, error)
	// FindMappings returns the latest version of every mapping.
	FindMappings(ctx context.Context) ([]*Mapping, error)
}
