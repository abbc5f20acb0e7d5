package tsdb

import "errors"

// errShort is returned when a chunk ends before all its samples are read.
var errShort = errors.New("tsdb: chunk truncated")

// bitWriter appends bits, most significant first.
type bitWriter struct {
	b    []byte
	free uint8 // unused low bits in the last byte
}

func (w *bitWriter) writeBit(bit bool) {
	if w.free == 0 {
		w.b = append(w.b, 0)
		w.free = 8
	}
	w.free--
	if bit {
		w.b[len(w.b)-1] |= 1 << w.free
	}
}

// writeBits writes the low n bits of v (n ≤ 64).
func (w *bitWriter) writeBits(v uint64, n int) {
	for n > 0 {
		if w.free == 0 {
			w.b = append(w.b, 0)
			w.free = 8
		}
		take := int(w.free)
		if take > n {
			take = n
		}
		chunk := byte((v >> uint(n-take)) & (1<<uint(take) - 1))
		w.free -= uint8(take)
		w.b[len(w.b)-1] |= chunk << w.free
		n -= take
	}
}

// bitReader reads bits written by bitWriter.
type bitReader struct {
	b   []byte
	pos int // bit position
}

func (r *bitReader) readBit() (bool, error) {
	if r.pos>>3 >= len(r.b) {
		return false, errShort
	}
	bit := r.b[r.pos>>3]&(0x80>>uint(r.pos&7)) != 0
	r.pos++
	return bit, nil
}

func (r *bitReader) readBits(n int) (uint64, error) {
	var v uint64
	for n > 0 {
		i := r.pos >> 3
		if i >= len(r.b) {
			return 0, errShort
		}
		off := r.pos & 7
		avail := 8 - off
		take := avail
		if take > n {
			take = n
		}
		bits := (uint64(r.b[i]) >> uint(avail-take)) & (1<<uint(take) - 1)
		v = v<<uint(take) | bits
		r.pos += take
		n -= take
	}
	return v, nil
}

// Variable-length signed integers: a unary bucket prefix followed by the
// value in that bucket's width (two's complement). Bucket 0 is the value 0
// in one bit, which is what regular series produce most of the time.
var buckets = []int{0, 4, 8, 14, 20, 32, 64}

// valueBuckets code value deltas in version 2 chunks: a 2-bit bucket
// first, since vital signs mostly move by one step at a time (4 bits
// where version 1 took 6).
var valueBuckets = []int{0, 2, 4, 8, 14, 20, 32, 64}

// writeVarBits writes v with the smallest bucket that holds it: prefix of
// i ones then a zero (no zero after the last bucket), then the bits.
func (w *bitWriter) writeVarBits(v int64) { w.writeCode(v, buckets) }

func (w *bitWriter) writeCode(v int64, buckets []int) {
	for i, n := range buckets {
		if n == 64 || fits(v, n) {
			for j := 0; j < i; j++ {
				w.writeBit(true)
			}
			if i < len(buckets)-1 {
				w.writeBit(false)
			}
			if n > 0 {
				w.writeBits(uint64(v), n)
			}
			return
		}
	}
}

func (r *bitReader) readVarBits() (int64, error) { return r.readCode(buckets) }

func (r *bitReader) readCode(buckets []int) (int64, error) {
	i := 0
	for i < len(buckets)-1 {
		bit, err := r.readBit()
		if err != nil {
			return 0, err
		}
		if !bit {
			break
		}
		i++
	}
	n := buckets[i]
	if n == 0 {
		return 0, nil
	}
	u, err := r.readBits(n)
	if err != nil {
		return 0, err
	}
	if n == 64 {
		return int64(u), nil
	}
	// sign-extend
	shift := 64 - uint(n)
	return int64(u<<shift) >> shift, nil
}

// fits reports whether v is representable in n bits two's complement.
func fits(v int64, n int) bool {
	if n == 0 {
		return v == 0
	}
	lim := int64(1) << uint(n-1)
	return v >= -lim && v < lim
}
