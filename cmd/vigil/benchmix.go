package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
)

// benchFormats are the device kinds a load mix draws from: what each
// publishes and where.
var benchFormats = map[string]struct {
	topic   string // last topic level
	payload func(seq uint64) []byte
}{
	// canonical: a wearable's reading, one heart rate.
	"canonical": {"readings", benchPayloadSeq},
	// monitor: a bedside monitor's reading, five vital signs at once.
	"monitor": {"readings", func(seq uint64) []byte {
		b, _ := json.Marshal(map[string]any{
			"id":   strconv.FormatUint(seq, 10),
			"time": time.Now().UTC().Format(time.RFC3339Nano),
			"values": []map[string]any{
				{"code": vigil.LOINCHeartRate, "value": 60 + seq%40, "unit": "/min"},
				{"code": vigil.LOINCSpO2, "value": 94 + seq%6, "unit": "%"},
				{"code": vigil.LOINCRespRate, "value": 12 + seq%8, "unit": "/min"},
				{"code": vigil.LOINCBodyTemp, "value": 36.5 + float64(seq%10)/10, "unit": "Cel"},
				{"code": vigil.LOINCSystolic, "value": 110 + seq%30, "unit": "mm[Hg]"},
			},
		})
		return b
	}},
	// gatt: a Bluetooth heart-rate strap relayed by a phone (characteristic
	// 0x2A37, 8-bit value).
	"gatt": {"gatt", func(seq uint64) []byte {
		return []byte(fmt.Sprintf(`{"id":"%d","time":%q,"characteristic":"2A37","hex":"00%02X"}`, seq, time.Now().UTC().Format(time.RFC3339Nano), 60+seq%40))
	}},
	// omh: an Open mHealth heart-rate data point from a phone app.
	"omh": {"omh", func(seq uint64) []byte {
		now := time.Now().UTC().Format(time.RFC3339Nano)
		return []byte(fmt.Sprintf(`{"header":{"id":"%d","creation_date_time":%q,"schema_id":{"namespace":"omh","name":"heart-rate","version":"2.0"}},`+
			`"body":{"heart_rate":{"value":%d,"unit":"beats/min"},"effective_time_frame":{"date_time":%q}}}`, seq, now, 60+seq%40, now))
	}},
}

// benchMix assigns each publisher a format by weight: --mix
// canonical=60,monitor=20,gatt=10,omh=10 makes 60 % of the publishers
// wearables, 20 % bedside monitors, and so on (largest remainder).
type benchMix []string // format of publisher i

func parseBenchMix(spec string, publishers int) (benchMix, error) {
	if spec == "" {
		spec = "canonical=1"
	}
	type part struct {
		name string
		w    float64
	}
	var parts []part
	total := 0.0
	for _, f := range strings.Split(spec, ",") {
		name, ws, ok := strings.Cut(strings.TrimSpace(f), "=")
		w, err := strconv.ParseFloat(ws, 64)
		if _, known := benchFormats[name]; !ok || err != nil || w <= 0 || !known {
			return nil, fmt.Errorf("--mix %q: use format=weight,…; formats: canonical, monitor, gatt, omh", f)
		}
		parts = append(parts, part{name, w})
		total += w
	}
	counts := make([]int, len(parts))
	rem := make([]float64, len(parts))
	given := 0
	for i, p := range parts {
		exact := p.w / total * float64(publishers)
		counts[i] = int(exact)
		rem[i] = exact - float64(counts[i])
		given += counts[i]
	}
	order := make([]int, len(parts))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case rem[a] > rem[b]:
			return -1
		case rem[a] < rem[b]:
			return 1
		}
		return 0
	})
	for k := 0; given < publishers; k++ {
		counts[order[k%len(order)]]++
		given++
	}
	var m benchMix
	for i, p := range parts {
		for range counts[i] {
			m = append(m, p.name)
		}
	}
	return m, nil
}

func (m benchMix) topic(i int) string {
	return "vigil/v1/devices/" + benchDevice(i) + "/" + benchFormats[m[i]].topic
}

func (m benchMix) payload(i int, seq uint64) []byte { return benchFormats[m[i]].payload(seq) }

// String says how many publishers have each format.
func (m benchMix) String() string {
	n := map[string]int{}
	var names []string
	for _, f := range m {
		if n[f] == 0 {
			names = append(names, f)
		}
		n[f]++
	}
	var out []string
	for _, f := range names {
		out = append(out, fmt.Sprintf("%d %s", n[f], f))
	}
	return strings.Join(out, ", ")
}
