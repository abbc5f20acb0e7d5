package fhir

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
)

// Topic-based subscriptions as in the FHIR Subscriptions R5 Backport for
// R4 (hl7.fhir.uv.subscriptions-backport): the Subscription resource, its
// backport extensions, and the subscription-status Parameters that lead
// every notification Bundle. The delivery side is in notify.go.

// Vigil's subscription topics.
const (
	// TopicVitalSign: a new vital sign (Observation) for a patient.
	// Filters: patient, code.
	TopicVitalSign = "https://vigil-iomt.github.io/fhir/SubscriptionTopic/vital-sign"
	// TopicAlert: an alert raised or changed (DetectedIssue). Filters:
	// patient, severity.
	TopicAlert = "https://vigil-iomt.github.io/fhir/SubscriptionTopic/alert"
)

var topics = map[string]struct {
	resource string
	filters  []string
}{
	TopicVitalSign: {"Observation", []string{"patient", "code"}},
	TopicAlert:     {"DetectedIssue", []string{"patient", "severity"}},
}

const (
	backport           = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
	extPayloadContent  = backport + "backport-payload-content"
	extHeartbeat       = backport + "backport-heartbeat-period"
	extTimeout         = backport + "backport-timeout"
	extMaxCount        = backport + "backport-max-count"
	extFilter          = backport + "backport-filter-criteria"
	profileSubscripton = backport + "backport-subscription"
	profileStatus      = backport + "backport-subscription-status-r4"
)

type extIn struct {
	URL              string `json:"url"`
	ValueString      string `json:"valueString"`
	ValueCode        string `json:"valueCode"`
	ValueUnsignedInt *int   `json:"valueUnsignedInt"`
	ValuePositiveInt *int   `json:"valuePositiveInt"`
}

type withExt struct {
	Extension []extIn `json:"extension"`
}

type subscriptionIn struct {
	ResourceType string   `json:"resourceType"`
	ID           string   `json:"id"`
	Status       string   `json:"status"`
	Reason       string   `json:"reason"`
	End          string   `json:"end"`
	Criteria     string   `json:"criteria"`
	CriteriaExt  *withExt `json:"_criteria"`
	Channel      struct {
		Extension  []extIn  `json:"extension"`
		Type       string   `json:"type"`
		Endpoint   string   `json:"endpoint"`
		Payload    string   `json:"payload"`
		PayloadExt *withExt `json:"_payload"`
		Header     []string `json:"header"`
	} `json:"channel"`
}

func extInt(es []extIn, u string) (int, bool) {
	for _, e := range es {
		if e.URL == u {
			if e.ValueUnsignedInt != nil {
				return *e.ValueUnsignedInt, true
			}
			if e.ValuePositiveInt != nil {
				return *e.ValuePositiveInt, true
			}
		}
	}
	return 0, false
}

