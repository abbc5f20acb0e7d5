// Package seal encrypts records at rest: AES-256-GCM under data keys
// (DEKs), each wrapped by a master key (a KeyWrapper: a local key file or
// the environment here; a KMS can implement the same interface).
//
// A sealed value is
//
//	"VS1" | be32 key version | 12-byte nonce | ciphertext and 16-byte tag
//
// so values written before sealing was on (plain JSON) still read, and
// records sealed under an older data key still open after a rotation:
// Rotate makes a new current key for new writes without downtime; the
// old ones stay for reading.
//
// The wrapped data keys live in DATA/data-keys.json; the master key in
// DATA/master-key (0600) unless VIGIL_MASTER_KEY (64 hex digits) is set —
// keep the master key off the data disk in production.
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

var magic = []byte("VS1")

// KeyWrapper wraps and unwraps data keys with a master key.
type KeyWrapper interface {
	Wrap(dek []byte) ([]byte, error)
	Unwrap(wrapped []byte) ([]byte, error)
}

// LocalKey is a master key held by this process.
type LocalKey struct{ aead cipher.AEAD }

// NewLocalKey makes a KeyWrapper of a 32-byte master key.
func NewLocalKey(key []byte) (*LocalKey, error) {
	a, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return &LocalKey{aead: a}, nil
}

func (k *LocalKey) Wrap(dek []byte) ([]byte, error)       { return encrypt(k.aead, dek, nil) }
func (k *LocalKey) Unwrap(wrapped []byte) ([]byte, error) { return decrypt(k.aead, wrapped, nil) }

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("seal: a key is 32 bytes (AES-256), not %d", len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func encrypt(a cipher.AEAD, plain, ad []byte) ([]byte, error) {
	return encryptTo(nil, a, plain, ad)
}

// encryptTo appends a random nonce and the sealed plain to dst.
func encryptTo(dst []byte, a cipher.AEAD, plain, ad []byte) ([]byte, error) {
	n := a.NonceSize()
	out := slices.Grow(dst, n+len(plain)+a.Overhead())
	nonce := out[len(dst) : len(dst)+n]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return a.Seal(out[:len(dst)+n], nonce, plain, ad), nil
}

func decrypt(a cipher.AEAD, sealed, ad []byte) ([]byte, error) {
	n := a.NonceSize()
	if len(sealed) < n+a.Overhead() {
		return nil, errors.New("seal: value too short")
	}
	return a.Open(nil, sealed[:n], sealed[n:], ad)
}

// Sealer seals and opens values. It is safe for concurrent use.
type Sealer struct {
	path string
	wrap KeyWrapper

	mu      sync.RWMutex
	current uint32
	keys    map[uint32]cipher.AEAD
}

type keyFile struct {
	Current uint32            `json:"current"`
	Keys    map[uint32]string `json:"keys"` // version → hex wrapped DEK
}

// Open loads the data keys in dir (creating the first on a new data
// directory) with wrap.
func Open(dir string, wrap KeyWrapper) (*Sealer, error) {
	s := &Sealer{path: filepath.Join(dir, "data-keys.json"), wrap: wrap, keys: map[uint32]cipher.AEAD{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, s.Rotate()
	}
	if err != nil {
		return nil, err
	}
	var kf keyFile
	if err := json.Unmarshal(b, &kf); err != nil {
		return nil, fmt.Errorf("seal: %s: %w", s.path, err)
	}
	for v, h := range kf.Keys {
		w, err := hex.DecodeString(h)
		if err != nil {
			return nil, fmt.Errorf("seal: data key %d: %w", v, err)
		}
		dek, err := wrap.Unwrap(w)
		if err != nil {
			return nil, fmt.Errorf("seal: data key %d does not open with this master key: %w", v, err)
		}
		if s.keys[v], err = newAEAD(dek); err != nil {
			return nil, err
		}
	}
	if _, ok := s.keys[kf.Current]; !ok {
		return nil, fmt.Errorf("seal: %s names current key %d, which it does not hold", s.path, kf.Current)
	}
	s.current = kf.Current
	return s, nil
}

// Rotate makes a new data key current: new writes use it, records sealed
// under older keys still open.
func (s *Sealer) Rotate() error {
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		return err
	}
	a, err := newAEAD(dek)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kf := keyFile{Keys: map[uint32]string{}}
	if b, err := os.ReadFile(s.path); err == nil {
		if err := json.Unmarshal(b, &kf); err != nil {
			return err
		}
	}
	if kf.Keys == nil {
		kf.Keys = map[uint32]string{}
	}
	next := s.current + 1
	for v := range kf.Keys {
		next = max(next, v+1)
	}
	w, err := s.wrap.Wrap(dek)
	if err != nil {
		return err
	}
	kf.Keys[next], kf.Current = hex.EncodeToString(w), next
	b, _ := json.MarshalIndent(kf, "", "  ")
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return err
	}
	s.keys[next], s.current = a, next
	return nil
}

// Current is the version of the key new writes use.
func (s *Sealer) Current() uint32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current
}

// Seal encrypts plain under the current data key.
func (s *Sealer) Seal(plain []byte) ([]byte, error) {
	s.mu.RLock()
	v, a := s.current, s.keys[s.current]
	s.mu.RUnlock()
	// One allocation: header, nonce, ciphertext and tag, then a copy of
	// the header past the value's capacity — the additional data, which
	// AEAD forbids to overlap the output.
	hdr := len(magic) + 4
	total := hdr + a.NonceSize() + len(plain) + a.Overhead()
	buf := make([]byte, total+hdr)
	out, ad := buf[:hdr:total], buf[total:]
	copy(out, magic)
	binary.BigEndian.PutUint32(out[len(magic):], v)
	copy(ad, out)
	return encryptTo(out, a, plain, ad)
}

// Sealed reports whether b is a sealed value.
func Sealed(b []byte) bool { return bytes.HasPrefix(b, magic) && len(b) > len(magic)+4 }

// Open decrypts a sealed value; a value that is not sealed is returned as
// it is (written before sealing was on).
func (s *Sealer) Open(b []byte) ([]byte, error) {
	if !Sealed(b) {
		return b, nil
	}
	hdr := b[:len(magic)+4]
	v := binary.BigEndian.Uint32(hdr[len(magic):])
	s.mu.RLock()
	a, ok := s.keys[v]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("seal: data key %d is not held", v)
	}
	return decrypt(a, b[len(hdr):], hdr)
}

// MasterKey returns the master key from VIGIL_MASTER_KEY (64 hex digits)
// or DATA/master-key (created, 0600, when neither exists).
func MasterKey(dataDir string) ([]byte, error) {
	if h := strings.TrimSpace(os.Getenv("VIGIL_MASTER_KEY")); h != "" {
		k, err := hex.DecodeString(h)
		if err != nil || len(k) != 32 {
			return nil, errors.New("VIGIL_MASTER_KEY must be 64 hex digits (32 bytes)")
		}
		return k, nil
	}
	path := filepath.Join(dataDir, "master-key")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, err
		}
		return k, os.WriteFile(path, []byte(hex.EncodeToString(k)+"\n"), 0o600)
	}
	if err != nil {
		return nil, err
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("%s is not 64 hex digits", path)
	}
	return k, nil
}
