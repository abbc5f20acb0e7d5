package devcmd

import (
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	otherPub, _, _ := ed25519.GenerateKey(nil)
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	raw, err := Sign(key, &Command{Device: "mon-1", Seq: 7, Type: "set-interval", Params: json.RawMessage(`{ "seconds": 30 }`), Issued: now, Expires: now.Add(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Verify(pub, raw, "mon-1", 6, now.Add(time.Minute)); err != nil || c.Seq != 7 || string(c.Params) != `{"seconds":30}` {
		t.Fatalf("a good command: %v %+v", err, c)
	}
	tampered := []byte(strings.Replace(string(raw), `"seconds":30`, `"seconds":1`, 1))
	for name, c := range map[string]struct {
		raw    []byte
		pub    ed25519.PublicKey
		device string
		last   uint64
		at     time.Time
		want   error
	}{
		"replayed":        {raw, pub, "mon-1", 7, now, ErrReplay},
		"older":           {raw, pub, "mon-1", 9, now, ErrReplay},
		"another device":  {raw, pub, "mon-2", 0, now, ErrDevice},
		"expired":         {raw, pub, "mon-1", 6, now.Add(10 * time.Minute), ErrExpired},
		"params altered":  {tampered, pub, "mon-1", 6, now, ErrSignature},
		"not Vigil's key": {raw, otherPub, "mon-1", 6, now, ErrSignature},
	} {
		if _, err := Verify(c.pub, c.raw, c.device, c.last, c.at); err != c.want {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}
