package web

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
)

// DeviceState is what Vigil knows live of a device (the node fills it
// from the broker and the alerting engine).
type DeviceState struct {
	// LastSeen is Vigil's receive time of its newest reading since Vigil
	// started; zero when it has not reported since.
	LastSeen time.Time
	// Battery is the charge in percent it last reported, at BatteryAt.
	Battery   *float64
	BatteryAt time.Time
	// SilentAfter is how long the device may stay silent before a "device
	// silent" alert: streaming monitors and wearables; 0 for devices
	// that report now and then (a BP cuff, a scale).
	SilentAfter time.Duration
}

// Fleet statuses, worst first.
const (
	FleetOffline = "offline" // a streaming device silent past its limit
	FleetOnline  = "online"  // connected, or reported within its limit
	FleetIdle    = "idle"    // a spot-check device, not connected now
	FleetUnheard = "unheard" // not heard since Vigil started
	FleetRevoked = "revoked" // may not connect
)

// FleetDevice is one row of the device fleet.
type FleetDevice struct {
	ID           string     `json:"id"`
	Kind         string     `json:"kind"`
	Manufacturer string     `json:"manufacturer,omitempty"`
	Model        string     `json:"model,omitempty"`
	Serial       string     `json:"serial,omitempty"`
	Firmware     string     `json:"firmware,omitempty"`
	Status       string     `json:"status"`
	Connected    bool       `json:"connected"`
	LastSeen     *time.Time `json:"lastSeen,omitempty"`
	SilentAfter  int        `json:"silentAfterSeconds,omitempty"`
	Battery      *float64   `json:"battery,omitempty"`
	BatteryAt    *time.Time `json:"batteryAt,omitempty"`
	// The patient it is assigned to now (names are PHI: only for users
	// who may see the patient).
	Patient     string     `json:"patient,omitempty"`
	PatientName string     `json:"patientName,omitempty"`
	Ward        string     `json:"ward,omitempty"`
	Bed         string     `json:"bed,omitempty"`
	Since       *time.Time `json:"assignedSince,omitempty"`
	// DeadLetters counts the device's messages Vigil could not store
	// (kept 30 days); DeadLettersMore: there are more than counted.
	DeadLetters     int  `json:"deadLetters"`
	DeadLettersMore bool `json:"deadLettersMore,omitempty"`
}

// Fleet is the JSON served at /web/api/devices.
type Fleet struct {
	Now     time.Time      `json:"now"`
	Devices []*FleetDevice `json:"devices"`
}

// maxFleetDeadLetters bounds the dead letters one fleet view counts.
const maxFleetDeadLetters = 20000

// devices serves the device fleet: every device for staff (a clinician or
// nurse with wards sees the devices of their patients and unassigned
// ones), or ?patient=ID: that patient's devices (a patient may ask for
// their own).
func (h *handler) devices(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	patient := r.URL.Query().Get("patient")
	if patient != "" && !s.canSee(patient) {
		h.error(w, r, vigil.Errorf(vigil.EFORBIDDEN, "you may not see this patient"))
		return
	}
	if patient == "" && !s.staff() {
		h.error(w, r, vigil.Errorf(vigil.EFORBIDDEN, "the device fleet is for care staff; ask for your own devices with ?patient="))
		return
	}
	var devs []*vigil.Device
	for off := 0; ; {
		ds, total, err := h.opts.Store.FindDevices(ctx, vigil.DeviceFilter{PatientID: patient, Offset: off, Limit: 500})
		if err != nil {
			h.error(w, r, fmt.Errorf("list devices: %w", err))
			return
		}
		devs = append(devs, ds...)
		off += len(ds)
		if len(ds) == 0 || off >= total {
			break
		}
	}
	dead := map[string]int{}
	deadMore := false
	if s.staff() {
		dls, err := h.opts.Store.FindDeadLetters(ctx, vigil.DeadLetterFilter{Limit: maxFleetDeadLetters})
		if err != nil {
			h.error(w, r, fmt.Errorf("count dead letters: %w", err))
			return
		}
		for _, d := range dls {
			dead[d.DeviceID]++
		}
		deadMore = len(dls) == maxFleetDeadLetters
	}
	var connected map[string]bool
	if h.opts.Connected != nil {
		connected = h.opts.Connected()
	}
	patients := map[string]*vigil.Patient{}
	out := &Fleet{Now: h.opts.Now().UTC(), Devices: []*FleetDevice{}}
	for _, d := range devs {
		fd, err := h.fleetDevice(ctx, d, connected[d.ID], patients)
		if err != nil {
			h.error(w, r, err)
			return
		}
		if fd.Patient != "" && !s.canSee(fd.Patient) {
			continue // another ward's patient's device
		}
		fd.DeadLetters, fd.DeadLettersMore = dead[d.ID], deadMore && dead[d.ID] > 0
		out.Devices = append(out.Devices, fd)
	}
	sortFleet(out.Devices)
	h.json(w, http.StatusOK, out)
}

