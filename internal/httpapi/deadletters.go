package httpapi

import (
	"context"
	"net/http"

	"github.com/vigil-iomt/vigil"
)

// ReplayResult is the outcome of replaying one dead letter: "resolved"
// (every reading is now stored; the dead letter is deleted) or "refused"
// (kept; Errors say why now).
type ReplayResult struct {
	ID         string         `json:"id"`
	Status     string         `json:"status"`
	Accepted   int            `json:"accepted"`
	Duplicates int            `json:"duplicates"`
	Detail     string         `json:"detail,omitempty"`
	Errors     []ReadingError `json:"errors,omitempty"`
}

// ReplaySummary is the outcome of replaying many dead letters.
type ReplaySummary struct {
	Replayed int            `json:"replayed"`
	Resolved int            `json:"resolved"`
	Refused  int            `json:"refused"`
	Results  []ReplayResult `json:"results"`
}

func (s *Server) deadLetter(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	d, err := s.o.Store.FindDeadLetterByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) deleteDeadLetter(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if err := s.o.Store.DeleteDeadLetter(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) replayDeadLetter(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	d, err := s.o.Store.FindDeadLetterByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	res, err := s.replay(r.Context(), d)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) replayDeadLetters(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	q := r.URL.Query()
	f := vigil.DeadLetterFilter{DeviceID: q.Get("device"), Reason: q.Get("reason")}
	var err error
	if f.Limit, err = intParam(q.Get("limit"), 1000); err != nil {
		return err
	}
	ds, err := s.o.Store.FindDeadLetters(r.Context(), f)
	if err != nil {
		return err
	}
	sum := ReplaySummary{Results: []ReplayResult{}}
	// Oldest first, as the device sent them.
	for i := len(ds) - 1; i >= 0; i-- {
		res, err := s.replay(r.Context(), ds[i])
		if err != nil {
			return err
		}
		sum.Replayed++
		if res.Status == "resolved" {
			sum.Resolved++
		} else {
			sum.Refused++
		}
		sum.Results = append(sum.Results, res)
	}
	writeJSON(w, http.StatusOK, sum)
	return nil
}

// replay submits a dead letter's payload again, as its device sent it
// (source marked "-replay" so a refusal does not make a second dead
// letter), and deletes the dead letter when everything is stored.
func (s *Server) replay(ctx context.Context, d *vigil.DeadLetter) (ReplayResult, error) {
	switch d.Source {
	case "webhook":
		return ReplayResult{ID: d.ID, Status: "refused", Detail: "failed webhook deliveries are kept for inspection and are not replayed"}, nil
	case "ehr-sync":
		return ReplayResult{ID: d.ID, Status: "refused", Detail: "the EHR refused this resource; it is kept for inspection (its reason is in the message) and is not replayed into Vigil, where it is already stored"}, nil
	}
	res := s.o.Ingester.Ingest(ctx, vigil.Message{
		DeviceID: d.DeviceID, Source: d.Source + "-replay", Format: d.Format, Topic: d.Topic, Payload: d.Payload, Received: d.Time,
	})
	out := ReplayResult{ID: d.ID, Status: "refused"}
	if res.Err != nil {
		if vigil.Retryable(res.Err) {
			return out, res.Err
		}
		out.Detail = vigil.ErrorMessage(res.Err)
		return out, nil
	}
	for i, o := range res.Readings {
		switch {
		case o.Err != nil:
			e, _ := o.Err.(*vigil.Error)
			if e == nil {
				e = &vigil.Error{Message: o.Err.Error()}
			}
			out.Errors = append(out.Errors, ReadingError{Index: i, ID: o.ID, Field: e.Field, Reason: e.Reason, Detail: e.Message})
		case o.Duplicate:
			out.Duplicates++
		default:
			out.Accepted++
		}
	}
	if len(out.Errors) > 0 {
		out.Detail = out.Errors[0].Detail
		return out, nil
	}
	out.Status = "resolved"
	if err := s.o.Store.DeleteDeadLetter(ctx, d.ID); err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
		return out, err
	}
	return out, nil
}
