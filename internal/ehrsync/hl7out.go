package ehrsync

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/fhir"
	"github.com/vigil-iomt/vigil/internal/hl7"
	"github.com/vigil-iomt/vigil/internal/pcd"
)

// hl7Dest sends each stored reading as an HL7 v2 ORU^R01 (IHE PCD-01
// shape, LOINC-coded OBX) over MLLP to an interface engine, one message
// at a time on one connection, waiting for its ACK: AA/CA settles it,
// AE/AR/CE/CR refuses it for good (a dead letter with MSA-3 and ERR-8),
// no answer or a broken connection retries the batch (MSH-10 is stable, so
// a receiver that dedupes by it stores a resend once). Alerts are not
// sent this way (ORU^R40 is not done).
type hl7Dest struct {
	s          *Syncer
	addr       string
	tls        bool
	serverName string
	conn       net.Conn
	frames     *hl7.FrameReader
}

const ackTimeout = 30 * time.Second

func (d *hl7Dest) close() {
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
}

func (d *hl7Dest) build(ctx context.Context, es []vigil.FeedEntry) ([]item, []uint64, error) {
	s := d.s
	var items []item
	var skip []uint64
	for _, e := range es {
		if e.Kind != vigil.FeedReading {
			skip = append(skip, e.Seq)
			continue
		}
		obs, err := fhir.ReadingObservations(ctx, s.o.Store, e.PatientID, e.DeviceID, e.Time)
		if err != nil {
			return nil, nil, err
		}
		if len(obs) == 0 {
			skip = append(skip, e.Seq)
			continue
		}
		p, err := s.o.Store.FindPatientByID(ctx, e.PatientID)
		if err != nil && vigil.ErrorCode(err) != vigil.ENOTFOUND {
			return nil, nil, err
		}
		if p == nil {
			p = &vigil.Patient{ID: e.PatientID}
		}
		h := sha256.Sum256([]byte(e.DeviceID + "\x00" + e.ReadingID))
		o := pcd.ORU{ControlID: "VGL" + hex.EncodeToString(h[:12]), Sent: s.o.Now(), MRN: cmp.Or(p.Identifier, p.ID), Family: p.Family, Given: p.Given,
			BirthDate: p.BirthDate, Sex: p.Sex, ObservedAt: e.Time}
		for _, ob := range obs {
			parts := []vigil.Measurement{{Code: ob.Code, Value: ob.Value, Unit: ob.Unit, Text: ob.Text, Concept: ob.Concept}}
			if ob.Code == vigil.LOINCBPPanel {
				parts = ob.Components
			}
			for _, m := range parts {
				r := pcd.Result{Code: m.Code, Display: fhir.CodeDisplay(m.Code), Value: m.Value, Unit: m.Unit, Text: m.Text, Time: ob.Time, Equipment: ob.DeviceID}
				if c := m.Concept; c != nil {
					r.Text = c.Text
					if len(c.Coding) > 0 {
						if sys, ok := hl7CodingSystems[c.Coding[0].System]; ok {
							r.CodedValue = &pcd.Coded{Code: c.Coding[0].Code, Text: cmp.Or(c.Coding[0].Display, c.Text), System: sys}
						} else if r.Text == "" {
							r.Text = cmp.Or(c.Coding[0].Display, c.Coding[0].Code)
						}
					}
				}
				o.Results = append(o.Results, r)
			}
		}
		items = append(items, item{seq: []uint64{e.Seq}, typ: "ORU^R01", id: o.ControlID, url: o.ControlID, msg: pcd.EncodeORU(o)})
	}
	return items, skip, nil
}

// hl7CodingSystems names FHIR code systems as HL7 v2 table 0396 does; a
// coded value in another system goes as text (ST).
var hl7CodingSystems = map[string]string{"http://snomed.info/sct": "SCT", vigil.SystemLOINC: "LN", vigil.SystemMDC: "MDC"}

func (d *hl7Dest) dial(ctx context.Context) error {
	if d.conn != nil {
		return nil
	}
	dl := net.Dialer{Timeout: 10 * time.Second}
	var c net.Conn
	var err error
	if d.tls {
		c, err = (&tls.Dialer{NetDialer: &dl, Config: &tls.Config{ServerName: d.serverName, MinVersion: tls.VersionTLS12}}).DialContext(ctx, "tcp", d.addr)
	} else {
		c, err = dl.DialContext(ctx, "tcp", d.addr)
	}
	if err != nil {
		return fmt.Errorf("the interface engine could not be reached: %w", err)
	}
	d.conn, d.frames = c, hl7.NewFrameReader(c, 1<<20)
	return nil
}

func (d *hl7Dest) send(ctx context.Context, items []item) ([]result, time.Duration, error) {
	results := make([]result, len(items))
	for i, it := range items {
		if err := d.dial(ctx); err != nil {
			return nil, 0, err
		}
		d.conn.SetDeadline(time.Now().Add(ackTimeout))
		if _, err := d.conn.Write(hl7.AppendFrame(nil, it.msg)); err != nil {
			d.close()
			return nil, 0, fmt.Errorf("sending %s: %w", it.id, err)
		}
		frame, err := d.frames.Read()
		if err != nil {
			d.close()
			return nil, 0, fmt.Errorf("no ACK for %s: %w", it.id, err)
		}
		ack, err := hl7.Parse(frame)
		msa := (*hl7.Segment)(nil)
		if err == nil {
			msa = ack.Segment("MSA")
		}
		if msa == nil || msa.Value(2) != it.id {
			d.close()
			return nil, 0, fmt.Errorf("the answer to %s is not its ACK", it.id)
		}
		switch code := msa.Value(1); code {
		case "AA", "CA":
			results[i].ok = true
		case "AE", "AR", "CE", "CR":
			why := msa.Value(3)
			if e := ack.Segment("ERR"); e != nil && e.Value(8) != "" {
				why += " " + e.Value(8)
			}
			results[i].why = fmt.Sprintf("the interface engine answered %s: %s", code, why)
		default:
			d.close()
			return nil, 0, fmt.Errorf("the ACK for %s has MSA-1 %q", it.id, code)
		}
	}
	return results, 0, nil
}
