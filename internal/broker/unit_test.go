package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigil-iomt/vigil"
)

func TestAllowed(t *testing.T) {
	tests := []struct {
		device, topic string
		want          bool
	}{
		{"dev1", "vigil/v1/devices/dev1/readings", true},
		{"dev1", "vigil/v1/devices/dev1/status", true},
		{"dev1", "vigil/v1/devices/dev1/#", true},
		{"dev1", "vigil/v1/devices/dev1/+/x", true},
		{"dev1", "vigil/v1/devices/dev1/", false},
		{"dev1", "vigil/v1/devices/dev1", false},
		{"dev1", "vigil/v1/devices/dev10/readings", false},
		{"dev1", "vigil/v1/devices/dev2/readings", false},
		{"dev1", "vigil/v1/devices/+/readings", false},
		{"dev1", "vigil/v1/devices/#", false},
		{"dev1", "#", false},
		{"dev1", "+/v1/devices/dev1/readings", false},
		{"dev1", "$share/g/vigil/v1/devices/dev1/#", false},
		{"dev1", "$SYS/broker/clients", false},
		{"", "vigil/v1/devices//x", false},
	}
	for _, tt := range tests {
		if got := allowed(tt.device, tt.topic); got != tt.want {
			t.Errorf("allowed(%q, %q) got %v, want %v", tt.device, tt.topic, got, tt.want)
		}
	}
}

// A device publishes on its own topics but not on its commands topic;
// the ingest topics name their payload format; and none of the checks
// builds a string (every PUBLISH asks them).
func TestMayWriteAndIngestFormat(t *testing.T) {
	for topic, want := range map[string]bool{
		"vigil/v1/devices/dev1/readings": true, "vigil/v1/devices/dev1/commands/ack": true,
		"vigil/v1/devices/dev1/commands": false, "vigil/v1/devices/dev1/": false, "vigil/v1/devices/dev2/readings": false,
		"vigil/v1/devices/dev10/readings": false, "vigil/v1/devices/dev1commands": false,
	} {
		if got := mayWrite("dev1", topic); got != want {
			t.Errorf("mayWrite(dev1, %q) = %v, want %v", topic, got, want)
		}
	}
	for topic, want := range map[string]string{"vigil/v1/devices/dev1/readings": "", "vigil/v1/devices/dev1/gatt": "gatt", "vigil/v1/devices/dev1/omh": "omh"} {
		if got, ok := ingestFormat("dev1", topic); !ok || got != want {
			t.Errorf("ingestFormat(dev1, %q) = %q %v, want %q", topic, got, ok, want)
		}
	}
	for _, topic := range []string{"vigil/v1/devices/dev1/status", "vigil/v1/devices/dev2/readings", "vigil/v1/devices//readings"} {
		if _, ok := ingestFormat("dev1", topic); ok {
			t.Errorf("ingestFormat(dev1, %q): an ingest topic", topic)
		}
	}
	dev, topic := "ward7-monitor-12", "vigil/v1/devices/ward7-monitor-12/readings"
	if n := testing.AllocsPerRun(100, func() { mayWrite(dev, topic); ingestFormat(dev, topic); allowed(dev, topic) }); n != 0 {
		t.Errorf("%v allocations, want none", n)
	}
}

func TestMayRead(t *testing.T) {
	for _, tt := range []struct {
		device    string
		nurseCall bool
		topic     string
		want      bool
	}{
		{"nc", true, "vigil/v1/alerts/#", true},
		{"nc", true, "vigil/v1/alerts/W3/p1/a1", true},
		{"nc", true, "vigil/v1/alerts/", false},
		{"nc", true, "vigil/v1/devices/mon/readings", false},
		{"nc", true, "#", false},
		{"nc", true, "$share/g/vigil/v1/alerts/#", false},
		{"nc", true, "vigil/v1/devices/nc/config", true},
		{"mon", false, "vigil/v1/alerts/#", false},
		{"mon", false, "vigil/v1/devices/mon/config", true},
	} {
		if got := mayRead(tt.device, tt.nurseCall, tt.topic); got != tt.want {
			t.Errorf("mayRead(%q, %v, %q) = %v, want %v", tt.device, tt.nurseCall, tt.topic, got, tt.want)
		}
	}
}

func TestRedactHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(&redactHandler{h: slog.NewTextHandler(&buf, nil), min: slog.LevelWarn})
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		PacketID:    7,
		TopicName:   "vigil/v1/devices/dev1/readings",
		Payload:     []byte(`{"patient":"SECRET"}`),
	}
	log.Info("dropped below warn", "pk", pk)
	log.Warn("value", "pk", pk)
	log.With("held", &pk).Error("pointer and bytes", "raw", []byte("SECRET"), slog.Group("g", "inner", pk))

	got := buf.String()
	if strings.Contains(got, "SECRET") || strings.Contains(got, "dropped") {
		t.Fatalf("log leaks payload or is below warn:\n%s", got)
	}
	for _, want := range []string{
		"pk.type=Publish pk.id=7 pk.qos=1 pk.payload_bytes=20",
		"held.payload_bytes=20",
		"raw_bytes=6",
		"g.inner.payload_bytes=20",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
}

// matches is MQTT filter matching (+ one level, # the rest).
func matches(filter, topic string) bool {
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, part := range f {
		switch {
		case part == "#":
			return true
		case i >= len(t):
			return false
		case part != "+" && part != t[i]:
			return false
		}
	}
	return len(f) == len(t)
}

// No filter or topic the ACL grants one device reaches another device's
// topics or the alert topics, whatever the device ids and filters.
func FuzzTopicACL(f *testing.F) {
	for _, s := range [][3]string{
		{"mon-1", "mon-2", "vigil/v1/devices/mon-2/#"}, {"mon", "mon-1", "vigil/v1/devices/mon-1/readings"},
		{"a", "b", "#"}, {"a", "b", "+/+/+/+/+"}, {"a", "b", "vigil/v1/devices/a/../b/readings"}, {"a", "b", "$share/g/vigil/v1/devices/b/#"},
		{"a", "b", "vigil/v1/devices/a/#"}, {"a", "b", "vigil/v1/devices/a"}, {"a", "b", "vigil/v1/devices/+/readings"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, dev, other, filter string) {
		if !vigil.ValidID(dev) || !vigil.ValidID(other) || dev == other {
			return
		}
		read, write := mayRead(dev, false, filter), mayWrite(dev, filter)
		if !read && !write {
			return
		}
		for _, victim := range []string{ReadingsTopic(other), CommandsTopic(other), TopicRoot + other + "/x/y", AlertsRoot + "W1/p1/a1"} {
			if matches(filter, victim) {
				t.Fatalf("device %q may use %q, which reaches %q", dev, filter, victim)
			}
		}
		if write && filter == CommandsTopic(dev) {
			t.Fatalf("device %q may publish its own commands", dev)
		}
	})
}
