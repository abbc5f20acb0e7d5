package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestMappingTest(t *testing.T) {
	dir := "../../internal/medtech/testdata/"
	out, err := vigilCmd(t, "", "mapping", "test", "--json",
		"--device-template", dir+"calculated-heartrate.devicemapping.json",
		"--fhir-template", dir+"calculated-heartrate.fhirmapping.json",
		"--message", dir+"calculated-heartrate.message.json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var res struct {
		Measurements []map[string]any
		Values       []map[string]any
		Observations []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Measurements) != 1 || res.Measurements[0]["occurrenceTimeUtc"] != "2023-03-13T22:46:01.875Z" || len(res.Observations) != 1 {
		t.Fatalf("%s", out)
	}
	q := res.Observations[0]["valueQuantity"].(map[string]any)
	if q["code"] != "/min" || q["value"] != 78.0 || res.Values[0]["origUnit"] != "count/min" {
		t.Fatalf("observation: %v / values %v", q, res.Values)
	}
	// A broken template: refused with where and why.
	out, err = vigilCmd(t, "", "mapping", "test",
		"--device-template", dir+"calculated-heartrate.fhirmapping.json",
		"--fhir-template", dir+"calculated-heartrate.fhirmapping.json",
		"--message", dir+"calculated-heartrate.message.json")
	if err == nil || !strings.Contains(err.Error(), "deviceTemplate.templateType") {
		t.Fatalf("wrong template kind: %v %s", err, out)
	}
}
