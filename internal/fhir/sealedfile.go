package fhir

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Bulk export files hold PHI, so they are written sealed: AES-256-GCM
// under a key that lives only in the export job's memory. A file is a
// sequence of frames, each a 4-byte big-endian length and the sealed
// bytes of up to frameSize plaintext bytes; frame i's nonce is i, and
// its additional data says whether it is the last frame, so a reordered
// or truncated file fails to open. After a restart the keys are gone and
// the files are unreadable (and removed).

const frameSize = 64 << 10

type sealedWriter struct {
	w     *bufio.Writer
	aead  cipher.AEAD
	buf   []byte
	n     uint64
	out   []byte
	nonce [12]byte
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func newSealedWriter(w io.Writer, key []byte) (*sealedWriter, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return &sealedWriter{w: bufio.NewWriter(w), aead: aead, buf: make([]byte, 0, frameSize), out: make([]byte, 4, 4+frameSize+aead.Overhead())}, nil
}

func (s *sealedWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), frameSize-len(s.buf))
		s.buf = append(s.buf, p[:k]...)
		p = p[k:]
		if len(s.buf) == frameSize {
			if err := s.frame(false); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (s *sealedWriter) frame(last bool) error {
	binary.BigEndian.PutUint64(s.nonce[4:], s.n)
	s.n++
	ad := []byte{0}
	if last {
		ad[0] = 1
	}
	s.out = s.aead.Seal(s.out[:4], s.nonce[:], s.buf, ad)
	binary.BigEndian.PutUint32(s.out[:4], uint32(len(s.out)-4))
	s.buf = s.buf[:0]
	_, err := s.w.Write(s.out)
	return err
}

// Close writes the last frame; it does not close the underlying writer.
func (s *sealedWriter) Close() error {
	if err := s.frame(true); err != nil {
		return err
	}
	return s.w.Flush()
}

// openSealed copies the plaintext of a sealed file to w.
func openSealed(w io.Writer, r io.Reader, key []byte) error {
	aead, err := newAEAD(key)
	if err != nil {
		return err
	}
	br := bufio.NewReader(r)
	var nonce [12]byte
	var head [4]byte
	var buf, plain []byte
	for n := uint64(0); ; n++ {
		if _, err := io.ReadFull(br, head[:]); err != nil {
			return errors.New("sealed export file is truncated")
		}
		size := binary.BigEndian.Uint32(head[:])
		if size > frameSize+uint32(aead.Overhead()) {
			return fmt.Errorf("sealed export file: frame %d is too large", n)
		}
		buf = append(buf[:0], make([]byte, size)...)
		if _, err := io.ReadFull(br, buf); err != nil {
			return errors.New("sealed export file is truncated")
		}
		binary.BigEndian.PutUint64(nonce[4:], n)
		last := false
		if plain, err = aead.Open(plain[:0], nonce[:], buf, []byte{0}); err != nil {
			if plain, err = aead.Open(plain[:0], nonce[:], buf, []byte{1}); err != nil {
				return fmt.Errorf("sealed export file: frame %d does not open (wrong key or altered)", n)
			}
			last = true
		}
		if _, err := w.Write(plain); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}
