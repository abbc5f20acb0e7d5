package broker

import (
	"slices"
	"strings"
)

// TopicRoot is the prefix of every device topic: a device owns
// TopicRoot + "{device id}/" and everything under it.
const TopicRoot = "vigil/v1/devices/"

// ReadingsTopic returns the topic on which a device publishes readings;
// messages on it are ingested and never forwarded to subscribers.
func ReadingsTopic(deviceID string) string {
	return TopicRoot + deviceID + "/readings"
}

// allowed reports whether a device may publish to topic, subscribe to
// filter, or receive a message on topic: it must lie strictly under the
// device's own prefix. Wildcards are only possible after that literal
// prefix, so "#", "+/...", "vigil/v1/devices/+/..." and other devices'
// prefixes (including shared subscriptions, "$share/...") are refused.
func allowed(deviceID, topic string) bool {
	sub, ok := deviceSub(deviceID, topic)
	return ok && sub != ""
}

// deviceSub is what follows the device's own prefix (TopicRoot + deviceID
// + "/") in topic, and whether topic starts with that prefix; it builds
// no string (every PUBLISH asks).
func deviceSub(deviceID, topic string) (string, bool) {
	if deviceID == "" {
		return "", false
	}
	rest, ok := strings.CutPrefix(topic, TopicRoot)
	if !ok {
		return "", false
	}
	rest, ok = strings.CutPrefix(rest, deviceID)
	if !ok || rest == "" || rest[0] != '/' {
		return "", false
	}
	return rest[1:], true
}

// CommandsTopic is where Vigil sends a device its commands (only Vigil
// publishes there); the device answers on CommandsTopic + "/ack".
func CommandsTopic(deviceID string) string { return TopicRoot + deviceID + "/commands" }

// mayWrite reports whether a device may publish on topic: its own topics,
// except its commands topic, where only Vigil speaks.
func mayWrite(deviceID, topic string) bool {
	sub, ok := deviceSub(deviceID, topic)
	return ok && sub != "" && sub != "commands"
}

// AlertsRoot is the prefix of the alert topics Vigil publishes for
// nurse-call systems: AlertsRoot + "{ward}/{patient}/{alert id}". Only
// devices of kind nurse-call may subscribe to them; nobody may publish.
const AlertsRoot = "vigil/v1/alerts/"

// mayRead reports whether a device may subscribe to filter or receive a
// message on topic: its own topics, and for a nurse-call system the
// alert topics.
func mayRead(deviceID string, nurseCall bool, topic string) bool {
	return allowed(deviceID, topic) || nurseCall && len(topic) > len(AlertsRoot) && strings.HasPrefix(topic, AlertsRoot)
}

// Ingest topics under a device's prefix and the payload format each
// carries (vigil.Message.Format): readings (Vigil's canonical JSON), gatt
// (Bluetooth GATT characteristics relayed by a gateway), omh (Open
// mHealth data points), medtech (any JSON, mapped by the device's
// MedTech-compatible templates).
var ingestTopics = map[string]string{"readings": "", "gatt": "gatt", "omh": "omh", "medtech": "medtech"}

// ingestFormat reports whether topic is one of the device's ingest
// topics, and its payload format.
func ingestFormat(deviceID, topic string) (string, bool) {
	rest, ok := deviceSub(deviceID, topic)
	if !ok {
		return "", false
	}
	f, ok := ingestTopics[rest]
	return f, ok
}

// DeviceTopics are the topics under a device's own prefix that mean
// something to Vigil (TopicRoot + id + "/" + each), for the authorization
// matrix: the ingest topics, the commands topic and its acks.
func DeviceTopics() []string {
	out := []string{"commands", "commands/ack"}
	for t := range ingestTopics {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}
