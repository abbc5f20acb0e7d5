// Package devcmd signs the commands Vigil sends down to devices
// (configuration, thresholds) and verifies them on the device side.
//
// A command is JSON on the device's topic vigil/v1/devices/{id}/commands:
//
//	{"device": "mon-1", "seq": 7, "type": "set-interval", "params": {...},
//	 "issued": "2026-12-01T10:00:00Z", "expires": "2026-12-01T10:10:00Z",
//	 "sig": "base64 Ed25519 signature"}
//
// The signature covers the device id, the counter, the type, both times
// and the params exactly as sent (Canonical), under Vigil's command key
// (DATA/command-key; the public key is at GET /api/v1/commands/key and is
// installed on the device once). A device applies a command only when the
// signature verifies, the command is for it, its counter is above the
// last one it applied (so a captured command cannot be replayed) and it
// has not expired. The device answers on .../commands/ack with
// {"seq": 7, "status": "applied" | "rejected", "reason": "..."}.
package devcmd

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Command is a signed command as sent.
type Command struct {
	Device  string          `json:"device"`
	Seq     uint64          `json:"seq"`
	Type    string          `json:"type"`
	Params  json.RawMessage `json:"params,omitempty"`
	Issued  time.Time       `json:"issued"`
	Expires time.Time       `json:"expires"`
	Sig     []byte          `json:"sig"`
}

// Ack is a device's answer.
type Ack struct {
	Seq    uint64 `json:"seq"`
	Status string `json:"status"` // applied or rejected
	Reason string `json:"reason,omitempty"`
}

// Canonical is what the signature covers.
func (c *Command) Canonical() []byte {
	return []byte("vigil-command-v1\n" + c.Device + "\n" + strconv.FormatUint(c.Seq, 10) + "\n" + c.Type + "\n" +
		c.Issued.UTC().Format(time.RFC3339Nano) + "\n" + c.Expires.UTC().Format(time.RFC3339Nano) + "\n" + string(c.Params))
}

// Sign signs c and returns its wire form.
func Sign(key ed25519.PrivateKey, c *Command) ([]byte, error) {
	c.Issued, c.Expires = c.Issued.UTC(), c.Expires.UTC()
	if len(c.Params) > 0 {
		// Signed as sent: the encoder compacts params, so compact first.
		var b bytes.Buffer
		if err := json.Compact(&b, c.Params); err != nil {
			return nil, fmt.Errorf("params are not JSON: %w", err)
		}
		c.Params = b.Bytes()
	}
	c.Sig = ed25519.Sign(key, c.Canonical())
	return json.Marshal(c)
}

// Errors a device reports (as the ack's reason).
var (
	ErrSignature = errors.New("bad signature: not from Vigil, or altered")
	ErrDevice    = errors.New("the command is for another device")
	ErrReplay    = errors.New("replayed: its counter is not above the last command applied")
	ErrExpired   = errors.New("expired")
)

// Verify checks a received command for device, given the counter of the
// last command it applied and the time now.
func Verify(pub ed25519.PublicKey, raw []byte, device string, lastSeq uint64, now time.Time) (*Command, error) {
	var c Command
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("not a command: %w", err)
	}
	if !ed25519.Verify(pub, c.Canonical(), c.Sig) {
		return &c, ErrSignature
	}
	switch {
	case c.Device != device:
		return &c, ErrDevice
	case c.Seq <= lastSeq:
		return &c, ErrReplay
	case !now.Before(c.Expires):
		return &c, ErrExpired
	}
	return &c, nil
}
