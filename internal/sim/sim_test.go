package sim

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/broker"
)

func TestPlan(t *testing.T) {
	a, b := Plan(40, 7), Plan(40, 7)
	kinds := map[string]int{}
	det := 0
	for i := range a {
		if !reflect.DeepEqual(a[i].Patient, b[i].Patient) || len(a[i].Devices) != len(b[i].Devices) {
			t.Fatal("Plan is not deterministic")
		}
		if !vigil.ValidID(a[i].Patient.ID) {
			t.Fatalf("bad patient id %q", a[i].Patient.ID)
		}
		for _, d := range a[i].Devices {
			kinds[d.Kind]++
			if !vigil.ValidID(d.ID) {
				t.Fatalf("bad device id %q", d.ID)
			}
		}
		if a[i].Deteriorates {
			det++
		}
	}
	for _, k := range []string{vigil.DeviceBedsideMonitor, vigil.DeviceWearable, vigil.DeviceBPCuff, vigil.DeviceGlucometer} {
		if kinds[k] == 0 {
			t.Errorf("no %s in 40 patients", k)
		}
	}
	if det < 4 {
		t.Errorf("%d deteriorating patients of 40", det)
	}
}

// receiver records what arrives, as Vigil's ingest would.
type receiver struct {
	mu  sync.Mutex
	ids map[string]map[int]bool // device → sequence numbers
	bad []string
}

func (r *receiver) add(device string, payload []byte) {
	var batch []reading
	if strings.HasPrefix(strings.TrimSpace(string(payload)), "[") {
		json.Unmarshal(payload, &batch)
	} else {
		var one reading
		json.Unmarshal(payload, &one)
		batch = []reading{one}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rd := range batch {
		i := strings.LastIndex(rd.ID, "-")
		n, err := strconv.Atoi(rd.ID[i+1:])
		tm, terr := time.Parse(time.RFC3339Nano, rd.Time)
		if err != nil || terr != nil || len(rd.Values) == 0 || tm.After(time.Now()) {
			r.bad = append(r.bad, rd.ID)
			continue
		}
		if r.ids[device] == nil {
			r.ids[device] = map[int]bool{}
		}
		r.ids[device][n] = true
	}
}

func (r *receiver) Submit(_ context.Context, m vigil.Message, done func(vigil.IngestResult)) {
	r.add(m.DeviceID, m.Payload)
	done(vigil.IngestResult{})
}

func (r *receiver) Ingest(ctx context.Context, m vigil.Message) vigil.IngestResult {
	r.add(m.DeviceID, m.Payload)
	return vigil.IngestResult{}
}

type allow map[string]string

func (a allow) Device(_ context.Context, id, secret string) (*vigil.Device, error) {
	if a[id] != secret {
		return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "bad secret")
	}
	return &vigil.Device{ID: id}, nil
}

func (a allow) DeviceByCert(_ context.Context, id, _ string) (*vigil.Device, error) {
	return nil, vigil.Errorf(vigil.EUNAUTHORIZED, "no certificates here")
}

// Every reading a device generates arrives, over MQTT with dropped
// connections and over HTTP, with the device's own credentials.
func TestRunDeliversEverything(t *testing.T) {
	plans := Plan(10, 3)
	secrets := allow{}
	for _, p := range plans {
		for _, d := range p.Devices {
			secrets[d.ID] = "secret-" + d.ID
		}
	}
	rec := &receiver{ids: map[string]map[int]bool{}}
	bo := broker.DefaultOptions()
	bo.Addr = "127.0.0.1:0"
	bo.Auth = secrets
	bo.Ingester = rec
	b, err := broker.New(bo)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		dev := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/api/v1/devices/"), "/readings")
		if !ok || secrets[user] != pass || user != dev {
			http.Error(w, "unauthorized", 401)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "read", 400)
			return
		}
		rec.add(dev, body)
		w.WriteHeader(200)
	}))
	defer srv.Close()

	var mu sync.Mutex
	sent := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Second)
	defer cancel()
	err = Run(ctx, plans, Options{
		MQTTAddr: b.Addr().String(), HTTPURL: srv.URL, Secrets: secrets, Speed: 7200, Seed: 1, DropEvery: 4 * time.Second,
		Sent: func(dev, id string) {
			mu.Lock()
			sent[dev]++
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.bad) > 0 {
		t.Fatalf("malformed readings: %v", rec.bad)
	}
	for _, p := range plans {
		for _, d := range p.Devices {
			got := rec.ids[d.ID]
			if len(got) == 0 || sent[d.ID] == 0 {
				t.Errorf("%s (%s over %s): nothing delivered", d.ID, d.Kind, d.Transport)
				continue
			}
			// Acknowledged readings form a gap-free prefix 1..n.
			for n := 1; n <= sent[d.ID]; n++ {
				if !got[n] {
					t.Errorf("%s: reading %d acknowledged but never received", d.ID, n)
					break
				}
			}
		}
	}
}
