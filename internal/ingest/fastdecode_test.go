package ingest

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
	"unicode/utf8"
)

// genMessage writes a random canonical message: mostly the usual shape,
// often with something decodeFast must leave to the general way — a null,
// an escape, an unknown or repeated member, a wrong type, a bad number or
// time, missing parts, trailing bytes.
func genMessage(rng *rand.Rand) []byte {
	var b bytes.Buffer
	ws := func() {
		if rng.IntN(4) == 0 {
			b.WriteString([]string{" ", "\n", "\t", "\r\n  "}[rng.IntN(4)])
		}
	}
	// Half the messages are clean; in the others each part is odd now and then.
	oddness := 0
	if rng.IntN(2) == 0 {
		oddness = 8 + rng.IntN(40)
	}
	odd := func() bool { return oddness > 0 && rng.IntN(oddness) == 0 }
	str := func(s string) string {
		switch {
		case odd():
			return `null`
		case odd():
			return `"` + s + `\u0041"`
		case odd():
			return `7`
		}
		return `"` + s + `"`
	}
	num := func() string {
		if odd() {
			return []string{`null`, `"72"`, `01`, `1.`, `.5`, `1e`, `-`, `+1`, `1e400`, `NaN`, `true`}[rng.IntN(11)]
		}
		return []string{`72`, `-0`, `0`, `36.85`, `1e2`, `1E-2`, `97.0`, `120.125`, `-3.5e+1`, `0.1`}[rng.IntN(10)]
	}
	object := func(members []string) {
		rng.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
		b.WriteByte('{')
		for i, m := range members {
			if i > 0 {
				b.WriteByte(',')
			}
			ws()
			b.WriteString(m)
			ws()
		}
		b.WriteByte('}')
	}
	reading := func(k int) {
		var ms []string
		if !odd() {
			ms = append(ms, `"id":`+str(fmt.Sprint("r-", k)))
		}
		if !odd() {
			t := []string{"2026-11-24T10:15:00Z", "2026-11-24T10:15:00.250+01:00"}[rng.IntN(2)]
			if odd() {
				t = []string{"2026-11-24 10:15:00", ""}[rng.IntN(2)]
			}
			ms = append(ms, `"time":`+str(t))
		}
		if rng.IntN(4) == 0 {
			ms = append(ms, `"battery":`+num())
		}
		if odd() {
			ms = append(ms, []string{`"note":"x"`, `"patient":{"a":[1,2]}`, `"ID":"x"`, `"id":"again"`}[rng.IntN(4)])
		}
		if !odd() {
			var vb bytes.Buffer
			vb.WriteString(`"values":[`)
			for j := range rng.IntN(4) + boolInt(!odd()) {
				if j > 0 {
					vb.WriteByte(',')
				}
				var vs []string
				if rng.IntN(3) == 0 {
					vs = append(vs, `"system":`+str([]string{"http://loinc.org", "urn:iso:std:iso:11073:10101", ""}[rng.IntN(3)]))
				}
				if !odd() {
					c := []string{"8867-4", "59408-5", "150456"}[rng.IntN(3)]
					if odd() {
						c = ""
					}
					vs = append(vs, `"code":`+str(c))
				}
				if !odd() {
					vs = append(vs, `"unit":`+str([]string{"/min", "%", "Cel", "[degF]"}[rng.IntN(4)]))
				}
				if !odd() {
					vs = append(vs, `"value":`+num())
				}
				if odd() {
					vs = append(vs, []string{`"text":"x"`, `"code":"8867-4"`}[rng.IntN(2)])
				}
				save := b
				b = vb
				object(vs)
				vb = b
				b = save
			}
			vb.WriteByte(']')
			ms = append(ms, vb.String())
		}
		object(ms)
	}
	ws()
	if rng.IntN(4) == 0 {
		reading(0)
	} else {
		b.WriteByte('[')
		for k := range rng.IntN(6) + 1 {
			if k > 0 {
				b.WriteByte(',')
			}
			ws()
			if odd() {
				b.WriteString(`"not an object"`)
			} else {
				reading(k)
			}
		}
		b.WriteByte(']')
	}
	ws()
	if odd() {
		b.WriteString([]string{`x`, `]`, `{}`}[rng.IntN(3)])
	}
	return b.Bytes()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkAgrees: whatever decodeFast accepts, the general way decodes to the
// same readings, without an error.
func checkAgrees(t *testing.T, msg []byte, max int) bool {
	t.Helper()
	p := bytes.TrimLeft(msg, " \t\r\n")
	fast, ok := decodeFast(p, max)
	if !ok {
		return false
	}
	// The next message decodes into the room this one leaves (what it
	// leaves there must not show through).
	buf := fast[0].buf
	fast[0].buf = nil
	defer func() {
		fast[0].buf = buf
		recycle(fast)
	}()
	tree, err := decodeTree(p, max)
	if err != nil {
		t.Fatalf("%s\ndecodeFast accepted it; the general way: %v", msg, err)
	}
	for _, r := range tree {
		if r.Err != nil {
			t.Fatalf("%s\ndecodeFast accepted it; the general way refused %s: %v", msg, r.Field, r.Err)
		}
	}
	if !reflect.DeepEqual(fast, tree) {
		t.Fatalf("%s\ndecodeFast: %+v\nthe general way: %+v", msg, fast, tree)
	}
	return true
}

func TestDecodeFastAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	accepted, n := 0, 20_000
	for range n {
		if checkAgrees(t, genMessage(rng), 4) {
			accepted++
		}
	}
	// Both sides must be exercised: many taken the fast way, many left.
	if accepted < n/10 || accepted > n*9/10 {
		t.Fatalf("decodeFast accepted %d of %d messages", accepted, n)
	}
	t.Logf("decodeFast accepted %d of %d random messages", accepted, n)
}

