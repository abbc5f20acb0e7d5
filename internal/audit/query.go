package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Query selects audit entries. Zero fields select everything.
type Query struct {
	From, To time.Time // From ≤ time < To
	Actor    string    // user or device id
	Patient  string    // whose data
	Outcome  string    // success, denied, failure
	After    uint64    // entries after this index (a page's Next); 0: from the start
	Limit    int       // at most this many (default 100, at most 1000)
}

// Page is one page of entries, oldest first; Next is the After of the
// following page, 0 when there is none.
type Page struct {
	Entries []Entry `json:"entries"`
	Next    uint64  `json:"next,omitempty"`
}

// Find returns the entries matching q, in log order.
func Find(ctx context.Context, s Store, q Query) (*Page, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, 1000)
	start := uint64(0)
	if q.After > 0 {
		start = q.After + 1
	}
	p := &Page{Entries: []Entry{}}
	errFull := fmt.Errorf("page full")
	err := s.ScanAudit(ctx, start, func(index uint64, rec []byte) error {
		var r record
		var e Entry
		if err := json.Unmarshal(rec, &r); err != nil {
			return fmt.Errorf("audit record %d is corrupt: %w (run vigil audit verify)", index, err)
		}
		if err := json.Unmarshal(r.Entry, &e); err != nil {
			return fmt.Errorf("audit record %d is corrupt: %w (run vigil audit verify)", index, err)
		}
		if !q.matches(&e) {
			return nil
		}
		if len(p.Entries) == q.Limit {
			p.Next = p.Entries[len(p.Entries)-1].Index
			return errFull
		}
		p.Entries = append(p.Entries, e)
		return nil
	})
	if err != nil && err != errFull {
		return nil, err
	}
	return p, nil
}

func (q *Query) matches(e *Entry) bool {
	return (q.From.IsZero() || !e.Time.Before(q.From)) &&
		(q.To.IsZero() || e.Time.Before(q.To)) &&
		(q.Actor == "" || e.Actor == q.Actor) &&
		(q.Patient == "" || e.Patient == q.Patient) &&
		(q.Outcome == "" || e.Outcome == q.Outcome)
}

// AuditEvent renders e as a FHIR R4 AuditEvent, for SIEMs and audit
// repositories that take FHIR (IHE BALP's basic shape: a RESTful or login
// event, the requesting agent with its network address, Vigil as the
// observer, the patient as an entity).
func (e *Entry) AuditEvent() map[string]any {
	ev := map[string]any{
		"resourceType": "AuditEvent",
		"id":           fmt.Sprintf("audit-%d", e.Index),
		"recorded":     e.Time.UTC().Format(time.RFC3339Nano),
		"outcome":      outcomeCode(e.Outcome),
		"source": map[string]any{
			"observer": map[string]any{"display": "Vigil"},
			"type": []any{map[string]any{
				"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server",
			}},
		},
	}
	if e.Outcome != Success {
		desc := e.Outcome
		if e.Detail != "" {
			desc += ": " + e.Detail
		}
		ev["outcomeDesc"] = desc
	}
	method, _, _ := strings.Cut(e.Action, " ")
	switch {
	case strings.HasPrefix(e.Action, "login"):
		ev["type"] = coding("http://dicom.nema.org/resources/ontology/DCM", "110114", "User Authentication")
		ev["subtype"] = []any{coding("http://dicom.nema.org/resources/ontology/DCM", "110122", "Login")}
		ev["action"] = "E"
	default:
		ev["type"] = coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation")
		ev["action"] = map[string]string{"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}[method]
		if ev["action"] == "" {
			ev["action"] = "E"
		}
	}
	agent := map[string]any{"requestor": true}
	if e.Actor != "" {
		agent["who"] = map[string]any{"identifier": map[string]any{"system": "urn:vigil:user", "value": e.Actor}}
		agent["altId"] = e.Actor
	} else {
		agent["who"] = map[string]any{"display": "unauthenticated"}
	}
	if e.Role != "" {
		agent["role"] = []any{map[string]any{"text": e.Role}}
	}
	if e.Remote != "" {
		agent["network"] = map[string]any{"address": e.Remote, "type": "2"} // 2: IP address
	}
	ev["agent"] = []any{agent}
	var entities []any
	if e.Patient != "" {
		entities = append(entities, map[string]any{
			"what": map[string]any{"reference": "Patient/" + e.Patient},
			"type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"),
			"role": coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
		})
	}
	if e.Resource != "" {
		ent := map[string]any{
			"what": map[string]any{"display": e.Resource},
			"type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
		}
		if e.Action != "" {
			ent["description"] = e.Action
		}
		entities = append(entities, ent)
	}
	if e.Detail != "" && e.Outcome == Success {
		entities = append(entities, map[string]any{
			"what":        map[string]any{"display": "detail"},
			"description": e.Detail,
		})
	}
	if len(entities) > 0 {
		ev["entity"] = entities
	}
	return ev
}

func coding(system, code, display string) map[string]any {
	return map[string]any{"system": system, "code": code, "display": display}
}

// outcomeCode maps an outcome to FHIR's AuditEventOutcome: 0 success,
// 4 minor failure (refused: the system worked), 8 serious failure.
func outcomeCode(o string) string {
	switch o {
	case Success:
		return "0"
	case Denied:
		return "4"
	}
	return "8"
}
