package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/httpapi"
)

// A BLE gateway relays GATT characteristic values over MQTT; a phone app
// posts Open mHealth data points over HTTP. Both end up as readings of the
// device's patient; NaN values are data-absent, implausible ones refused.
func TestGATTAndOpenMHealth(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	now := time.Now().UTC()
	c := mqtt5(t, e.n.MQTTAddr(), e.device, e.secret)
	publish := func(payload string) *paho.PublishResponse {
		t.Helper()
		pr, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/v1/devices/" + e.device + "/gatt", QoS: 1, Payload: []byte(payload)})
		if pr == nil {
			t.Fatal(err)
		}
		return pr
	}
	// Blood pressure 138/88 (mean 120) with pulse 60, from the shared vectors; time from "time".
	if pr := publish(fmt.Sprintf(`{"id":"g1","time":%q,"characteristic":"0x2A35","hex":"1E8A00580078000000041114293B3C00012700"}`, now.Add(-time.Minute).Format(time.RFC3339))); pr.ReasonCode != 0 {
		t.Fatalf("BP: %#x %v", pr.ReasonCode, pr.Properties)
	}
	// PLX with SpO2 NaN: pulse stored, SpO2 absent.
	if pr := publish(fmt.Sprintf(`{"id":"g2","time":%q,"characteristic":"2A5F","base64":"AP8HSAA="}`, now.Format(time.RFC3339))); pr.ReasonCode != 0 {
		t.Fatalf("PLX: %#x %v", pr.ReasonCode, pr.Properties)
	}
	// Glucose 30 kg/L decodes, and is refused as implausible.
	pr := publish(fmt.Sprintf(`{"id":"g3","time":%q,"characteristic":"2A18","hex":"1B0100E307021B0B0A1EFBFF1E00120501"}`, now.Format(time.RFC3339)))
	if pr.ReasonCode < 0x80 || !strings.Contains(pr.Properties.ReasonString, "implausible") {
		t.Fatalf("glucose 30 kg/L: %#x %+v", pr.ReasonCode, pr.Properties)
	}
	latest, err := e.n.Store.LatestObservations(ctx, "p1", nil, 1)
	must(t, err)
	if bp := latest[vigil.LOINCBPPanel]; len(bp) != 1 || bp[0].Components[0].Value != 138 || bp[0].Components[1].Value != 88 {
		t.Fatalf("BP panel from GATT: %+v", latest)
	}
	if hr := latest[vigil.LOINCHeartRate]; len(hr) != 1 || hr[0].Value != 72 {
		t.Fatalf("pulse from PLX: %+v", hr)
	}
	if latest[vigil.LOINCSpO2] != nil {
		t.Fatalf("NaN SpO2 stored as %v", latest[vigil.LOINCSpO2][0].Value)
	}

	// Open mHealth over HTTP: body temperature in °F, stored in Cel.
	dp := fmt.Sprintf(`{"header":{"id":"omh-1","schema_id":{"namespace":"omh","name":"body-temperature","version":"4.0"}},
		"body":{"body_temperature":{"value":100.4,"unit":"F"},"effective_time_frame":{"date_time":%q}}}`, now.Format(time.RFC3339))
	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/omh", strings.NewReader(dp))
	req.SetBasicAuth(e.device, e.secret)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var out map[string]any
	json.Unmarshal(b, &out)
	if resp.StatusCode != 200 || out["accepted"] != 1.0 {
		t.Fatalf("omh: %d %s", resp.StatusCode, b)
	}
	temp, err := e.n.Store.LatestObservations(ctx, "p1", []string{vigil.LOINCBodyTemp}, 1)
	must(t, err)
	if tt := temp[vigil.LOINCBodyTemp]; len(tt) != 1 || tt[0].Value != 38 || tt[0].Unit != "Cel" {
		t.Fatalf("temperature: %+v", temp)
	}
}