// The usual messages go the fast way: a lone reading, a batch as the load
// tool and the batch benchmark send it, a multi-value monitor reading.
func TestDecodeFastTakesTheUsualShapes(t *testing.T) {
	batch := batchOf(500)
	for _, m := range []string{
		`{"id":"17","time":"2026-11-24T10:15:00Z","values":[{"code":"8867-4","value":72,"unit":"/min"}]}`,
		` { "id" : "a-1", "time": "2026-11-24T10:15:00.5+01:00", "battery": 81,
		   "values": [ {"system":"urn:iso:std:iso:11073:10101","code":"150456","value":97.5,"unit":"%"},
		               {"code":"8867-4","value":72,"unit":"/min"} ] }`,
		string(batch),
	} {
		if !checkAgrees(t, []byte(m), 5000) {
			t.Errorf("not taken the fast way: %.120s", m)
		}
	}
	// A batch over the limit is left to the general way, which refuses it.
	if _, ok := decodeFast(batch, 499); ok {
		t.Error("a batch over the limit was taken")
	}
}

func FuzzDecodeFast(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 64 {
		f.Add(genMessage(rng))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		p := bytes.TrimLeft(msg, " \t\r\n")
		if len(p) == 0 || !bytes.ContainsAny(p[:1], "[{") || !utf8.Valid(p) {
			return // DecodeCanonical refuses these before either way
		}
		checkAgrees(t, msg, 16)
	})
}

// batchOf is a batch of n heart rates as the load tool sends them.
func batchOf(n int) []byte {
	var batch bytes.Buffer
	batch.WriteByte('[')
	for j := range n {
		if j > 0 {
			batch.WriteByte(',')
		}
		fmt.Fprintf(&batch, `{"id":"3-%d","time":"2026-11-24T10:%02d:%02dZ","values":[{"code":"8867-4","value":%d,"unit":"/min"}]}`, j, j/60%60, j%60, 60+j%40)
	}
	batch.WriteByte(']')
	return batch.Bytes()
}

// BenchmarkDecodeBatch: a batch of 5,000 readings the fast way and the
// general way.
func BenchmarkDecodeBatch(b *testing.B) {
	p := batchOf(5000)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, ok := decodeFast(p, 5000); !ok {
				b.Fatal("not taken")
			}
		}
	})
	b.Run("tree", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeTree(p, 5000); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The fast decoder's numbers are strconv.ParseFloat's, bit for bit, on
// either side of its 15-digit shortcut.
func TestFastNumberIsParseFloat(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	cases := []string{"0", "-0", "0.0", "-0.0", "1", "-1", "0.1", "0.3", "36.6", "98.60", "123456789012345",
		"1234567890123456", "0.000000000000001", "0.0000000000000001", "999999999999999.9", "99999999999999.9",
		"9007199254740993", "1e3", "1.5E-3", "-2.5e+2", "0.1e1"}
	for range 20000 {
		var b []byte
		if rng.IntN(2) == 0 {
			b = append(b, '-')
		}
		n := 1 + rng.IntN(18)
		for i := range n {
			c := byte('0' + rng.IntN(10))
			if i == 0 && n > 1 {
				c = byte('1' + rng.IntN(9))
			}
			b = append(b, c)
		}
		if rng.IntN(3) > 0 {
			b = append(b, '.')
			for range 1 + rng.IntN(16) {
				b = append(b, byte('0'+rng.IntN(10)))
			}
		}
		if rng.IntN(8) == 0 {
			b = append(b, 'e')
			b = strconv.AppendInt(b, int64(rng.IntN(40)-20), 10)
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		d := &fastDecoder{p: []byte(c)}
		got, ok := d.number()
		want, err := strconv.ParseFloat(c, 64)
		if !ok || err != nil || math.Float64bits(got) != math.Float64bits(want) || d.i != len(c) {
			t.Fatalf("%s: fast %v (%v, read %d of %d), strconv %v (%v)", c, got, ok, d.i, len(c), want, err)
		}
	}
}
