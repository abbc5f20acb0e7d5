// Package tsdb encodes time series samples into compact chunks.
//
// A chunk holds the samples of one series (one patient, code and device)
// in time order. Timestamps are stored as delta-of-delta, values as deltas
// of scaled integers (most vitals have at most one or two decimals, so
// 37.2 °C is stored as 372 with scale 1), and the receive lag (receive
// time minus device time, whole seconds) as a delta. Each of the three
// uses a variable-width bit code whose narrowest form is a single zero
// bit, so a regular 1 Hz series of slowly changing integers costs a few
// bits per sample. Values that no decimal scale up to 10^6 represents
// exactly fall back to raw IEEE-754 bits XORed with the previous value, so
// encoding is always lossless.
//
// The byte format is documented in docs/formats/pebble.md.
package tsdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
)

// Sample is one stored measurement.
type Sample struct {
	T   int64   // device time, Unix milliseconds
	V   float64 // value
	Lag int64   // receive time minus device time, whole seconds
}

// Chunk versions: 1 (until December 2026, still read) codes each sample's
// time, value and lag apart; 2 (written now) spends one bit on "time step
// and lag as before" and codes value deltas with a 2-bit bucket first.
const (
	version   = 2
	maxScale  = 6
	floatMode = 0xFF
)

var pow10 = [...]float64{1, 10, 100, 1e3, 1e4, 1e5, 1e6}

// Encode returns the chunk encoding of samples, which must be in strictly
// increasing time order.
func Encode(samples []Sample) ([]byte, error) {
	a, err := NewAppender(samples)
	if err != nil {
		return nil, err
	}
	return a.Bytes(), nil
}

// An Appender is a chunk being written: it keeps the encoder's state after
// the last sample, so samples later than it can be added without decoding
// the chunk. Appending gives exactly the bytes Encode gives for all the
// samples at once (there is one encoder).
type Appender struct {
	scale                            int
	n                                uint64
	first                            []byte    // the first sample: time, value and lag
	w                                bitWriter // the rest
	prevT, prevDelta, prevLag, prevI int64
	prevV                            float64
}

// NewAppender encodes samples (strictly increasing in time; possibly
// none) at the scale they need.
func NewAppender(samples []Sample) (*Appender, error) {
	for i := 1; i < len(samples); i++ {
		if samples[i].T <= samples[i-1].T {
			return nil, fmt.Errorf("tsdb: samples not in strictly increasing time order at %d", i)
		}
	}
	a := &Appender{scale: chooseScale(samples)}
	a.w.b = make([]byte, 0, len(samples))
	a.add(samples)
	return a, nil
}

// Append adds samples, strictly increasing in time and after the last one
// held, if their values are exact at the chunk's scale. When it reports
// false nothing was added: encode the merged samples afresh.
func (a *Appender) Append(samples []Sample) bool {
	for i, s := range samples {
		if i == 0 && a.n > 0 && s.T <= a.prevT || i > 0 && s.T <= samples[i-1].T {
			return false
		}
		if a.n > 0 && a.scale != floatMode && !exactAt(s.V, a.scale) {
			return false
		}
	}
	if a.n == 0 { // no scale yet: the samples choose it
		a.scale = chooseScale(samples)
	}
	a.add(samples)
	return true
}

// Len returns how many samples the chunk holds.
func (a *Appender) Len() int { return int(a.n) }

// Bytes returns the chunk (a new slice).
func (a *Appender) Bytes() []byte {
	out := make([]byte, 0, 2+binary.MaxVarintLen64+len(a.first)+len(a.w.b))
	out = append(out, version, byte(a.scale))
	out = binary.AppendUvarint(out, a.n)
	out = append(out, a.first...)
	return append(out, a.w.b...)
}

func (a *Appender) add(samples []Sample) {
	if len(samples) == 0 {
		return
	}
	if a.n == 0 {
		s0 := samples[0]
		a.first = binary.AppendVarint(a.first, s0.T)
		if a.scale == floatMode {
			a.first = binary.BigEndian.AppendUint64(a.first, math.Float64bits(s0.V))
		} else {
			a.prevI = scaled(s0.V, a.scale)
			a.first = binary.AppendVarint(a.first, a.prevI)
		}
		a.first = binary.AppendVarint(a.first, s0.Lag)
		a.prevT, a.prevDelta, a.prevLag, a.prevV = s0.T, 0, s0.Lag, s0.V
		a.n = 1
		samples = samples[1:]
	}
	w := &a.w
	for _, s := range samples {
		delta := s.T - a.prevT
		if dod, dl := delta-a.prevDelta, s.Lag-a.prevLag; dod == 0 && dl == 0 {
			w.writeBit(false) // the regular case: one bit for both
		} else {
			w.writeBit(true)
			w.writeVarBits(dod)
			w.writeVarBits(dl)
		}
		a.prevT, a.prevDelta, a.prevLag = s.T, delta, s.Lag
		if a.scale == floatMode {
			w.writeCode(int64(math.Float64bits(s.V)^math.Float64bits(a.prevV)), valueBuckets)
		} else {
			i := scaled(s.V, a.scale)
			w.writeCode(i-a.prevI, valueBuckets)
			a.prevI = i
		}
		a.prevV = s.V
	}
	a.n += uint64(len(samples))
}