// A gateway that already speaks FHIR posts Observations (one, and a batch
// Bundle) with its device credentials.
func TestFHIRIngest(t *testing.T) {
	e := start(t)
	now := time.Now().UTC()
	post := func(path, body string, user, pass string) (int, map[string]any, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("POST", e.n.URL()+"/fhir/R4"+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m, resp.Header
	}
	hr := fmt.Sprintf(`{"resourceType":"Observation","identifier":[{"system":"urn:gw","value":"hr-1"}],"status":"final",
		"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"effectiveDateTime":%q,
		"valueQuantity":{"value":77,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"}}`, now.Format(time.RFC3339))
	st, body, hdr := post("/Observation", hr, e.device, e.secret)
	if st != 201 || body["resourceType"] != "Observation" || hdr.Get("Location") == "" {
		t.Fatalf("POST Observation: %d %v", st, body)
	}
	if st, _, _ = post("/Observation", hr, e.device, e.secret); st != 200 {
		t.Fatalf("re-sent Observation: %d, want 200 (stored once)", st)
	}
	if st, body, _ = post("/Observation", hr, e.device, "wrong"); st != 401 || body["resourceType"] != "OperationOutcome" {
		t.Fatalf("wrong secret: %d %v", st, body)
	}
	bad := strings.Replace(hr, `"value":77`, `"value":900`, 1)
	bad = strings.Replace(bad, "hr-1", "hr-2", 1)
	if st, body, _ = post("/Observation", bad, e.device, e.secret); st != 422 || body["resourceType"] != "OperationOutcome" {
		t.Fatalf("implausible: %d %v", st, body)
	}
	// A batch: a BP panel, an SpO2 for another patient (refused), a temperature.
	bundle := fmt.Sprintf(`{"resourceType":"Bundle","type":"batch","entry":[
		{"resource":{"resourceType":"Observation","id":"bp-1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"effectiveDateTime":%[1]q,
		 "component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":121,"code":"mm[Hg]"}},
		              {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":79,"code":"mm[Hg]"}}]},
		 "request":{"method":"POST","url":"Observation"}},
		{"resource":{"resourceType":"Observation","id":"sp-1","status":"final","subject":{"reference":"Patient/someone-else"},"code":{"coding":[{"system":"http://loinc.org","code":"59408-5"}]},"effectiveDateTime":%[1]q,"valueQuantity":{"value":97,"code":"%%"}},
		 "request":{"method":"POST","url":"Observation"}},
		{"resource":{"resourceType":"Observation","id":"t-1","status":"final","subject":{"reference":"Patient/p1"},"code":{"coding":[{"system":"urn:iso:std:iso:11073:10101","code":"150364"}]},"effectiveDateTime":%[1]q,"valueQuantity":{"value":37.9,"code":"Cel"}},
		 "request":{"method":"POST","url":"Observation"}}]}`, now.Format(time.RFC3339))
	st, body, _ = post("", bundle, e.device, e.secret)
	if st != 200 || body["type"] != "batch-response" {
		t.Fatalf("batch: %d %v", st, body)
	}
	entries := body["entry"].([]any)
	status := func(i int) string { return entries[i].(map[string]any)["response"].(map[string]any)["status"].(string) }
	if len(entries) != 3 || status(0) != "201 Created" || status(1) != "422 Unprocessable Entity" || status(2) != "201 Created" {
		t.Fatalf("batch entries: %v", entries)
	}
	latest, err := e.n.Store.LatestObservations(context.Background(), "p1", nil, 1)
	must(t, err)
	if bp := latest[vigil.LOINCBPPanel]; len(bp) != 1 || bp[0].Components[0].Value != 121 {
		t.Fatalf("panel: %v", latest)
	}
	if latest[vigil.LOINCSpO2] != nil || latest[vigil.LOINCBodyTemp] == nil || latest[vigil.LOINCHeartRate][0].Value != 77 {
		t.Fatalf("latest: %v", latest)
	}
	// A transaction is all or nothing: with the foreign-subject entry it
	// is refused as a whole (400, the entry named) and nothing is stored;
	// without it, every entry is stored.
	later := now.Add(time.Minute).Format(time.RFC3339)
	tx := strings.Replace(strings.ReplaceAll(bundle, now.Format(time.RFC3339), later), `"type":"batch"`, `"type":"transaction"`, 1)
	tx = strings.NewReplacer(`"bp-1"`, `"bp-2"`, `"sp-1"`, `"sp-2"`, `"t-1"`, `"t-2"`).Replace(tx)
	st, body, _ = post("", tx, e.device, e.secret)
	if st != 400 || body["resourceType"] != "OperationOutcome" || !strings.Contains(fmt.Sprint(body), "Bundle.entry[1].resource.subject") || !strings.Contains(fmt.Sprint(body), "all or nothing") {
		t.Fatalf("transaction with a bad entry: %d %v", st, body)
	}
	latest, err = e.n.Store.LatestObservations(context.Background(), "p1", nil, 1)
	must(t, err)
	if !latest[vigil.LOINCBodyTemp][0].Time.Equal(now.Truncate(time.Second)) {
		t.Fatalf("a refused transaction stored something: %v", latest[vigil.LOINCBodyTemp][0])
	}
	good := strings.Replace(tx, `"subject":{"reference":"Patient/someone-else"},`, ``, 1)
	st, body, _ = post("", good, e.device, e.secret)
	if st != 200 || body["type"] != "transaction-response" || len(body["entry"].([]any)) != 3 {
		t.Fatalf("transaction: %d %v", st, body)
	}
	latest, err = e.n.Store.LatestObservations(context.Background(), "p1", nil, 1)
	must(t, err)
	if latest[vigil.LOINCSpO2] == nil || !latest[vigil.LOINCBodyTemp][0].Time.Equal(now.Add(time.Minute).Truncate(time.Second)) {
		t.Fatalf("after the transaction: %v", latest)
	}
}

// A MedTech user brings their templates unchanged: a payload no template
// matches is refused and dead-lettered, an admin fixes the mapping (a new
// version) and replays it, and it is stored.
func TestMedTechTemplates(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "adm", Role: vigil.RoleAdmin}, "a long admin password"))
	tok, _, err := e.n.Admin.CreateToken(ctx, "adm", admin.TokenSpec{Name: "test", TTL: time.Hour})
	must(t, err)
	c := httpapi.NewClient(e.n.URL(), tok)
	read := func(name string) []byte {
		b, err := os.ReadFile("testdata/medtech/" + name)
		must(t, err)
		return b
	}
	dev, fhirT := read("calculated-heartrate.devicemapping.json"), read("calculated-heartrate.fhirmapping.json")
	// A broken template is refused with where and why, and nothing is saved.
	_, err = c.PutMapping(ctx, "acme", httpapi.MappingRequest{DeviceTemplate: []byte(`{"templateType":"JsonPathContent","template":{"typeName":"x"}}`), FhirTemplate: fhirT, Kinds: []string{vigil.DeviceBedsideMonitor}})
	if ve, ok := err.(*vigil.Error); !ok || ve.Field != "deviceTemplate.template.typeMatchExpression" {
		t.Fatalf("broken template: %#v", err)
	}
	// A template for another payload shape (heart rate under "pulse").
	other := strings.ReplaceAll(string(dev), "heartRate", "pulse")
	m, err := c.PutMapping(ctx, "acme", httpapi.MappingRequest{DeviceTemplate: []byte(other), FhirTemplate: fhirT, Kinds: []string{vigil.DeviceBedsideMonitor}})
	must(t, err)
	if m.Version != 1 {
		t.Fatalf("version %d", m.Version)
	}
	msg := fmt.Sprintf(`{"heartRate":"78","endDate":%q,"deviceId":"device01"}`, time.Now().UTC().Format("2006-01-02T15:04:05.0000000"))
	mq := mqtt5(t, e.n.MQTTAddr(), e.device, e.secret)
	pr, _ := mq.Publish(ctx, &paho.Publish{Topic: "vigil/v1/devices/" + e.device + "/medtech", QoS: 1, Payload: []byte(msg)})
	if pr == nil || pr.ReasonCode < 0x80 || !strings.Contains(pr.Properties.ReasonString, "unmappable") {
		t.Fatalf("unmatched payload: %+v", pr)
	}
	// Fix: save the MedTech template unchanged as version 2, replay.
	m, err = c.PutMapping(ctx, "acme", httpapi.MappingRequest{DeviceTemplate: dev, FhirTemplate: fhirT, Kinds: []string{vigil.DeviceBedsideMonitor}})
	must(t, err)
	if m.Version != 2 {
		t.Fatalf("version %d", m.Version)
	}
	sum, err := c.ReplayDeadLetters(ctx, vigil.DeadLetterFilter{Reason: "unmappable"})
	must(t, err)
	if sum.Resolved != 1 {
		t.Fatalf("replay: %+v", sum)
	}
	hr, err := e.n.Store.LatestObservations(ctx, "p1", []string{vigil.LOINCHeartRate}, 1)
	must(t, err)
	if o := hr[vigil.LOINCHeartRate]; len(o) != 1 || o[0].Value != 78 || o[0].Unit != "/min" {
		t.Fatalf("mapped heart rate: %+v", hr)
	}
	// Live now: the next payload is acknowledged directly (also over HTTP).
	req, _ := http.NewRequest("POST", e.n.URL()+"/api/v1/devices/"+e.device+"/medtech", strings.NewReader(strings.Replace(msg, `"78"`, `"81"`, 1)))
	req.SetBasicAuth(e.device, e.secret)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP medtech: %d", resp.StatusCode)
	}
	ms, err := c.Mappings(ctx)
	must(t, err)
	if len(ms) != 1 || ms[0].Version != 2 {
		t.Fatalf("mappings: %+v", ms)
	}
}

