package audit

import (
	"encoding/xml"
	"strings"
	"time"
)

// IHE ATNA (ITI-20 Record Audit Event): the audit message as DICOM PS3.15
// A.5 XML, the form ATNA audit record repositories take over syslog.

type codedValue struct {
	Code         string `xml:"csd-code,attr"`
	System       string `xml:"codeSystemName,attr"`
	OriginalText string `xml:"originalText,attr"`
}

type atnaMessage struct {
	XMLName             xml.Name `xml:"AuditMessage"`
	EventIdentification struct {
		ActionCode  string     `xml:"EventActionCode,attr"`
		DateTime    string     `xml:"EventDateTime,attr"`
		Outcome     int        `xml:"EventOutcomeIndicator,attr"`
		EventID     codedValue `xml:"EventID"`
		Description string     `xml:"EventOutcomeDescription,omitempty"`
	} `xml:"EventIdentification"`
	ActiveParticipant []atnaParticipant `xml:"ActiveParticipant"`
	AuditSource       struct {
		ID string `xml:"AuditSourceID,attr"`
	} `xml:"AuditSourceIdentification"`
	ParticipantObject []atnaObject `xml:"ParticipantObjectIdentification,omitempty"`
}

type atnaParticipant struct {
	UserID          string      `xml:"UserID,attr"`
	UserIsRequestor bool        `xml:"UserIsRequestor,attr"`
	AccessPointID   string      `xml:"NetworkAccessPointID,attr,omitempty"`
	AccessPointType string      `xml:"NetworkAccessPointTypeCode,attr,omitempty"`
	Role            *codedValue `xml:"RoleIDCode,omitempty"`
}

type atnaObject struct {
	ID       string     `xml:"ParticipantObjectID,attr"`
	TypeCode int        `xml:"ParticipantObjectTypeCode,attr"`
	Role     int        `xml:"ParticipantObjectTypeCodeRole,attr"`
	IDType   codedValue `xml:"ParticipantObjectIDTypeCode"`
}

// ATNA renders an entry as a DICOM audit message: the event by kind
// (user authentication, patient record, export, security alert for
// break-glass and share links, else application activity), the action
// from the HTTP method, the outcome (0 success, 4 denied, 8 failed), the
// user with their role and address, Vigil as the audit source and the
// patient by id.
func ATNA(e Entry, sourceID string) []byte {
	var m atnaMessage
	ev := &m.EventIdentification
	ev.DateTime = e.Time.UTC().Format(time.RFC3339Nano)
	switch e.Outcome {
	case Success:
		ev.Outcome = 0
	case Denied:
		ev.Outcome = 4
	default:
		ev.Outcome = 8
	}
	ev.Description = e.Detail
	method, _, _ := strings.Cut(e.Action, " ")
	ev.ActionCode = map[string]string{"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}[method]
	if ev.ActionCode == "" {
		ev.ActionCode = "E"
	}
	switch a := strings.ToLower(e.Action); {
	case strings.Contains(a, "login"):
		ev.EventID = codedValue{"110114", "DCM", "User Authentication"}
	case e.Action == "BREAK-GLASS" || e.Action == "SHARE":
		ev.EventID = codedValue{"110113", "DCM", "Security Alert"}
	case strings.Contains(a, "$export"):
		ev.EventID = codedValue{"110106", "DCM", "Export"}
	case e.Patient != "":
		ev.EventID = codedValue{"110110", "DCM", "Patient Record"}
	default:
		ev.EventID = codedValue{"110100", "DCM", "Application Activity"}
	}
	user := atnaParticipant{UserID: e.Actor, UserIsRequestor: true, AccessPointID: e.Remote}
	if user.UserID == "" {
		user.UserID = "(unauthenticated)"
	}
	if e.Remote != "" {
		user.AccessPointType = "2" // IP address
	}
	if e.Role != "" {
		user.Role = &codedValue{e.Role, "Vigil role", e.Role}
	}
	m.ActiveParticipant = []atnaParticipant{user}
	m.AuditSource.ID = sourceID
	if e.Patient != "" {
		m.ParticipantObject = []atnaObject{{ID: e.Patient, TypeCode: 1, Role: 1, IDType: codedValue{"2", "RFC-3881", "Patient Number"}}}
	}
	b, _ := xml.Marshal(m)
	return append([]byte(xml.Header[:len(xml.Header)-1]), b...)
}