// Count returns how many samples a chunk holds, without decoding them.
func Count(b []byte) (int, error) {
	if len(b) < 3 || (b[0] != 1 && b[0] != 2) {
		return 0, errShort
	}
	n, k := binary.Uvarint(b[2:])
	if k <= 0 {
		return 0, errShort
	}
	return int(n), nil
}

// Decode returns the samples of a chunk made by Encode.
func Decode(b []byte) ([]Sample, error) {
	if len(b) < 2 {
		return nil, errShort
	}
	v := b[0]
	if v != 1 && v != 2 {
		return nil, fmt.Errorf("tsdb: unknown chunk version %d", b[0])
	}
	scale := int(b[1])
	if scale != floatMode && scale > maxScale {
		return nil, fmt.Errorf("tsdb: bad scale %d", scale)
	}
	p := 2
	n, k := binary.Uvarint(b[p:])
	if k <= 0 {
		return nil, errShort
	}
	p += k
	if n == 0 {
		return nil, nil
	}
	if n > uint64(len(b))*8 { // every sample after the first takes ≥ 3 bits
		return nil, errors.New("tsdb: implausible sample count")
	}
	var s0 Sample
	if s0.T, k = binary.Varint(b[p:]); k <= 0 {
		return nil, errShort
	}
	p += k
	var prevI int64
	if scale == floatMode {
		if len(b) < p+8 {
			return nil, errShort
		}
		s0.V = math.Float64frombits(binary.BigEndian.Uint64(b[p:]))
		p += 8
	} else {
		if prevI, k = binary.Varint(b[p:]); k <= 0 {
			return nil, errShort
		}
		p += k
		s0.V = float64(prevI) / pow10[scale]
	}
	if s0.Lag, k = binary.Varint(b[p:]); k <= 0 {
		return nil, errShort
	}
	p += k
	out := make([]Sample, 1, n)
	out[0] = s0
	r := bitReader{b: b[p:]}
	prev := s0
	prevDelta := int64(0)
	vb := buckets
	if v == 2 {
		vb = valueBuckets
	}
	for i := uint64(1); i < n; i++ {
		var dod, dl int64
		irregular := true
		if v == 2 {
			bit, err := r.readBit()
			if err != nil {
				return nil, err
			}
			irregular = bit
		}
		if irregular {
			var err error
			if dod, err = r.readVarBits(); err != nil {
				return nil, err
			}
			if v == 2 {
				if dl, err = r.readVarBits(); err != nil {
					return nil, err
				}
			}
		}
		prevDelta += dod
		s := Sample{T: prev.T + prevDelta}
		dv, err := r.readCode(vb)
		if err != nil {
			return nil, err
		}
		if scale == floatMode {
			s.V = math.Float64frombits(math.Float64bits(prev.V) ^ uint64(dv))
		} else {
			prevI += dv
			s.V = float64(prevI) / pow10[scale]
		}
		if v == 1 {
			if dl, err = r.readVarBits(); err != nil {
				return nil, err
			}
		}
		s.Lag = prev.Lag + dl
		out = append(out, s)
		prev = s
	}
	return out, nil
}

// chooseScale returns the smallest decimal scale that represents every
// value exactly, or floatMode.
func chooseScale(samples []Sample) int {
next:
	for k := 0; k <= maxScale; k++ {
		for _, s := range samples {
			x := s.V * pow10[k]
			if math.IsNaN(x) || math.Abs(x) > 1<<52 {
				return floatMode
			}
			if !exactAt(s.V, k) {
				continue next
			}
		}
		return k
	}
	return floatMode
}

// exactAt reports whether v is exactly an integer count of 10^-k.
func exactAt(v float64, k int) bool {
	x := v * pow10[k]
	return !math.IsNaN(x) && math.Abs(x) <= 1<<52 && math.Round(x)/pow10[k] == v
}

func scaled(v float64, scale int) int64 { return int64(math.Round(v * pow10[scale])) }

// Merge returns the union of two time-ordered sample slices in time order.
// Where both hold a sample at the same time, the one from b wins.
func Merge(a, b []Sample) []Sample {
	out := make([]Sample, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i].T < b[j].T:
			out = append(out, a[i])
			i++
		case a[i].T > b[j].T:
			out = append(out, b[j])
			j++
		default:
			out = append(out, b[j])
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// Sort sorts samples by time, keeping the last of equal times, and returns
// the deduplicated slice.
func Sort(s []Sample) []Sample {
	sort.SliceStable(s, func(i, j int) bool { return s[i].T < s[j].T })
	out := s[:0]
	for i := range s {
		if len(out) > 0 && out[len(out)-1].T == s[i].T {
			out[len(out)-1] = s[i]
			continue
		}
		out = append(out, s[i])
	}
	return out
}