// MedTech String and CodeableConcept mappings end to end: a wearable's
// posture sent over HTTP is stored and served by FHIR as valueString and
// valueCodeableConcept Observations next to its numeric heart rate.
func TestMedTechTextValues(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	devT := `{"templateType":"CollectionContent","template":[
	  {"templateType":"JsonPathContent","template":{"typeName":"position","typeMatchExpression":"$..[?(@position)]","deviceIdExpression":"$.deviceId","timestampExpression":"$.time","values":[{"valueName":"position","valueExpression":"$.position","required":true},{"valueName":"hr","valueExpression":"$.hr","required":false}]}},
	  {"templateType":"JsonPathContent","template":{"typeName":"lying","typeMatchExpression":"$..[?(@posture == 'lying')]","deviceIdExpression":"$.deviceId","timestampExpression":"$.time","values":[{"valueName":"posture","valueExpression":"$.posture","required":true}]}}]}`
	fhirT := `{"templateType":"CollectionFhir","template":[
	  {"templateType":"CodeValueFhir","template":{"typeName":"position","codes":[{"code":"8361-8","system":"http://loinc.org"}],"value":{"valueName":"position","valueType":"String"},
	    "components":[{"codes":[{"code":"8867-4","system":"http://loinc.org"}],"value":{"valueName":"hr","valueType":"Quantity","code":"/min","unit":"/min"}}]}},
	  {"templateType":"CodeValueFhir","template":{"typeName":"lying","codes":[{"code":"8361-8","system":"http://loinc.org"}],"value":{"valueName":"posture","valueType":"CodeableConcept","text":"Lying","codes":[{"code":"102538003","system":"http://snomed.info/sct","display":"Recumbent body position"}]}}}]}`
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "adm", Role: vigil.RoleAdmin}, "a long admin password"))
	tok, _, err := e.n.Admin.CreateToken(ctx, "adm", admin.TokenSpec{Name: "test", TTL: time.Hour})
	must(t, err)
	_, err = httpapi.NewClient(e.n.URL(), tok).PutMapping(ctx, "band", httpapi.MappingRequest{DeviceTemplate: []byte(devT), FhirTemplate: []byte(fhirT), Devices: []string{e.device}})
	must(t, err)
	now := time.Now().UTC().Truncate(time.Second)
	for _, msg := range []string{
		fmt.Sprintf(`{"position":"lying on the left side","hr":"58","deviceId":"band","time":%q}`, now.Add(-2*time.Second).Format(time.RFC3339)),
		fmt.Sprintf(`{"posture":"lying","deviceId":"band","time":%q}`, now.Add(-time.Second).Format(time.RFC3339)),
	} {
		postMedTech(t, e.n.URL(), e.device, e.secret, msg)
	}
	var bundle struct {
		Entry []struct {
			Resource struct {
				Code struct {
					Coding []struct{ Code string }
				}
				ValueString  string
				ValueConcept *struct {
					Text   string
					Coding []struct{ System, Code string }
				} `json:"valueCodeableConcept"`
				ValueQuantity *struct{ Value float64 }
				Category      []any
			}
		}
	}
	if st := e.call(t, "GET", "/fhir/R4/Observation?patient=p1&code=8361-8&_sort=date", e.token, nil, &bundle); st != 200 || len(bundle.Entry) != 2 {
		t.Fatalf("FHIR search: %d, %d entries", st, len(bundle.Entry))
	}
	text, coded := bundle.Entry[0].Resource, bundle.Entry[1].Resource
	if text.ValueString != "lying on the left side" || text.ValueQuantity != nil || text.Category != nil ||
		coded.ValueConcept == nil || coded.ValueConcept.Text != "Lying" || coded.ValueConcept.Coding[0].Code != "102538003" {
		t.Fatalf("text and coded Observations: %+v", bundle.Entry)
	}
	hr, err := e.n.Store.LatestObservations(ctx, "p1", []string{vigil.LOINCHeartRate}, 1)
	must(t, err)
	if o := hr[vigil.LOINCHeartRate]; len(o) != 1 || o[0].Value != 58 {
		t.Fatalf("the heart rate of the same message: %+v", hr)
	}
}

