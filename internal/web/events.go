package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/live"
	"github.com/vigil-iomt/vigil/internal/news2"
)

// sseBuffer is how many events a stream may fall behind before the hub
// drops it (the browser then reconnects and reloads the snapshot).
const sseBuffer = 256

// sseWriteTimeout, past the next heartbeat, bounds one write to a
// stream, so a stalled client cannot hold its goroutine forever.
const sseWriteTimeout = 30 * time.Second

// ReadingEvent is the data of an SSE "reading" event.
type ReadingEvent struct {
	PatientID string              `json:"patient"`
	DeviceID  string              `json:"device"`
	ID        string              `json:"id"`
	Time      time.Time           `json:"time"`
	Received  time.Time           `json:"received,omitzero"` // Vigil's receive time
	Values    []vigil.Measurement `json:"values"`
}

// events streams the hub's reading and alert events for the patients the
// caller may see, with a heartbeat comment every Options.Heartbeat. The
// stream ends when the client goes away, when the session is no longer
// valid (checked at each heartbeat), and when the hub drops the stream
// for falling behind; the browser's EventSource then reconnects.
func (h *handler) events(w http.ResponseWriter, r *http.Request, s *session) {
	rc := http.NewResponseController(w)
	filter := func(e live.Event) bool {
		return (e.Type == live.TypeNotice && e.PatientID == "") || s.canSee(e.PatientID)
	}
	sub := h.opts.Hub.Subscribe(sseBuffer, filter)
	defer sub.Close()

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(format string, args ...any) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(h.opts.Heartbeat + sseWriteTimeout)) // lasts until the next write
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write("retry: 3000\n: connected\n\n") {
		return
	}
	tick := time.NewTicker(h.opts.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if _, err := h.opts.Auth.Principal(r.Context(), s.token); err != nil {
				return // signed out or expired: the reconnect gets a 401
			}
			if err := h.touch(r.Context(), s.token, false); err != nil {
				return // idle too long: signed out; the reconnect gets a 401
			}
			if !write(": heartbeat\n\n") {
				return
			}
		case ev, ok := <-sub.C:
			if !ok {
				return // dropped for falling behind
			}
			data, typ := eventData(ev)
			if data == nil {
				continue
			}
			b, err := json.Marshal(data)
			if err != nil {
				h.log.Error("encode SSE event", "type", ev.Type, "err", err)
				continue
			}
			if !write("event: %s\ndata: %s\n\n", typ, b) {
				return
			}
		}
	}
}

// eventData returns what the browser gets for a hub event, or nil for
// events it does not use.
func eventData(ev live.Event) (any, string) {
	switch d := ev.Data.(type) {
	case *vigil.Reading:
		if ev.Type == live.TypeReading {
			return ReadingEvent{PatientID: d.PatientID, DeviceID: d.DeviceID, ID: d.ID, Time: d.Time, Received: d.Received, Values: d.Values}, live.TypeReading
		}
	case *vigil.Alert:
		if ev.Type == live.TypeAlert {
			return d, live.TypeAlert
		}
	case *live.Notice:
		if ev.Type == live.TypeNotice {
			return d, live.TypeNotice
		}
	case *news2.Update:
		if ev.Type == live.TypeNEWS2 {
			return struct {
				PatientID string `json:"patient"`
				*NEWS2
			}{d.PatientID, &NEWS2{Total: d.Total, Band: d.Band, Complete: d.Complete, Note: d.Note}}, live.TypeNEWS2
		}
	}
	return nil, ""
}
