// Package sim simulates a cohort of patients and their devices: bedside
// monitors and wearables that publish over MQTT, home blood-pressure
// cuffs and glucometers that upload over HTTP. Devices connect the way
// real ones do, with their own credentials, and never drop a reading they
// generated: unacknowledged readings are buffered and sent again (same id,
// so Vigil stores them once), including after deliberately dropped
// connections, which then arrive as late batches.
package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-iomt/vigil"
)

// DevicePlan is one simulated device.
type DevicePlan struct {
	ID        string
	Kind      string // vigil.Device* kinds
	Transport string // "mqtt" or "http"
}

// PatientPlan is one simulated patient and their devices.
type PatientPlan struct {
	Patient      vigil.Patient
	Devices      []DevicePlan
	Deteriorates bool // a scripted sepsis-like course
}

var (
	families = []string{"Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "Jackson", "Clarke", "Nguyen", "Kowalski", "Okafor", "Schmidt", "Rossi", "Garcia", "Murphy"}
	givens   = []string{"Alex", "Sam", "Jordan", "Morgan", "Riley", "Casey", "Jamie", "Robin", "Avery", "Quinn", "Charlie", "Dana", "Eli", "Frankie", "Harper", "Kai", "Lee", "Noor", "Parker", "Reese"}
)

// Plan returns a deterministic cohort of n patients. Patients cycle
// through five profiles, so any 40 contain every device kind: ICU beds
// with bedside monitors, ward beds with a monitor and a wearable, ward
// patients with only a wearable, and home patients with a BP cuff or a
// glucometer. One patient in eight (in hospital) deteriorates.
func Plan(n int, seed uint64) []PatientPlan {
	rng := rand.New(rand.NewPCG(seed, 0x5157))
	out := make([]PatientPlan, n)
	for i := range out {
		id := fmt.Sprintf("sim-p%03d", i+1)
		p := vigil.Patient{
			ID:         id,
			Identifier: fmt.Sprintf("SIM-%06d", 100000+rng.IntN(900000)),
			Family:     families[rng.IntN(len(families))],
			Given:      givens[rng.IntN(len(givens))],
			BirthDate:  time.Date(1930+rng.IntN(75), time.Month(1+rng.IntN(12)), 1+rng.IntN(28), 0, 0, 0, 0, time.UTC).Format(time.DateOnly),
			Sex:        []string{"female", "male"}[rng.IntN(2)],
		}
		pl := PatientPlan{Patient: p}
		dev := func(suffix, kind, transport string) {
			pl.Devices = append(pl.Devices, DevicePlan{ID: id + "-" + suffix, Kind: kind, Transport: transport})
		}
		switch i % 5 {
		case 0:
			pl.Patient.Ward, pl.Patient.Bed = "ICU", fmt.Sprint(i/5+1)
			dev("mon", vigil.DeviceBedsideMonitor, "mqtt")
		case 1, 2:
			pl.Patient.Ward, pl.Patient.Bed = "Ward 7", fmt.Sprint(i/5*2+i%5)
			dev("mon", vigil.DeviceBedsideMonitor, "mqtt")
			if i%5 == 2 {
				dev("wear", vigil.DeviceWearable, "mqtt")
			}
		case 3:
			pl.Patient.Ward, pl.Patient.Bed = "Ward 7", fmt.Sprint(i/5*2+i%5)
			dev("wear", vigil.DeviceWearable, "mqtt")
		case 4:
			pl.Patient.Ward = "Home"
			if (i/5)%2 == 0 {
				dev("cuff", vigil.DeviceBPCuff, "http")
			} else {
				dev("gluco", vigil.DeviceGlucometer, "http")
			}
		}
		pl.Deteriorates = i%8 == 3 || i%8 == 5 && i%5 != 4
		if pl.Patient.Ward == "Home" {
			pl.Deteriorates = false
		}
		out[i] = pl
	}
	return out
}

// Options configure Run.
type Options struct {
	MQTTAddr string            // host:port
	HTTPURL  string            // base URL
	Secrets  map[string]string // device id → secret
	// TLS, when set, is used for MQTT (mqtts) and HTTPS: a server started
	// with TLS (the default of vigil serve).
	TLS *tls.Config
	// Speed compresses scripted deteriorations and the intervals of
	// devices that measure rarely (cuffs, glucometers, NIBP, temperature):
	// 30 runs a 60-minute course in 2 minutes. Device times are always
	// the real clock, never in the future.
	Speed  float64
	Seed   uint64
	Logger *slog.Logger
	// DropEvery is the mean time between deliberately dropped MQTT
	// connections per device (0: never). While offline, readings are
	// buffered and sent as one late batch after reconnecting.
	DropEvery time.Duration
	// Sent, if set, is called for every reading acknowledged by Vigil
	// (for tests and statistics).
	Sent func(deviceID, readingID string)
}

// Run simulates until ctx is done and returns nil then.
func Run(ctx context.Context, plans []PatientPlan, o Options) error {
	if o.Speed <= 0 {
		o.Speed = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	boot := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)
	var wg sync.WaitGroup
	for i, pl := range plans {
		rng := rand.New(rand.NewPCG(o.Seed, uint64(i)))
		ph := &sharedPhysio{p: newPhysio(rng, pl.Deteriorates)}
		for j, dp := range pl.Devices {
			secret, ok := o.Secrets[dp.ID]
			if !ok {
				return fmt.Errorf("no secret for simulated device %s", dp.ID)
			}
			d := &device{plan: dp, secret: secret, o: o, physio: ph, start: start, rng: rand.New(rand.NewPCG(o.Seed, uint64(i*16+j+1<<32))), boot: boot}
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.run(ctx)
			}()
		}
	}
	wg.Wait()
	return nil
}