// parseSubscription checks a client's Subscription and returns Vigil's
// form of it (without id, owner or counters).
func parseSubscription(body []byte, now time.Time) (*vigil.Subscription, error) {
	var in subscriptionIn
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, vigil.Errorf(vigil.EINVALID, "the Subscription does not fit FHIR R4: %v", err)
	}
	if in.ResourceType != "Subscription" {
		return nil, vigil.FieldErrorf("resourceType", "invalid", "send a Subscription, not %q", in.ResourceType)
	}
	topic, ok := topics[in.Criteria]
	if !ok {
		return nil, vigil.FieldErrorf("Subscription.criteria", "invalid", "criteria names the topic: %s (new vital signs) or %s (alerts raised or changed)", TopicVitalSign, TopicAlert)
	}
	s := &vigil.Subscription{Topic: in.Criteria, Reason: in.Reason, Channel: in.Channel.Type, Endpoint: in.Channel.Endpoint, Headers: in.Channel.Header}
	if in.CriteriaExt != nil {
		for _, e := range in.CriteriaExt.Extension {
			if e.URL != extFilter {
				continue
			}
			typ, query, _ := strings.Cut(e.ValueString, "?")
			if typ != topic.resource {
				return nil, vigil.FieldErrorf("Subscription.criteria", "invalid", "the filter %q must start with %s? for this topic", e.ValueString, topic.resource)
			}
			q, err := url.ParseQuery(query)
			if err != nil {
				return nil, vigil.FieldErrorf("Subscription.criteria", "invalid", "the filter %q is not a query: %v", e.ValueString, err)
			}
			for k := range q {
				if !slices.Contains(topic.filters, k) {
					return nil, vigil.FieldErrorf("Subscription.criteria", "invalid", "this topic filters by %s, not %s", strings.Join(topic.filters, " and "), k)
				}
			}
			if s.Filter != "" {
				s.Filter += "&"
			}
			s.Filter += query
		}
	}
	switch s.Channel {
	case "rest-hook":
		u, err := url.Parse(s.Endpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, vigil.FieldErrorf("Subscription.channel.endpoint", "invalid", "a rest-hook needs an absolute https:// endpoint")
		}
		if u.Scheme == "http" && !loopback(u.Hostname()) {
			return nil, vigil.FieldErrorf("Subscription.channel.endpoint", "invalid", "notifications carry patient data: use https:// (plain http only to this machine)")
		}
	case "websocket":
		s.Endpoint = ""
	default:
		return nil, vigil.FieldErrorf("Subscription.channel.type", "invalid", "channel type must be rest-hook or websocket, not %q", s.Channel)
	}
	for _, h := range s.Headers {
		if k, _, ok := strings.Cut(h, ":"); !ok || strings.TrimSpace(k) == "" {
			return nil, vigil.FieldErrorf("Subscription.channel.header", "invalid", "a header is \"Name: value\", not %q", h)
		}
	}
	s.Payload = "empty"
	switch in.Channel.Payload {
	case "":
	case "application/fhir+json", "application/json":
		s.Payload = "full-resource"
		if in.Channel.PayloadExt != nil {
			for _, e := range in.Channel.PayloadExt.Extension {
				if e.URL == extPayloadContent {
					s.Payload = e.ValueCode
				}
			}
		}
		if s.Payload != "empty" && s.Payload != "id-only" && s.Payload != "full-resource" {
			return nil, vigil.FieldErrorf("Subscription.channel.payload", "invalid", "payload content must be empty, id-only or full-resource")
		}
	default:
		return nil, vigil.FieldErrorf("Subscription.channel.payload", "invalid", "Vigil notifies in application/fhir+json only")
	}
	var ok2 bool
	if s.Heart, ok2 = extInt(in.Channel.Extension, extHeartbeat); ok2 && (s.Heart < 0 || s.Heart > 3600) {
		return nil, vigil.FieldErrorf("Subscription.channel", "invalid", "heartbeat period must be 1 to 3600 seconds (0: none)")
	}
	s.Timeout = 10
	if t, ok := extInt(in.Channel.Extension, extTimeout); ok {
		if t < 1 || t > 120 {
			return nil, vigil.FieldErrorf("Subscription.channel", "invalid", "timeout must be 1 to 120 seconds")
		}
		s.Timeout = t
	}
	s.MaxCount = 20
	if n, ok := extInt(in.Channel.Extension, extMaxCount); ok {
		if n < 1 || n > 1000 {
			return nil, vigil.FieldErrorf("Subscription.channel", "invalid", "max count must be 1 to 1000 events per notification")
		}
		s.MaxCount = n
	}
	if in.End != "" {
		t, err := time.Parse(time.RFC3339Nano, in.End)
		if err != nil {
			return nil, vigil.FieldErrorf("Subscription.end", "invalid", "end must be an instant with a time zone")
		}
		if !t.After(now) {
			return nil, vigil.FieldErrorf("Subscription.end", "invalid", "end is in the past")
		}
		s.End = t
	}
	switch in.Status {
	case "", vigil.SubscriptionRequested, vigil.SubscriptionActive:
	default:
		return nil, vigil.FieldErrorf("Subscription.status", "invalid", "a new or changed subscription starts as requested (Vigil activates it after the handshake)")
	}
	return s, nil
}

