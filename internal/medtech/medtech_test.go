package medtech

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/vigil-iomt/vigil/internal/mapping"
)

func read(t testing.TB, name string) []byte {
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The shared CalculatedContent example normalizes exactly as MedTech
// documents.
func TestCalculatedContentMatchesMedTech(t *testing.T) {
	dt, err := ParseDeviceTemplate(read(t, "calculated-heartrate.devicemapping.json"))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := dt.Normalize(read(t, "calculated-heartrate.message.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(ms)
	var gotV, wantV any
	json.Unmarshal(got, &gotV)
	json.Unmarshal(read(t, "calculated-heartrate.normalized.json"), &wantV)
	g, _ := json.Marshal(gotV)
	w, _ := json.Marshal(wantV)
	if string(g) != string(w) {
		t.Fatalf("normalized:\n got %s\nwant %s", g, w)
	}
	ft, err := ParseFhirTemplate(read(t, "calculated-heartrate.fhirmapping.json"))
	if err != nil {
		t.Fatal(err)
	}
	vs, err := ft.Map(ms[0])
	if err != nil || len(vs) != 1 || vs[0].Code != "8867-4" || vs[0].Unit != "count/min" || vs[0].Value != 78 {
		t.Fatalf("fhir map: %+v %v", vs, err)
	}
}

func TestIotHubContent(t *testing.T) {
	dt, err := ParseDeviceTemplate(read(t, "iothub-heartrate.devicemapping.json"))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := dt.Normalize(read(t, "iothub-heartrate.message.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].DeviceID != "device123" || ms[0].Type != "heartRate" || ms[0].OccurrenceTimeUTC.Format("2006-01-02T15:04:05.000Z") != "2019-02-01T22:46:01.875Z" ||
		len(ms[0].Properties) != 1 || ms[0].Properties[0] != (Property{"hr", "78"}) {
		t.Fatalf("%+v", ms)
	}
}

func TestJsonPathContentArraysAndFilters(t *testing.T) {
	tmpl := `{"templateType":"CollectionContent","template":[
	 {"templateType":"JsonPathContent","template":{"typeName":"bp","typeMatchExpression":"$..[?(@systolic)]",
	  "deviceIdExpression":"$.device","timestampExpression":"$.at",
	  "values":[{"valueName":"sys","valueExpression":"$.systolic","required":true},{"valueName":"dia","valueExpression":"$.diastolic","required":true}]}},
	 {"templateType":"JsonPathContent","template":{"typeName":"spo2","typeMatchExpression":"$.readings[?(@.kind == 'spo2')]",
	  "deviceIdExpression":"$.device","timestampExpression":"$.at",
	  "values":[{"valueName":"v","valueExpression":"$.value","required":"true"}]}}]}`
	dt, err := ParseDeviceTemplate([]byte(tmpl))
	if err != nil {
		t.Fatal(err)
	}
	msg := `{"readings":[
	  {"device":"d1","at":"2026-11-24T10:00:00Z","systolic":120,"diastolic":80},
	  {"device":"d1","at":"2026-11-24T10:01:00+01:00","kind":"spo2","value":97},
	  {"device":"d1","at":"2026-11-24T10:02:00Z","kind":"hr","value":70}]}`
	ms, err := dt.Normalize([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Type != "bp" || ms[0].Properties[0].Value != "120" || ms[1].Type != "spo2" || ms[1].OccurrenceTimeUTC.Hour() != 9 {
		t.Fatalf("%+v", ms)
	}
	// A matched token without a required value names it.
	_, err = dt.Normalize([]byte(`{"device":"d1","at":"2026-11-24T10:00:00Z","systolic":120}`))
	if err == nil || !strings.Contains(err.Error(), "dia") {
		t.Fatalf("missing required value: %v", err)
	}
}

// Broken templates are refused with the exact position or path and why.
func TestValidation(t *testing.T) {
	for name, c := range map[string]struct{ tmpl, want string }{
		"syntax":         {"{\n  \"templateType\": \"JsonPathContent\",\n  \"template\": {,}\n}", "line 3, column"},
		"unknown type":   {`{"templateType":"MagicContent","template":{}}`, "templateType: \"MagicContent\""},
		"no typeName":    {`{"templateType":"JsonPathContent","template":{"typeMatchExpression":"$"}}`, "template.typeName: required"},
		"bad path":       {`{"templateType":"CollectionContent","template":[{"templateType":"JsonPathContent","template":{"typeName":"x","typeMatchExpression":"$..[?(@a)","deviceIdExpression":"$.d","timestampExpression":"$.t","values":[{"valueName":"v","valueExpression":"$.v"}]}}]}`, "template[0].template.typeMatchExpression: unclosed ["},
		"bad jmespath":   {`{"templateType":"CalculatedContent","template":{"typeName":"x","typeMatchExpression":"$","deviceIdExpression":{"value":"matchedToken.[d","language":"JmesPath"},"timestampExpression":"$.t","values":[{"valueName":"v","valueExpression":"$.v"}]}}`, "template.deviceIdExpression: JMESPath"},
		"no values":      {`{"templateType":"JsonPathContent","template":{"typeName":"x","typeMatchExpression":"$","deviceIdExpression":"$.d","timestampExpression":"$.t"}}`, "template.values: at least one"},
		"missing device": {`{"templateType":"JsonPathContent","template":{"typeName":"x","typeMatchExpression":"$","timestampExpression":"$.t","values":[{"valueName":"v","valueExpression":"$.v"}]}}`, "deviceIdExpression: required"},
	} {
		_, err := ParseDeviceTemplate([]byte(c.tmpl))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	for tmpl, want := range map[string]string{
		`{"templateType":"CodeValueFhir","template":{"typeName":"x","codes":[{"code":"1"}],"value":{"valueName":"v","valueType":"SampledData","unit":"/min"}}}`:                        "template.value.defaultPeriod: a SampledData value needs a defaultPeriod",
		`{"templateType":"CodeValueFhir","template":{"typeName":"x","codes":[{"code":"1","system":"urn:x"}],"value":{"valueName":"v","valueType":"String"}}}`:                          "template.value.valueType: String values are kept under a LOINC code",
		`{"templateType":"CodeValueFhir","template":{"typeName":"x","codes":[{"code":"8361-8","system":"http://loinc.org"}],"value":{"valueName":"v","valueType":"CodeableConcept"}}}`: "template.value.codes: a CodeableConcept value needs codes or a text",
		`{"templateType":"CodeValueFhir","template":{"typeName":"x","codes":[{"code":"8361-8","system":"http://loinc.org"}],"value":{"valueName":"v","valueType":"Boolean"}}}`:         "use Quantity, SampledData, String or CodeableConcept",
	} {
		if _, err := ParseFhirTemplate([]byte(tmpl)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", tmpl, err, want)
		}
	}
}

// MedTech String and CodeableConcept values: the property's text becomes
// valueString; a CodeableConcept value is the template's concept, present
// when the measurement has the property (MedTech's behaviour). A text
// value under a numeric code, or an empty text, is refused with where.
func TestTextValues(t *testing.T) {
	devT := []byte(`{"templateType":"CollectionContent","template":[
	  {"templateType":"JsonPathContent","template":{"typeName":"position","typeMatchExpression":"$..[?(@position)]","deviceIdExpression":"$.deviceId","timestampExpression":"$.time","values":[{"valueName":"position","valueExpression":"$.position","required":true}]}},
	  {"templateType":"JsonPathContent","template":{"typeName":"lying","typeMatchExpression":"$..[?(@posture == 'lying')]","deviceIdExpression":"$.deviceId","timestampExpression":"$.time","values":[{"valueName":"posture","valueExpression":"$.posture","required":true}]}}]}`)
	fhirT := []byte(`{"templateType":"CollectionFhir","template":[
	  {"templateType":"CodeValueFhir","template":{"typeName":"position","codes":[{"code":"8361-8","system":"http://loinc.org","display":"Body position with respect to gravity"}],"value":{"valueName":"position","valueType":"String"}}},
	  {"templateType":"CodeValueFhir","template":{"typeName":"lying","codes":[{"code":"8361-8","system":"http://loinc.org"}],"value":{"valueName":"posture","valueType":"CodeableConcept","text":"Lying","codes":[{"code":"102538003","system":"http://snomed.info/sct","display":"Recumbent body position"}]}}}]}`)
	res, err := Test(devT, fhirT, []byte(`{"position":"lying on the left side","deviceId":"band1","time":"2026-11-30T08:00:00Z"}`), mapping.DefaultTable(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) != 0 || len(res.Observations) != 1 || res.Observations[0].ValueString != "lying on the left side" || res.Values[0].Text != "lying on the left side" {
		t.Fatalf("String: %+v", res)
	}
	res, err = Test(devT, fhirT, []byte(`{"posture":"lying","deviceId":"band1","time":"2026-11-30T08:00:00Z"}`), mapping.DefaultTable(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) != 0 || len(res.Observations) != 1 || res.Observations[0].ValueConcept == nil ||
		res.Observations[0].ValueConcept.Text != "Lying" || res.Observations[0].ValueConcept.Coding[0].Code != "102538003" {
		t.Fatalf("CodeableConcept: %+v", res)
	}
	res, _ = Test(devT, fhirT, []byte(`{"posture":"standing","deviceId":"band1","time":"2026-11-30T08:00:00Z"}`), mapping.DefaultTable(), "")
	if len(res.Observations) != 0 {
		t.Fatalf("a posture the template does not match: %+v", res.Observations)
	}
	hrAsText := bytes.ReplaceAll(fhirT, []byte(`"8361-8","system":"http://loinc.org","display"`), []byte(`"8867-4","system":"http://loinc.org","display"`))
	res, _ = Test(devT, hrAsText, []byte(`{"position":"fast","deviceId":"band1","time":"2026-11-30T08:00:00Z"}`), mapping.DefaultTable(), "")
	if len(res.Errors) != 1 || !strings.Contains(res.Errors[0], "position.position.value") || !strings.Contains(res.Errors[0], "is a number") {
		t.Fatalf("heart rate as text: %+v", res.Errors)
	}
	res, _ = Test(devT, fhirT, []byte(`{"position":"","deviceId":"band1","time":"2026-11-30T08:00:00Z"}`), mapping.DefaultTable(), "")
	if len(res.Errors) != 1 || !strings.Contains(res.Errors[0], "text value is empty") {
		t.Fatalf("empty text: %+v", res.Errors)
	}
}

// A MedTech SampledData FHIR mapping (heart rate sampled every 5 s, in
// count/min as MedTech's samples write it): each sample is stored as a
// heart rate in /min at its own time.
func TestSampledData(t *testing.T) {
	fhirT := []byte(`{"templateType":"CollectionFhir","template":[{"templateType":"CodeValueFhir","template":{"codes":[{"code":"8867-4","system":"http://loinc.org","display":"Heart rate"}],"periodInterval":60,"typeName":"heartrate","value":{"defaultPeriod":5000,"unit":"count/min","valueName":"hr","valueType":"SampledData"}}}]}`)
	devT := []byte(`{"templateType":"CollectionContent","template":[{"templateType":"JsonPathContent","template":{"typeName":"heartrate","typeMatchExpression":"$..[?(@heartRate)]","deviceIdExpression":"$.deviceId","timestampExpression":"$.endDate","values":[{"valueName":"hr","valueExpression":"$.heartRate","required":true}]}}]}`)
	res, err := Test(devT, fhirT, []byte(`{"heartRate":"81","endDate":"2023-03-13T22:46:05Z","deviceId":"watch1"}`), mapping.DefaultTable(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) != 0 || len(res.Values) != 1 || res.Values[0].Code != "8867-4" || res.Values[0].Unit != "/min" || res.Values[0].Value != 81 || res.Values[0].OrigUnit != "count/min" {
		t.Fatalf("dry run: %+v", res)
	}
	// periodInterval 60, defaultPeriod 5 s: the hour from 22:00, the value
	// at 22:46:05 in slot 46·12+1 = 553, "E" before it (as MedTech).
	o := res.Observations[0]
	if len(res.Observations) != 1 || o.ValueQuantity != nil || o.ValueSampledData == nil || o.EffectivePeriod == nil ||
		o.EffectivePeriod.Start != "2023-03-13T22:00:00.000Z" || o.EffectivePeriod.End != "2023-03-13T23:00:00.000Z" ||
		o.ValueSampledData.Period != 5000 || o.ValueSampledData.Dimensions != 1 || o.ValueSampledData.Origin.Code != "/min" {
		t.Fatalf("observations: %+v", res.Observations)
	}
	slots := strings.Fields(o.ValueSampledData.Data)
	if len(slots) != 554 || slots[553] != "81" || slots[0] != "E" {
		t.Fatalf("data: %d slots, last %q", len(slots), slots[len(slots)-1])
	}
	if rs := res.Values[0].Sampling; rs == nil || rs.PeriodMS != 5000 || rs.IntervalMin != 60 {
		t.Fatalf("sampling: %+v", rs)
	}
	for tmpl, want := range map[string]string{
		`{"templateType":"CodeValueFhir","template":{"typeName":"x","periodInterval":30,"codes":[{"code":"8867-4","system":"http://loinc.org"}],"value":{"valueName":"v","valueType":"SampledData","unit":"/min","defaultPeriod":1000}}}`:  "template.periodInterval: 30: use 0",
		`{"templateType":"CodeValueFhir","template":{"typeName":"x","periodInterval":1440,"codes":[{"code":"8867-4","system":"http://loinc.org"}],"value":{"valueName":"v","valueType":"SampledData","unit":"/min","defaultPeriod":100}}}`: "too fine for a 1440-minute Observation",
	} {
		if _, err := ParseFhirTemplate([]byte(tmpl)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", tmpl, err, want)
		}
	}
}

func BenchmarkNormalize(b *testing.B) {
	inline := map[string][2]string{
		"JsonPathContent": {`{"templateType":"JsonPathContent","template":{"typeName":"hr","typeMatchExpression":"$..[?(@heartRate)]","deviceIdExpression":"$.deviceId","timestampExpression":"$.endDate","values":[{"valueName":"hr","valueExpression":"$.heartRate","required":true}]}}`,
			`{"heartRate":"78","endDate":"2023-03-13T22:46:01.8750000","deviceId":"device01"}`},
		"IotCentralJsonPathContent": {`{"templateType":"IotCentralJsonPathContent","template":{"typeName":"hr","typeMatchExpression":"$..[?(@telemetry.HeartRate)]","values":[{"valueName":"hr","valueExpression":"$.telemetry.HeartRate","required":true}]}}`,
			`{"applicationId":"a","messageSource":"telemetry","deviceId":"d1","schema":"default@v1","templateId":"t","enqueuedTime":"2020-08-05T22:26:55.455Z","telemetry":{"HeartRate":"88"}}`},
		"CalculatedContent-JMESPath": {`{"templateType":"CalculatedContent","template":{"typeName":"hr","defaultExpressionLanguage":"JmesPath","typeMatchExpression":"Body","deviceIdExpression":"matchedToken.deviceId","timestampExpression":"matchedToken.endDate","values":[{"valueName":"hr","valueExpression":"multiply(to_number(matchedToken.heartRate), ` + "`1`" + `)","required":true}]}}`,
			`{"heartRate":"78","endDate":"2023-03-13T22:46:01.8750000","deviceId":"device01"}`},
	}
	for _, c := range []struct{ name, tmpl, msg string }{
		{"CalculatedContent", "calculated-heartrate.devicemapping.json", "calculated-heartrate.message.json"},
		{"IotJsonPathContent", "iothub-heartrate.devicemapping.json", "iothub-heartrate.message.json"},
		{"JsonPathContent", "", ""},
		{"IotCentralJsonPathContent", "", ""},
		{"CalculatedContent-JMESPath", "", ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			tb, msg := []byte(inline[c.name][0]), []byte(inline[c.name][1])
			if c.tmpl != "" {
				tb, msg = read(b, c.tmpl), read(b, c.msg)
			}
			dt, err := ParseDeviceTemplate(tb)
			if err != nil {
				b.Fatal(err)
			}
			if ms, err := dt.Normalize(msg); err != nil || len(ms) != 1 {
				b.Fatalf("%v %v", ms, err)
			}
			for b.Loop() {
				if _, err := dt.Normalize(msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
		})
	}
}

func FuzzTemplates(f *testing.F) {
	f.Add(read(f, "calculated-heartrate.devicemapping.json"), read(f, "calculated-heartrate.message.json"))
	f.Add(read(f, "iothub-heartrate.devicemapping.json"), read(f, "iothub-heartrate.message.json"))
	f.Fuzz(func(t *testing.T, tmpl, msg []byte) {
		dt, err := ParseDeviceTemplate(tmpl)
		if err != nil {
			return
		}
		dt.Normalize(msg)
	})
}

// CalculatedContent with JMESPath and MedTech's custom functions.
func TestJMESPathAndFunctions(t *testing.T) {
	tmpl := `{"templateType":"CalculatedContent","template":{"typeName":"bp","defaultExpressionLanguage":"JmesPath",
	  "typeMatchExpression":"Body.readings[?kind=='bp']",
	  "deviceIdExpression":"insertString(Body.device, '-', ` + "`3`" + `)",
	  "timestampExpression":"fromUnixTimestampMs(matchedToken.ts)",
	  "values":[
	    {"valueName":"sys","valueExpression":"matchedToken.sys","required":true},
	    {"valueName":"dia","valueExpression":"matchedToken.dia","required":true},
	    {"valueName":"tempC","valueExpression":{"value":"divide(multiply(subtract(matchedToken.tempF, ` + "`32`" + `), ` + "`5`" + `), ` + "`9`" + `)","language":"JmesPath"}},
	    {"valueName":"sq","valueExpression":"pow(matchedToken.sys, ` + "`2`" + `)"},
	    {"valueName":"plus","valueExpression":"add(matchedToken.sys, matchedToken.dia)"},
	    {"valueName":"t","valueExpression":"fromUnixTimestamp(matchedToken.s)"},
	    {"valueName":"jp","valueExpression":{"value":"$.matchedToken.sys","language":"JsonPath"}}]}}`
	dt, err := ParseDeviceTemplate([]byte(tmpl))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := dt.Normalize([]byte(`{"device":"abcdef","readings":[{"kind":"bp","ts":1732442400123,"s":1732442400,"sys":120,"dia":80,"tempF":98.6},{"kind":"hr","ts":1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 {
		t.Fatalf("%+v", ms)
	}
	m := ms[0]
	got := map[string]string{}
	for _, p := range m.Properties {
		got[p.Name] = p.Value
	}
	if m.DeviceID != "abc-def" || m.OccurrenceTimeUTC.UnixMilli() != 1732442400123 || got["sys"] != "120" || got["tempC"] != "37" || got["sq"] != "14400" ||
		got["plus"] != "200" || got["t"] != "2024-11-24T10:00:00.000Z" || got["jp"] != "120" {
		t.Fatalf("%+v %v", m, got)
	}
}
