package gatt

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/ingest"
)

// Format is the vigil.Message format of relayed GATT values: MQTT topic
// vigil/v1/devices/{id}/gatt, HTTP POST /api/v1/devices/{id}/gatt.
const Format = "gatt"

// message is one relayed characteristic value:
//
//	{"id": "unique per device", "time": "RFC 3339 (optional when the value has a time stamp)",
//	 "characteristic": "2A35", "hex": "1E8A00…"}   (or "base64": "…")
type message struct {
	ID             string `json:"id"`
	Time           string `json:"time"`
	Characteristic string `json:"characteristic"`
	Hex            string `json:"hex"`
	Base64         string `json:"base64"`
	// Battery is the peripheral's Battery Level (0x2A19) in percent, when
	// the gateway read it.
	Battery *float64 `json:"battery"`
}

// DecodePayload implements ingest.Decoder: one message or an array.
func DecodePayload(payload []byte, maxReadings int) ([]ingest.Raw, error) {
	var msgs []message
	p := bytes.TrimSpace(payload)
	if len(p) > 0 && p[0] == '[' {
		if err := json.Unmarshal(p, &msgs); err != nil {
			return nil, vigil.FieldErrorf("", "malformed", "malformed JSON: %v", err)
		}
	} else {
		var m message
		if err := json.Unmarshal(p, &m); err != nil {
			return nil, vigil.FieldErrorf("", "malformed", "malformed JSON: %v (send {\"id\", \"time\", \"characteristic\", \"hex\"})", err)
		}
		msgs = []message{m}
	}
	if len(msgs) == 0 || len(msgs) > maxReadings {
		return nil, vigil.FieldErrorf("", "too-many", "send 1 to %d characteristic values per message", maxReadings)
	}
	out := make([]ingest.Raw, len(msgs))
	for i, m := range msgs {
		prefix := ""
		if len(msgs) > 1 || (len(p) > 0 && p[0] == '[') {
			prefix = fmt.Sprintf("[%d].", i)
		}
		out[i] = decodeOne(m, prefix)
	}
	return out, nil
}

func decodeOne(m message, prefix string) ingest.Raw {
	r := ingest.Raw{ID: m.ID, Field: prefix, Battery: m.Battery}
	var data []byte
	var err error
	switch {
	case m.Hex != "":
		data, err = hex.DecodeString(m.Hex)
	case m.Base64 != "":
		data, err = base64.StdEncoding.DecodeString(m.Base64)
	default:
		r.Err = vigil.FieldErrorf(prefix+"hex", "required", "send the characteristic value as \"hex\" or \"base64\"")
		return r
	}
	if err != nil {
		r.Err = vigil.FieldErrorf(prefix+"hex", "invalid", "the value bytes do not decode: %v", err)
		return r
	}
	meas, err := Decode(m.Characteristic, data)
	if err != nil {
		e := err.(*vigil.Error)
		r.Err = vigil.FieldErrorf(prefix+e.Field, e.Reason, "%s", e.Message)
		return r
	}
	switch {
	case m.Time != "":
		t, err := time.Parse(time.RFC3339Nano, m.Time)
		if err != nil {
			r.Err = vigil.FieldErrorf(prefix+"time", "invalid", "time %q is not RFC 3339 with an offset", m.Time)
			return r
		}
		r.Time = t
	case !meas.Time.IsZero():
		r.Time = meas.Time // the characteristic's own time stamp, taken as UTC
	default:
		r.Err = vigil.FieldErrorf(prefix+"time", "required", "this value has no time stamp: send \"time\" (RFC 3339)")
		return r
	}
	for _, v := range meas.Values {
		if v.Absent {
			continue // NaN/NRes: data absent, never stored as a number
		}
		r.Values = append(r.Values, ingest.RawValue{System: vigil.SystemLOINC, Code: v.Code, Unit: v.Unit, Value: v.Value, Field: prefix + v.Field})
	}
	if len(r.Values) == 0 {
		r.Err = vigil.FieldErrorf(prefix+"hex", "data-absent", "the device reported no valid value (NaN or NRes)")
	}
	return r
}
