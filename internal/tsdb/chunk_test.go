package tsdb

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func roundTrip(t *testing.T, in []Sample) []byte {
	t.Helper()
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(out) != len(in) {
		t.Fatalf("decoded %d samples, want %d", len(out), len(in))
	}
	for i := range in {
		if out[i].T != in[i].T || out[i].Lag != in[i].Lag || math.Float64bits(out[i].V) != math.Float64bits(in[i].V) {
			t.Fatalf("sample %d: got %+v, want %+v", i, out[i], in[i])
		}
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	t0 := int64(1_790_000_000_000)
	cases := map[string][]Sample{
		"empty":       nil,
		"one":         {{T: t0, V: 72, Lag: 0}},
		"decimals":    {{T: t0, V: 37.2}, {T: t0 + 1000, V: 37.25}, {T: t0 + 2000, V: -0.001, Lag: 3}},
		"irrational":  {{T: t0, V: math.Pi}, {T: t0 + 7, V: math.E}, {T: t0 + 9, V: 1e300}},
		"big jumps":   {{T: -5, V: 1}, {T: t0, V: -1e12}, {T: t0 + 1<<40, V: 1e12, Lag: -1 << 40}},
		"negative 0":  {{T: t0, V: 0}, {T: t0 + 1, V: 2}},
		"max values":  {{T: math.MinInt64 / 2, V: math.MaxFloat64}, {T: math.MaxInt64 / 2, V: -math.MaxFloat64}},
		"tiny values": {{T: t0, V: 5e-324}, {T: t0 + 1, V: 1e-7}},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) { roundTrip(t, in) })
	}
}

func TestRandomRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 300; trial++ {
		n := r.IntN(500)
		in := make([]Sample, n)
		ts := int64(r.Uint64() >> 24)
		for i := range in {
			ts += 1 + r.Int64N(1<<uint(r.IntN(40)+1))
			in[i] = Sample{T: ts, Lag: r.Int64N(1<<uint(r.IntN(30)+1)) - 1000}
			switch r.IntN(3) {
			case 0:
				in[i].V = float64(r.IntN(300))
			case 1:
				in[i].V = float64(r.IntN(4000)) / 10
			default:
				in[i].V = r.NormFloat64() * 1e6
			}
		}
		roundTrip(t, in)
	}
}

func TestEncodeRejectsUnordered(t *testing.T) {
	if _, err := Encode([]Sample{{T: 2}, {T: 2}}); err == nil {
		t.Fatal("equal times accepted")
	}
	if _, err := Encode([]Sample{{T: 2}, {T: 1}}); err == nil {
		t.Fatal("decreasing times accepted")
	}
}

func TestDecodeCorrupt(t *testing.T) {
	in := vitals(1000, 1)
	b, _ := Encode(in)
	for cut := 0; cut < len(b)-1; cut += 7 {
		if _, err := Decode(b[:cut]); err == nil {
			t.Fatalf("truncated chunk (%d of %d bytes) decoded without error", cut, len(b))
		}
	}
	bad := append([]byte{}, b...)
	bad[0] = 9
	if _, err := Decode(bad); err == nil {
		t.Fatal("unknown version accepted")
	}
}

