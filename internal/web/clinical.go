package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/news2"
)

// NEWS2 is what a tile shows of a patient's early warning score.
type NEWS2 struct {
	Total    int    `json:"total"`
	Band     string `json:"band"` // low, low-medium, medium, high
	Complete bool   `json:"complete"`
	Note     string `json:"note,omitempty"` // what an incomplete score lacks
	// Consciousness and OnOxygen are the nurse's last inputs (for the form).
	Consciousness string `json:"consciousness,omitempty"`
	OnOxygen      *bool  `json:"onOxygen,omitempty"`
}

func news2Of(r news2.Result, p *vigil.Patient) *NEWS2 {
	return &NEWS2{Total: r.Total, Band: r.Band, Complete: r.Complete, Note: r.Note, Consciousness: p.Consciousness, OnOxygen: p.OnOxygen}
}

// readJSON reads a small JSON body into v (empty: leaves v).
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<10))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return vigil.Errorf(vigil.ETOOLARGE, "the request is too large")
		}
		return vigil.Errorf(vigil.EINVALID, "cannot read the request body")
	}
	if len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return vigil.Errorf(vigil.EINVALID, "the body must be JSON: %v", err)
	}
	return nil
}

// news2Inputs records a nurse's ACVPU and oxygen observation and answers
// with the recomputed tile NEWS2.
func (h *handler) news2Inputs(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !s.staff() || !s.canSee(id) {
		h.error(w, r, vigil.Errorf(vigil.EFORBIDDEN, "only care staff can record observations"))
		return
	}
	if h.opts.NEWS2Record == nil {
		h.error(w, r, vigil.Errorf(vigil.ENOTFOUND, "NEWS2 is not enabled"))
		return
	}
	var in news2.Inputs
	if err := readJSON(w, r, &in); err != nil {
		h.error(w, r, err)
		return
	}
	in.SpO2Scale = 0 // prescribed through the API by a clinician, not from the ward view
	res, err := h.opts.NEWS2Record(r.Context(), id, in, false)
	if err != nil {
		h.error(w, r, err)
		return
	}
	p, err := h.opts.Store.FindPatientByID(r.Context(), id)
	if err != nil {
		h.error(w, r, err)
		return
	}
	h.json(w, http.StatusOK, news2Of(res, p))
}

// alertRequest is the body of an alert action: a note, and for a snooze
// its length in minutes.
type alertRequest struct {
	Note    string `json:"note"`
	Minutes int    `json:"minutes"`
}

// alertAction serves POST /web/api/alerts/{id}/{action}: care staff act on
// an alert of a patient they may see, as themselves.
func (h *handler) alertAction(verb string, act func(ctx context.Context, id, by string, req alertRequest) (*vigil.Alert, error)) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		if !s.staff() {
			h.error(w, r, vigil.Errorf(vigil.EFORBIDDEN, "only care staff can %s alerts", verb))
			return
		}
		var req alertRequest
		if err := readJSON(w, r, &req); err != nil {
			h.error(w, r, err)
			return
		}
		a, err := h.opts.Store.FindAlertByID(r.Context(), r.PathValue("id"))
		if err != nil {
			h.error(w, r, fmt.Errorf("find alert: %w", err))
			return
		}
		if !s.canSee(a.PatientID) {
			h.error(w, r, vigil.Errorf(vigil.EFORBIDDEN, "you may not see this patient"))
			return
		}
		if a, err = act(r.Context(), a.ID, s.p.UserID, req); err != nil {
			h.error(w, r, err)
			return
		}
		h.json(w, http.StatusOK, a)
	}
}

// tileNEWS2 computes a tile's NEWS2 (nil when NEWS2 is off or fails: the
// tile still shows the vitals).
func (h *handler) tileNEWS2(ctx context.Context, p *vigil.Patient) *NEWS2 {
	if h.opts.NEWS2 == nil {
		return nil
	}
	res, err := h.opts.NEWS2(ctx, p.ID)
	if err != nil {
		h.log.Error("tile NEWS2", "err", err)
		return nil
	}
	return news2Of(res, p)
}