type sharedPhysio struct {
	mu sync.Mutex
	p  *physio
}

func (s *sharedPhysio) at(now time.Time, elapsed time.Duration) Vitals {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p.step(now, elapsed)
}

// reading is the canonical message.
type reading struct {
	ID     string  `json:"id"`
	Time   string  `json:"time"`
	Values []value `json:"values"`
}

type value struct {
	Code  string  `json:"code"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

type device struct {
	plan   DevicePlan
	secret string
	o      Options
	physio *sharedPhysio
	start  time.Time
	rng    *rand.Rand
	boot   string
	seq    int
	queue  []reading // generated, not yet acknowledged
}

// schedule is what a device measures and how often (real time for vital
// streams; rare measurements are divided by Speed).
type stream struct {
	every time.Duration
	rare  bool
	codes func(v Vitals) []value
}

func (d *device) streams() []stream {
	fast := func(v Vitals) []value {
		return []value{{"8867-4", v.HR, "/min"}, {"59408-5", v.SpO2, "%"}, {"9279-1", v.RR, "/min"}}
	}
	temp := func(v Vitals) []value { return []value{{"8310-5", v.Temp, "Cel"}} }
	bp := func(v Vitals) []value {
		return []value{{"8480-6", v.SBP, "mm[Hg]"}, {"8462-4", v.DBP, "mm[Hg]"}, {"8867-4", v.HR, "/min"}}
	}
	switch d.plan.Kind {
	case vigil.DeviceBedsideMonitor:
		return []stream{{5 * time.Second, false, fast}, {15 * time.Minute, true, temp}, {15 * time.Minute, true, bp}}
	case vigil.DeviceWearable:
		return []stream{{10 * time.Second, false, func(v Vitals) []value {
			return []value{{"8867-4", v.HR, "/min"}, {"59408-5", v.SpO2, "%"}}
		}}}
	case vigil.DeviceBPCuff:
		return []stream{{6 * time.Hour, true, bp}}
	case vigil.DeviceGlucometer:
		return []stream{{8 * time.Hour, true, func(v Vitals) []value { return []value{{"2339-0", v.Glucose, "mg/dL"}} }}}
	}
	return nil
}

func (d *device) run(ctx context.Context) {
	var sender interface {
		send(ctx context.Context, batch []reading) error
		close()
	}
	if d.plan.Transport == "mqtt" {
		sender = &mqttSender{d: d}
	} else {
		sender = &httpSender{d: d, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: d.o.TLS}}}
	}
	defer sender.close()
	ss := d.streams()
	next := make([]time.Time, len(ss))
	now := time.Now()
	for i, s := range ss {
		// Stagger the first measurement so devices do not all report at once.
		next[i] = now.Add(time.Duration(d.rng.Float64() * float64(d.interval(s))))
	}
	var offlineUntil time.Time
	backoff := time.Second
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now = <-tick.C:
		}
		for i, s := range ss {
			if now.Before(next[i]) {
				continue
			}
			next[i] = next[i].Add(d.interval(s))
			if next[i].Before(now) {
				next[i] = now.Add(d.interval(s))
			}
			elapsed := time.Duration(float64(now.Sub(d.start)) * d.o.Speed)
			v := d.physio.at(now, elapsed)
			d.seq++
			d.queue = append(d.queue, reading{ID: fmt.Sprintf("%s-%s-%d", d.plan.ID, d.boot, d.seq), Time: now.UTC().Format(time.RFC3339Nano), Values: s.codes(v)})
		}
		if len(d.queue) > 20000 { // a day offline: keep the newest
			d.queue = d.queue[len(d.queue)-20000:]
		}
		if now.Before(offlineUntil) || len(d.queue) == 0 {
			continue
		}
		if d.o.DropEvery > 0 && d.plan.Transport == "mqtt" && d.rng.Float64() < float64(time.Second)/float64(d.o.DropEvery) {
			sender.close() // drop the connection; readings queue up meanwhile
			offlineUntil = now.Add(time.Duration(5+d.rng.IntN(25)) * time.Second)
			continue
		}
		batch := d.queue
		if len(batch) > 500 {
			batch = batch[:500]
		}
		if err := sender.send(ctx, batch); err != nil {
			if ctx.Err() != nil {
				return
			}
			d.o.Logger.Warn("simulated device cannot deliver; retrying", "device", d.plan.ID, "queued", len(d.queue), "err", err)
			offlineUntil = now.Add(backoff)
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = time.Second
		if d.o.Sent != nil {
			for _, r := range batch {
				d.o.Sent(d.plan.ID, r.ID)
			}
		}
		d.queue = d.queue[len(batch):]
	}
}

func (d *device) interval(s stream) time.Duration {
	if s.rare {
		return max(time.Second, time.Duration(float64(s.every)/d.o.Speed))
	}
	return s.every
}

func encode(batch []reading) []byte {
	var b []byte
	if len(batch) == 1 {
		b, _ = json.Marshal(batch[0])
	} else {
		b, _ = json.Marshal(batch)
	}
	return b
}

// mqttSender publishes with QoS 1 on the device's own connection.
type mqttSender struct {
	d      *device
	client mqtt.Client
}

func (m *mqttSender) connect() error {
	scheme := "tcp://"
	if m.d.o.TLS != nil {
		scheme = "ssl://"
	}
	o := mqtt.NewClientOptions().AddBroker(scheme + m.d.o.MQTTAddr).SetTLSConfig(m.d.o.TLS).
		SetClientID(m.d.plan.ID).SetUsername(m.d.plan.ID).SetPassword(m.d.secret).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).SetKeepAlive(30 * time.Second)
	c := mqtt.NewClient(o)
	t := c.Connect()
	if !t.WaitTimeout(15 * time.Second) {
		return errors.New("MQTT connect timed out")
	}
	if err := t.Error(); err != nil {
		return err
	}
	m.client = c
	return nil
}

func (m *mqttSender) send(ctx context.Context, batch []reading) error {
	if m.client == nil || !m.client.IsConnectionOpen() {
		if err := m.connect(); err != nil {
			return err
		}
	}
	// One message per reading when live; a late batch as one array.
	var msgs [][]byte
	if len(batch) <= 3 {
		for _, r := range batch {
			msgs = append(msgs, encode([]reading{r}))
		}
	} else {
		msgs = [][]byte{encode(batch)}
	}
	topic := "vigil/v1/devices/" + m.d.plan.ID + "/readings"
	for _, b := range msgs {
		t := m.client.Publish(topic, 1, false, b)
		select {
		case <-t.Done():
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(30 * time.Second):
			m.close()
			return errors.New("no PUBACK within 30 s")
		}
		if err := t.Error(); err != nil {
			m.close()
			return err
		}
	}
	return nil
}

func (m *mqttSender) close() {
	if m.client != nil {
		m.client.Disconnect(100)
		m.client = nil
	}
}

// httpSender posts batches with HTTP Basic authentication.
type httpSender struct {
	d      *device
	client *http.Client
}

func (h *httpSender) send(ctx context.Context, batch []reading) error {
	url := strings.TrimSuffix(h.d.o.HTTPURL, "/") + "/api/v1/devices/" + h.d.plan.ID + "/readings"
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(encode(batch)))
	if err != nil {
		return err
	}
	req.SetBasicAuth(h.d.plan.ID, h.d.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 500 || resp.StatusCode == 429:
		return fmt.Errorf("server answered %s", resp.Status)
	default:
		// The server refused the data: resending cannot help. This is a
		// simulator bug; report it loudly and drop the batch.
		h.d.o.Logger.Error("Vigil refused simulated readings", "device", h.d.plan.ID, "status", resp.StatusCode, "problem", string(body))
		return nil
	}
}

func (h *httpSender) close() {}