func TestMergeAndSort(t *testing.T) {
	a := []Sample{{T: 1, V: 1}, {T: 3, V: 3}, {T: 5, V: 5}}
	b := []Sample{{T: 2, V: 20}, {T: 3, V: 30}, {T: 6, V: 60}}
	got := Merge(a, b)
	want := []Sample{{T: 1, V: 1}, {T: 2, V: 20}, {T: 3, V: 30}, {T: 5, V: 5}, {T: 6, V: 60}}
	if len(got) != len(want) {
		t.Fatalf("merge: %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("merge[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	s := Sort([]Sample{{T: 3, V: 1}, {T: 1}, {T: 3, V: 2}})
	if len(s) != 2 || s[1].V != 2 {
		t.Fatalf("sort: %v", s)
	}
}

// vitals simulates a regular 1 Hz heart-rate series: integer values that
// wander slowly, as a bedside monitor reports them.
func vitals(n int, seed uint64) []Sample {
	r := rand.New(rand.NewPCG(seed, 7))
	out := make([]Sample, n)
	t0 := int64(1_790_000_000_000)
	hr := 72.0
	for i := range out {
		hr += (75-hr)*0.01 + r.NormFloat64()*0.4
		out[i] = Sample{T: t0 + int64(i)*1000, V: math.Round(hr)}
	}
	return out
}

// BenchmarkEncodeVitals reports bytes per sample for a 2-hour 1 Hz chunk
// of heart rate (the chunk size the store uses).
func BenchmarkEncodeVitals(b *testing.B) {
	for _, c := range []struct {
		name string
		gen  func() []Sample
	}{
		{"hr-1Hz", func() []Sample { return vitals(7200, 1) }},
		{"temp-0.1-1Hz", func() []Sample {
			s := vitals(7200, 2)
			for i := range s {
				s[i].V = 36.5 + float64(int(s[i].V)%10)/10
			}
			return s
		}},
		{"hr-1Hz-jitter-lag", func() []Sample {
			s := vitals(7200, 3)
			r := rand.New(rand.NewPCG(3, 3))
			for i := range s {
				s[i].T += int64(r.IntN(20)) // ±10 ms clock jitter
				s[i].Lag = int64(r.IntN(2))
			}
			return s
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			in := c.gen()
			var out []byte
			for b.Loop() {
				out, _ = Encode(in)
			}
			b.ReportMetric(float64(len(out))/float64(len(in)), "bytes/reading")
			b.ReportMetric(float64(len(in)), "readings/chunk")
		})
	}
}

func BenchmarkDecodeVitals(b *testing.B) {
	in := vitals(7200, 1)
	enc, _ := Encode(in)
	for b.Loop() {
		if _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(in)), "readings/chunk")
}

func FuzzDecode(f *testing.F) {
	b, _ := Encode(vitals(50, 1))
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Decode(data)
		if err != nil {
			return
		}
		// A chunk that decodes re-encodes to something that decodes to the same samples.
		for i := 1; i < len(s); i++ {
			if s[i].T <= s[i-1].T {
				return
			}
		}
		again, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := Decode(again)
		if err != nil || len(s2) != len(s) {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

// encodeV1 is the version 1 encoder, as stores written before December
// 2026 hold its chunks: they must still read.
func encodeV1(samples []Sample) []byte {
	scale := chooseScale(samples)
	out := []byte{1, byte(scale)}
	out = binary.AppendUvarint(out, uint64(len(samples)))
	s0 := samples[0]
	out = binary.AppendVarint(out, s0.T)
	if scale == floatMode {
		out = binary.BigEndian.AppendUint64(out, math.Float64bits(s0.V))
	} else {
		out = binary.AppendVarint(out, scaled(s0.V, scale))
	}
	out = binary.AppendVarint(out, s0.Lag)
	w := bitWriter{b: out}
	prevT, prevDelta, prevLag, prevV := s0.T, int64(0), s0.Lag, s0.V
	prevI := int64(0)
	if scale != floatMode {
		prevI = scaled(s0.V, scale)
	}
	for _, s := range samples[1:] {
		delta := s.T - prevT
		w.writeVarBits(delta - prevDelta)
		prevT, prevDelta = s.T, delta
		if scale == floatMode {
			w.writeVarBits(int64(math.Float64bits(s.V) ^ math.Float64bits(prevV)))
		} else {
			i := scaled(s.V, scale)
			w.writeVarBits(i - prevI)
			prevI = i
		}
		prevV = s.V
		w.writeVarBits(s.Lag - prevLag)
		prevLag = s.Lag
	}
	return w.b
}

func TestVersion1StillReads(t *testing.T) {
	for name, vs := range map[string][]float64{"integers": {72, 73, 73, 71, 90, 72}, "decimals": {36.6, 36.7, 36.7, 37.1}, "floats": {0.1 + 0.2, math.Pi, math.E}} {
		var in []Sample
		for i, v := range vs {
			in = append(in, Sample{T: 1_700_000_000_000 + int64(i)*1000 + int64(i%2)*7, V: v, Lag: int64(i % 3)})
		}
		out, err := Decode(encodeV1(in))
		if err != nil || !slices.Equal(out, in) {
			t.Errorf("%s: %v %v, want %v", name, out, err, in)
		}
		v2, err := Encode(in)
		if err != nil || v2[0] != 2 {
			t.Fatalf("%s: writes version %d", name, v2[0])
		}
		if out, err = Decode(v2); err != nil || !slices.Equal(out, in) {
			t.Errorf("%s v2: %v %v", name, out, err)
		}
	}
}

// TestAppendEqualsEncode: a chunk extended by an Appender is byte for
// byte the chunk Encode makes of all the samples, and Append refuses
// exactly what would need another scale or is not later than the chunk.
func TestAppendEqualsEncode(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	value := func(kind int) float64 {
		switch kind {
		case 0:
			return float64(r.IntN(300))
		case 1:
			return float64(r.IntN(4000)) / 10
		case 2:
			return float64(r.IntN(40000)) / 100
		}
		return r.NormFloat64() * 1e6
	}
	appended, refused := 0, 0
	for trial := range 2000 {
		n := r.IntN(300)
		all := make([]Sample, n)
		ts := int64(r.Uint64() >> 24)
		kindA, kindB := r.IntN(4), r.IntN(4)
		cut := 0
		if n > 0 {
			cut = r.IntN(n + 1)
		}
		for i := range all {
			ts += 1 + r.Int64N(1<<uint(r.IntN(20)+1))
			kind := kindA
			if i >= cut {
				kind = kindB
			}
			all[i] = Sample{T: ts, V: value(kind), Lag: r.Int64N(100)}
		}
		a, err := NewAppender(all[:cut])
		if err != nil {
			t.Fatal(err)
		}
		rest := all[cut:]
		if trial%10 == 0 && cut > 0 && len(rest) > 0 {
			rest = append([]Sample{{T: all[cut-1].T, V: 1}}, rest...) // not later than the chunk
		}
		want, err := Encode(all)
		if err != nil {
			t.Fatal(err)
		}
		ok := a.Append(rest)
		sameScale := cut == 0 || chooseScale(all) == chooseScale(all[:cut])
		inOrder := len(rest) == len(all[cut:])
		switch {
		case ok && !(sameScale && inOrder):
			t.Fatalf("trial %d: appended what needs another scale or is out of order", trial)
		case !ok && sameScale && inOrder:
			t.Fatalf("trial %d: refused an append Encode would write at the same scale", trial)
		case ok:
			appended++
			if got := a.Bytes(); !slices.Equal(got, want) {
				t.Fatalf("trial %d: appended chunk differs from Encode's (%d vs %d bytes)", trial, len(got), len(want))
			}
			if a.Len() != len(all) {
				t.Fatalf("trial %d: Len %d, want %d", trial, a.Len(), len(all))
			}
		default:
			refused++
			if got, _ := Decode(a.Bytes()); len(got) != cut {
				t.Fatalf("trial %d: a refused append changed the chunk", trial)
			}
		}
	}
	if appended < 500 || refused < 100 {
		t.Fatalf("%d appended, %d refused: the trials do not cover both", appended, refused)
	}
}