// A MedTech SampledData mapping end to end: heart rates sent one a second
// come back from FHIR as one valueSampledData Observation per hour (as
// MedTech's FHIR server would hold them), read by id, counted and paged.
func TestMedTechSampledData(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	devT := `{"templateType":"JsonPathContent","template":{"typeName":"hr","typeMatchExpression":"$..[?(@hr)]","deviceIdExpression":"$.deviceId","timestampExpression":"$.time","values":[{"valueName":"hr","valueExpression":"$.hr","required":true}]}}`
	fhirT := `{"templateType":"CodeValueFhir","template":{"typeName":"hr","periodInterval":60,"codes":[{"code":"8867-4","system":"http://loinc.org"}],"value":{"valueName":"hr","valueType":"SampledData","unit":"/min","defaultPeriod":1000}}}`
	must(t, e.n.Admin.AddUser(ctx, &vigil.User{ID: "adm", Role: vigil.RoleAdmin}, "a long admin password"))
	tok, _, err := e.n.Admin.CreateToken(ctx, "adm", admin.TokenSpec{Name: "test", TTL: time.Hour})
	must(t, err)
	// A wristband on the patient since before the previous hour.
	hour := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	secret, err := e.n.Admin.AddDevice(ctx, &vigil.Device{ID: "band-1", Kind: vigil.DeviceWearable})
	must(t, err)
	must(t, e.n.Admin.Assign(ctx, "band-1", "p1", hour.Add(-time.Minute)))
	_, err = httpapi.NewClient(e.n.URL(), tok).PutMapping(ctx, "band", httpapi.MappingRequest{DeviceTemplate: []byte(devT), FhirTemplate: []byte(fhirT), Devices: []string{"band-1"}})
	must(t, err)
	for _, v := range []struct {
		at time.Duration
		hr int
	}{{0, 70}, {time.Second, 71}, {3 * time.Second, 73}, {time.Hour + 2*time.Second, 80}} {
		msg := fmt.Sprintf(`{"hr":"%d","deviceId":"band","time":%q}`, v.hr, hour.Add(v.at).Format(time.RFC3339))
		postMedTech(t, e.n.URL(), "band-1", secret, msg)
	}
	type obs struct {
		ID              string
		EffectivePeriod struct{ Start, End string }
		ValueSampled    *struct {
			Period float64
			Data   string
		} `json:"valueSampledData"`
	}
	var page struct {
		Total int
		Link  []struct{ Relation, URL string }
		Entry []struct{ Resource obs }
	}
	if st := e.call(t, "GET", "/fhir/R4/Observation?patient=p1&code=8867-4&_count=1", e.token, nil, &page); st != 200 || len(page.Entry) != 1 {
		t.Fatalf("search: %d %+v", st, page)
	}
	first := page.Entry[0].Resource
	if first.ValueSampled == nil || first.ValueSampled.Data != "70 71 E 73" || first.ValueSampled.Period != 1000 ||
		first.EffectivePeriod.Start != hour.Format("2006-01-02T15:04:05.000Z") || first.EffectivePeriod.End != hour.Add(time.Hour).Format("2006-01-02T15:04:05.000Z") {
		t.Fatalf("first hour: %+v", first)
	}
	var next string
	for _, l := range page.Link {
		if l.Relation == "next" {
			next = l.URL
		}
	}
	if next == "" {
		t.Fatalf("no next link: %+v", page.Link)
	}
	page.Entry = nil
	if st := e.call(t, "GET", strings.TrimPrefix(next, e.n.URL()), e.token, nil, &page); st != 200 || len(page.Entry) != 1 || page.Entry[0].Resource.ValueSampled.Data != "E E 80" {
		t.Fatalf("second page: %d %+v", st, page.Entry)
	}
	var one obs
	if st := e.call(t, "GET", "/fhir/R4/Observation/"+first.ID, e.token, nil, &one); st != 200 || one.ValueSampled == nil || one.ValueSampled.Data != "70 71 E 73" {
		t.Fatalf("read %s: %d %+v", first.ID, st, one)
	}
	var count struct{ Total int }
	if st := e.call(t, "GET", "/fhir/R4/Observation?patient=p1&code=8867-4&_summary=count", e.token, nil, &count); st != 200 || count.Total != 2 {
		t.Fatalf("count: %d %d", st, count.Total)
	}
}

// postMedTech sends a payload for the device's mapping template over HTTP
// and wants it stored.
func postMedTech(t *testing.T, base, device, secret, msg string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/api/v1/devices/"+device+"/medtech", strings.NewReader(msg))
	req.SetBasicAuth(device, secret)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", msg, resp.StatusCode, body)
	}
}