func loopback(host string) bool {
	return host == "localhost" || host == "::1" || strings.HasPrefix(host, "127.")
}

// filterValue returns one filter parameter.
func filterValue(s *vigil.Subscription, name string) string {
	q, _ := url.ParseQuery(s.Filter)
	v := q.Get(name)
	if name == "patient" {
		v = strings.TrimPrefix(v, "Patient/")
	}
	return v
}

// SubscriptionResource renders a subscription as an R4 Subscription with
// the backport's extensions.
func SubscriptionResource(s *vigil.Subscription) map[string]any {
	ch := map[string]any{"type": s.Channel}
	var exts []map[string]any
	if s.Heart > 0 {
		exts = append(exts, map[string]any{"url": extHeartbeat, "valueUnsignedInt": s.Heart})
	}
	exts = append(exts, map[string]any{"url": extTimeout, "valueUnsignedInt": s.Timeout}, map[string]any{"url": extMaxCount, "valuePositiveInt": s.MaxCount})
	ch["extension"] = exts
	if s.Endpoint != "" {
		ch["endpoint"] = s.Endpoint
	}
	if s.Payload != "empty" {
		ch["payload"] = "application/fhir+json"
		ch["_payload"] = map[string]any{"extension": []map[string]any{{"url": extPayloadContent, "valueCode": s.Payload}}}
	}
	if len(s.Headers) > 0 {
		// Headers may hold credentials: say how many, never what.
		ch["header"] = []string{fmt.Sprintf("(%d header(s) set; not shown)", len(s.Headers))}
	}
	r := map[string]any{
		"resourceType": "Subscription",
		"id":           s.ID,
		"meta":         map[string]any{"versionId": strconv.Itoa(max(s.Version, 1)), "lastUpdated": instant(s.Updated), "profile": []string{profileSubscripton}},
		"status":       s.Status,
		"reason":       cmp.Or(s.Reason, "notifications on "+s.Topic),
		"criteria":     s.Topic,
		"channel":      ch,
	}
	if s.Filter != "" {
		r["_criteria"] = map[string]any{"extension": []map[string]any{{"url": extFilter, "valueString": topics[s.Topic].resource + "?" + s.Filter}}}
	}
	if s.Error != "" {
		r["error"] = s.Error
	}
	if !s.End.IsZero() {
		r["end"] = instant(s.End)
	}
	return r
}

// statusParameters is the subscription-status resource that leads every
// notification (and answers $status).
func statusParameters(base string, s *vigil.Subscription, typ string, events []notification) map[string]any {
	ps := []map[string]any{
		{"name": "subscription", "valueReference": map[string]string{"reference": base + "/Subscription/" + s.ID}},
		{"name": "topic", "valueCanonical": s.Topic},
		{"name": "status", "valueCode": s.Status},
		{"name": "type", "valueCode": typ},
		{"name": "events-since-subscription-start", "valueString": strconv.FormatInt(s.Events, 10)},
	}
	if s.Error != "" {
		ps = append(ps, map[string]any{"name": "error", "valueCodeableConcept": map[string]string{"text": s.Error}})
	}
	for _, e := range events {
		part := []map[string]any{
			{"name": "event-number", "valueString": strconv.FormatInt(e.number, 10)},
			{"name": "timestamp", "valueInstant": instant(e.at)},
		}
		if s.Payload != "empty" {
			part = append(part, map[string]any{"name": "focus", "valueReference": map[string]string{"reference": e.ref}})
		}
		ps = append(ps, map[string]any{"name": "notification-event", "part": part})
	}
	return map[string]any{"resourceType": "Parameters", "meta": map[string]any{"profile": []string{profileStatus}}, "parameter": ps}
}