// fleetDevice builds a device's row; patients caches patient records.
func (h *handler) fleetDevice(ctx context.Context, d *vigil.Device, connected bool, patients map[string]*vigil.Patient) (*FleetDevice, error) {
	fd := &FleetDevice{ID: d.ID, Kind: d.Kind, Manufacturer: d.Manufacturer, Model: d.Model, Serial: d.Serial, Firmware: d.Firmware}
	as, err := h.opts.Store.Assignments(ctx, d.ID)
	if err != nil {
		return nil, fmt.Errorf("device assignments: %w", err)
	}
	if n := len(as); n > 0 && as[n-1].To.IsZero() {
		a := as[n-1]
		fd.Patient, fd.Since = a.PatientID, &a.From
		p, ok := patients[a.PatientID]
		if !ok {
			if p, err = h.opts.Store.FindPatientByID(ctx, a.PatientID); err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
				return nil, fmt.Errorf("find patient: %w", err)
			}
			patients[a.PatientID] = p
		}
		if p != nil {
			fd.PatientName = strings.TrimSpace(p.Given + " " + p.Family)
			fd.Ward, fd.Bed = p.Ward, p.Bed
		}
	}
	var st DeviceState
	if h.opts.DeviceState != nil {
		st = h.opts.DeviceState(d.ID)
	}
	fd.Connected, fd.Battery, fd.SilentAfter = connected, st.Battery, int(st.SilentAfter.Seconds())
	if !st.LastSeen.IsZero() {
		fd.LastSeen = &st.LastSeen
	}
	if !st.BatteryAt.IsZero() {
		fd.BatteryAt = &st.BatteryAt
	}
	now := h.opts.Now()
	switch {
	case d.Revoked:
		fd.Status = FleetRevoked
	case connected:
		fd.Status = FleetOnline
	case st.LastSeen.IsZero():
		fd.Status = FleetUnheard
	case st.SilentAfter > 0 && now.Sub(st.LastSeen) >= st.SilentAfter:
		fd.Status = FleetOffline
	case st.SilentAfter > 0:
		fd.Status = FleetOnline
	default:
		fd.Status = FleetIdle
	}
	return fd, nil
}

func fleetRank(s string) int {
	return slices.Index([]string{FleetOffline, FleetOnline, FleetIdle, FleetUnheard, FleetRevoked}, s)
}

// sortFleet puts offline devices first, then by ward, bed and id.
func sortFleet(ds []*FleetDevice) {
	slices.SortStableFunc(ds, func(a, b *FleetDevice) int {
		return cmp.Or(
			cmp.Compare(fleetRank(a.Status), fleetRank(b.Status)),
			cmp.Compare(a.Ward, b.Ward),
			cmp.Compare(a.Bed, b.Bed),
			cmp.Compare(a.ID, b.ID),
		)
	})
}
