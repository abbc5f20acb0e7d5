package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/fhir"
	"github.com/vigil-iomt/vigil/internal/hl7"
	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/node"
)

type hl7env struct {
	n   *node.Node
	dir string
}

func startMLLP(t *testing.T) *hl7env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	n, err := node.Start(ctx, node.Options{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", MLLPAddr: "127.0.0.1:0",
		MaxReadingAge: -1}) // the shared IHE examples are from 2008 and 2009
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p-bp", Identifier: "789567", Family: "Doe"}))
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p-icu", Identifier: "AB60001", Family: "Brooks", Ward: "3 WEST ICU"}))
	for _, gw := range []string{"ACDE48234567ABCD", "080019FFFF4F6AC0"} {
		if _, err := n.Admin.AddDevice(ctx, &vigil.Device{ID: gw, Kind: vigil.DeviceGateway}); err != nil {
			t.Fatal(err)
		}
	}
	return &hl7env{n: n, dir: dir}
}

// send writes frames on one connection and returns the parsed ACKs.
func (e *hl7env) send(t *testing.T, msgs ...[]byte) []*hl7.Message {
	t.Helper()
	c, err := net.Dial("tcp", e.n.MLLP.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []byte
	for _, m := range msgs {
		out = hl7.AppendFrame(out, m)
	}
	// All at once, pipelined: ACKs come back in order.
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	fr := hl7.NewFrameReader(c, 1<<20)
	var acks []*hl7.Message
	for range msgs {
		b, err := fr.Read()
		if err != nil {
			t.Fatalf("reading ACK: %v", err)
		}
		a, err := hl7.Parse(b)
		if err != nil {
			t.Fatalf("ACK does not parse: %v\n%q", err, b)
		}
		acks = append(acks, a)
	}
	return acks
}

func file(t *testing.T, name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func msa(a *hl7.Message) (string, string) {
	s := a.Segment("MSA")
	return s.Value(1), s.Value(2)
}

func errCodes(a *hl7.Message) []string {
	var out []string
	for _, s := range a.Segments {
		if s.Name == "ERR" {
			out = append(out, s.Component(3, 1)+"@"+s.Get(2, 0, 1, 1)+"^"+s.Get(2, 0, 2, 1))
		}
	}
	return out
}

func TestHL7OverMLLP(t *testing.T) {
	e := startMLLP(t)
	ctx := context.Background()
	bp := file(t, "pcd01-bp.hl7")
	acks := e.send(t, bp, bp) // the second is a re-send of the same control id
	for i, a := range acks {
		if code, id := msa(a); code != "AA" || id != "MSGID1234" {
			t.Fatalf("ACK %d: MSA %s|%s, want AA|MSGID1234", i, code, id)
		}
	}
	obs, _, err := e.n.Store.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p-bp"})
	must(t, err)
	if len(obs) != 2 {
		t.Fatalf("%d observations, want a BP panel and a mean pressure: %+v", len(obs), obs)
	}
	var panel *vigil.Observation
	for _, o := range obs {
		if o.Code == vigil.LOINCBPPanel {
			panel = o
		}
	}
	if panel == nil || panel.Components[0].Value != 120 || panel.Components[1].Value != 80 || panel.DeviceID != "ACDE48234567ABCD" ||
		!panel.Time.Equal(time.Date(2009, 8, 13, 4, 57, 15, 0, time.UTC)) {
		t.Fatalf("panel: %+v", panel)
	}

	// The ICU gateway: known codes stored, unknown ones refused with ERR
	// segments naming the OBX and HL7 error 103.
	acks = e.send(t, file(t, "pcd01-icu.hl7"))
	code, _ := msa(acks[0])
	errs := errCodes(acks[0])
	if code != "AE" || len(errs) != 4 {
		t.Fatalf("ICU ACK %s with ERR %v, want AE with 4 unknown codes", code, errs)
	}
	for _, e := range errs {
		if !strings.HasPrefix(e, "103@OBX^") {
			t.Fatalf("ERR %s, want 103 at an OBX", e)
		}
	}
	latest, err := e.n.Store.LatestObservations(ctx, "p-icu", nil, 2)
	must(t, err)
	if latest[vigil.LOINCHeartRate] == nil || latest["76214-6"] == nil || latest["76215-3"] == nil {
		t.Fatalf("ICU latest: %v", latest)
	}
	// ECG heart rate (MDC 147842, OBX-4 1.6.1.1) and invasive pulse rate
	// (149522, 1.2.1.1) both map to LOINC 8867-4 at the same time: both
	// are kept, each served with its MDC code as a second coding. Where
	// it was measured is kept too (PV1-3, OBX-4), served as extensions.
	hrs := latest[vigil.LOINCHeartRate]
	if len(hrs) != 2 {
		t.Fatalf("ICU heart rates: %+v, want the ECG's and the invasive line's", hrs)
	}
	must(t, e.n.Store.FillOrigins(ctx, hrs))
	byMethod := map[string]*fhir.Observation{}
	for _, hr := range hrs {
		if hr.Origin == nil || hr.Origin.Location != "3 WEST ICU^3001^1" {
			t.Fatalf("origin of the ICU heart rate: %+v", hr.Origin)
		}
		byMethod[hr.Origin.Containment] = fhir.ObservationResource(hr)
	}
	for containment, mdc := range map[string]string{"1.6.1.1": "147842", "1.2.1.1": "149522"} {
		res := byMethod[containment]
		if res == nil || len(res.Code.Coding) != 2 || res.Code.Coding[0].Code != vigil.LOINCHeartRate ||
			res.Code.Coding[1].System != vigil.SystemMDC || res.Code.Coding[1].Code != mdc || res.ValueQuantity.Value != 60 {
			t.Fatalf("heart rate at %s: %+v, want LOINC and MDC %s", containment, res, mdc)
		}
		if len(res.Extension) != 2 || res.Extension[0].URL != fhir.ExtLocation || res.Extension[1].ValueString != containment {
			t.Fatalf("FHIR extensions: %+v", res.Extension)
		}
	}

	// Unknown patient → AE 204; unknown sender → AR 204; garbage → AR.
	unknown := strings.Replace(string(bp), "789567", "000000", 1)
	unknown = strings.Replace(unknown, "MSGID1234", "MSGID9", 1)
	sender := strings.Replace(string(bp), "ACDE48234567ABCD^EUI-64||||", "FFFF^EUI-64||||", 1)
	acks = e.send(t, []byte(unknown), []byte(sender), []byte("MSH|garbage"))
	if c, _ := msa(acks[0]); c != "AE" || !strings.HasPrefix(errCodes(acks[0])[0], "204@PID") {
		t.Fatalf("unknown patient: %s %v", c, errCodes(acks[0]))
	}
	if c, _ := msa(acks[1]); c != "AR" || !strings.HasPrefix(errCodes(acks[1])[0], "204@MSH") {
		t.Fatalf("unknown sender: %s %v", c, errCodes(acks[1]))
	}
	if c, _ := msa(acks[2]); c != "AR" {
		t.Fatalf("garbage: %s", c)
	}
	ds, err := e.n.Store.FindDeadLetters(ctx, vigil.DeadLetterFilter{})
	must(t, err)
	if len(ds) != 2 || ds[0].Source != "mllp" || ds[0].Format != "hl7v2" || !strings.Contains(ds[1].Message, "4 of 9 readings refused") {
		t.Fatalf("dead letters for refused HL7 content: %d", len(ds))
	}

	// Fix the cause (register the unknown patient) and replay through the
	// admin API: the dead letter resolves and its readings are stored; the
	// ICU one stays refused (its codes are still unknown).
	must(t, e.n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p-new", Identifier: "000000"}))
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "adm", Role: vigil.RoleAdmin}, "a long admin password"))
	tok, _, err := e.n.Admin.CreateToken(ctx, "adm", admin.TokenSpec{Name: "test", TTL: time.Hour})
	must(t, err)
	c := httpapi.NewClient(e.n.URL(), tok)
	one, err := c.DeadLetter(ctx, ds[0].ID)
	must(t, err)
	if string(one.Payload) != unknown {
		t.Fatal("dead letter payload differs from what was sent")
	}
	sum, err := c.ReplayDeadLetters(ctx, vigil.DeadLetterFilter{})
	must(t, err)
	if sum.Replayed != 2 || sum.Resolved != 1 || sum.Refused != 1 {
		t.Fatalf("replay: %+v", sum)
	}
	obs, _, err = e.n.Store.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p-new"})
	must(t, err)
	if len(obs) != 2 {
		t.Fatalf("replayed readings stored: %d", len(obs))
	}
	ds, err = e.n.Store.FindDeadLetters(ctx, vigil.DeadLetterFilter{})
	must(t, err)
	if len(ds) != 1 || !strings.Contains(ds[0].Message, "4 of 9") {
		t.Fatalf("after replay: %+v", ds)
	}
	// Replaying again changes nothing and makes no new dead letter.
	if r, err := c.ReplayDeadLetter(ctx, ds[0].ID); err != nil || r.Status != "refused" || r.Duplicates != 5 || len(r.Errors) != 4 {
		t.Fatalf("second replay: %+v %v", r, err)
	}
	if ds, _ = e.n.Store.FindDeadLetters(ctx, vigil.DeadLetterFilter{}); len(ds) != 1 {
		t.Fatalf("replay made new dead letters: %d", len(ds))
	}
	must(t, c.DeleteDeadLetter(ctx, ds[0].ID))
	if _, err := c.DeadLetter(ctx, ds[0].ID); vigil.ErrorCode(err) != vigil.ENOTFOUND {
		t.Fatalf("deleted dead letter: %v", err)
	}
}

// A third-party HL7 client from the npm registry (simple-hl7) sends the
// shared messages and reads Vigil's ACKs.
func TestHL7WithNpmClient(t *testing.T) {
	dir, _ := filepath.Abs("../../tools/hl7send")
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		if os.Getenv("VIGIL_REQUIRE_ALL") != "" {
			t.Fatalf("tools/hl7send is not installed: run make tools")
		}
		t.Skip("tools/hl7send not installed (make tools)")
	}
	e := startMLLP(t)
	host, port, _ := net.SplitHostPort(e.n.MLLP.Addr().String())
	out, err := exec.Command("node", filepath.Join(dir, "send.js"), host, port, "testdata/pcd01-bp.hl7", "testdata/pcd01-icu.hl7", "testdata/pcd01-bp.hl7").CombinedOutput()
	if err != nil {
		t.Fatalf("simple-hl7 client: %v\n%s", err, out)
	}
	var got []struct {
		MSA1, MSA2 string
		Err        []string
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r struct {
			MSA1 string   `json:"msa1"`
			MSA2 string   `json:"msa2"`
			Err  []string `json:"err"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("client output %q: %v", line, err)
		}
		got = append(got, struct {
			MSA1, MSA2 string
			Err        []string
		}{r.MSA1, r.MSA2, r.Err})
	}
	if len(got) != 3 || got[0].MSA1 != "AA" || got[0].MSA2 != "MSGID1234" || got[1].MSA1 != "AE" || len(got[1].Err) != 4 || got[2].MSA1 != "AA" {
		t.Fatalf("ACKs seen by simple-hl7: %+v", got)
	}
	obs, _, err := e.n.Store.FindObservations(context.Background(), vigil.ObservationFilter{PatientID: "p-bp"})
	must(t, err)
	if len(obs) != 2 {
		t.Fatalf("re-sent message stored twice: %d observations", len(obs))
	}
}

// BenchmarkMLLP measures HL7 ORU^R01 messages acknowledged per second
// (each ACK written after its readings are durable) over one connection
// and over 16, each connection sending its next message after the ACK, as
// integration engines do. Each message is the shared BP cuff report with a
// fresh control id (3 readings). The peer, in the same run with the same
// client, is simple-hl7's MLLP server (npm, tools/hl7send/peer.js), which
// acknowledges each message at once and stores nothing.
func BenchmarkMLLP(b *testing.B) {
	tmpl, err := os.ReadFile("testdata/pcd01-bp.hl7")
	if err != nil {
		b.Fatal(err)
	}
	// Recent times, so nothing is refused as too old.
	now := time.Now().UTC().Format("20060102150405") + "+0000"
	tmpl = []byte(strings.ReplaceAll(string(tmpl), "20090813095715+0500", now))
	for _, conns := range []int{1, 16} {
		name := map[int]string{1: "1conn", 16: "16conns"}[conns]
		b.Run("vigil/"+name, func(b *testing.B) {
			ctx := context.Background()
			n, err := node.Start(ctx, node.Options{DataDir: b.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", MLLPAddr: "127.0.0.1:0", MaxReadingAge: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			if err := n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p-bp", Identifier: "789567"}); err != nil {
				b.Fatal(err)
			}
			if _, err := n.Admin.AddDevice(ctx, &vigil.Device{ID: "ACDE48234567ABCD", Kind: vigil.DeviceGateway}); err != nil {
				b.Fatal(err)
			}
			driveMLLP(b, n.MLLP.Addr().String(), conns, tmpl)
		})
		b.Run("simple-hl7/"+name, func(b *testing.B) {
			nodeBin, err := exec.LookPath("node")
			if err != nil {
				b.Skip("node is not installed")
			}
			cmd := exec.Command(nodeBin, "../../tools/hl7send/peer.js", "0")
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			var ready struct{ Port int }
			if err := json.NewDecoder(out).Decode(&ready); err != nil {
				b.Skipf("simple-hl7 peer did not start (run make tools): %v", err)
			}
			driveMLLP(b, fmt.Sprintf("127.0.0.1:%d", ready.Port), conns, tmpl)
		})
	}
}

// driveMLLP sends b.N messages over conns connections, each waiting for
// its AA before the next, and reports msgs/s.
func driveMLLP(b *testing.B, addr string, conns int, tmpl []byte) {
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := 0; c < conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			fr := hl7.NewFrameReader(conn, 1<<20)
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				msg := strings.Replace(string(tmpl), "MSGID1234", "B"+strconv.FormatInt(i, 10), 1)
				if _, err := conn.Write(hl7.AppendFrame(nil, []byte(msg))); err != nil {
					errs <- err
					return
				}
				a, err := fr.Read()
				if err != nil {
					errs <- err
					return
				}
				if !strings.Contains(string(a), "MSA|AA|") {
					errs <- fmt.Errorf("not AA: %q", a)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// r40 is an IHE PCD ACM alarm report (ORU^R40) for SpO2 low with the
// given phase.
func r40(control, phase string) []byte {
	return []byte("MSH|^~\\&|AcmeInc^ACDE48234567ABCD^EUI-64||||" + time.Now().UTC().Format("20060102150405") + "+0000||ORU^R40^ORU_R40|" + control + "|P|2.6\r" +
		"PID|||789567^^^Imaginary Hospital^PI||Doe^John\r" +
		"PV1||I|3 WEST ICU^3001^1\r" +
		"OBR|1||ALM-77^AcmeInc|196616^MDC_EVT_ALARM^MDC|||" + time.Now().UTC().Format("20060102150405") + "+0000\r" +
		"OBX|1|ST|196674^MDC_EVT_LO^MDC|1.0.0.1.1|||||||F\r" +
		"OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.0.0.1.2|84|262688^MDC_DIM_PERCENT^MDC|90-100|L~PH~SP|||F\r" +
		"OBX|3|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|1.0.0.1.3|" + phase + "||||||F\r" +
		"OBX|4|ST|68482^MDC_ATTR_ALARM_STATE^MDC|1.0.0.1.4|active||||||F\r")
}

func TestHL7DeviceAlarms(t *testing.T) {
	e := startMLLP(t)
	ctx := context.Background()
	acks := e.send(t, r40("A1", "start"), r40("A2", "continue"))
	for _, a := range acks {
		if c, _ := msa(a); c != "AA" {
			t.Fatalf("R40 ACK %s %v", c, errCodes(a))
		}
	}
	as, err := e.n.Alerts.Alerts(ctx, vigil.AlertFilter{PatientID: "p-bp"})
	must(t, err)
	if len(as) != 1 || as[0].State != vigil.AlertFiring || as[0].Priority != vigil.PriorityHigh || as[0].Code != vigil.LOINCSpO2 || as[0].Value != 84 ||
		!strings.HasPrefix(as[0].RuleID, "device:ACDE48234567ABCD:ALM-77") {
		t.Fatalf("device alarm alerts: %+v", as)
	}
	acks = e.send(t, r40("A3", "end"))
	if c, _ := msa(acks[0]); c != "AA" {
		t.Fatalf("end: %s", c)
	}
	as, _ = e.n.Alerts.Alerts(ctx, vigil.AlertFilter{PatientID: "p-bp"})
	if len(as) != 1 || as[0].State != vigil.AlertResolved {
		t.Fatalf("after end: %+v", as)
	}
	// An alarm for an unknown patient is refused with AE 204.
	bad := strings.Replace(string(r40("A4", "start")), "789567", "999", 1)
	acks = e.send(t, []byte(bad))
	if c, _ := msa(acks[0]); c != "AE" || !strings.HasPrefix(errCodes(acks[0])[0], "204@PID") {
		t.Fatalf("unknown patient alarm: %s %v", c, errCodes(acks[0]))
	}
}
