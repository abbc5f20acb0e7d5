package omh

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

func examples(t *testing.T) map[string]json.RawMessage {
	b, err := os.ReadFile("testdata/examples.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Bodies map[string]json.RawMessage `json:"bodies"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f.Bodies
}

func point(schema string, body json.RawMessage) []byte {
	name, version, _ := strings.Cut(schema, ":")
	return []byte(fmt.Sprintf(`{"header":{"id":"dp-%s","creation_date_time":"2026-01-01T00:00:00Z","schema_id":{"namespace":"omh","name":%q,"version":%q}},"body":%s}`, name, name, version, body))
}

func TestSharedExamples(t *testing.T) {
	want := map[string]struct {
		codes  []string
		values []float64
		unit   string
		time   time.Time
		reason string
	}{
		"heart-rate:2.0":        {reason: "statistic"}, // a daily minimum, not a measurement
		"blood-pressure:4.0":    {codes: []string{vigil.LOINCSystolic, vigil.LOINCDiastolic}, values: []float64{115, 60}, unit: "mm[Hg]", time: time.Date(2020, 2, 5, 15, 25, 0, 0, time.UTC)},
		"body-temperature:4.0":  {codes: []string{vigil.LOINCBodyTemp}, values: []float64{97}, unit: "[degF]", time: time.Date(2023, 2, 5, 6, 25, 0, 0, time.UTC)},
		"oxygen-saturation:2.0": {codes: []string{vigil.LOINCSpO2}, values: []float64{95}, unit: "%", time: time.Date(2013, 2, 5, 15, 25, 0, 0, time.UTC)},
		"step-count:3.0":        {codes: []string{LOINCSteps}, values: []float64{10600}, unit: "{steps}", time: time.Date(2016, 2, 5, 7, 25, 0, 0, time.UTC)},
	}
	ex := examples(t)
	if len(ex) != len(want) {
		t.Fatalf("%d examples", len(ex))
	}
	for schema, body := range ex {
		w := want[schema]
		raws, err := DecodePayload(point(schema, body), 10)
		if err != nil {
			t.Fatalf("%s: %v", schema, err)
		}
		r := raws[0]
		if w.reason != "" {
			if vigil.ErrorReason(r.Err) != w.reason {
				t.Errorf("%s: %v, want %s", schema, r.Err, w.reason)
			}
			continue
		}
		if r.Err != nil || !r.Time.Equal(w.time) || len(r.Values) != len(w.codes) {
			t.Fatalf("%s: %+v", schema, r)
		}
		for i, v := range r.Values {
			if v.Code != w.codes[i] || v.Value != w.values[i] || v.Unit != w.unit {
				t.Errorf("%s value %d: %+v", schema, i, v)
			}
		}
	}
}

func TestRefusals(t *testing.T) {
	for name, c := range map[string]struct{ body, field, reason string }{
		"no id":          {`{"header":{"schema_id":{"namespace":"omh","name":"heart-rate"}},"body":{}}`, "header.id", "required"},
		"other schema":   {`{"header":{"id":"x","schema_id":{"namespace":"omh","name":"sleep-duration"}},"body":{}}`, "header.schema_id.name", "unknown-schema"},
		"no value":       {`{"header":{"id":"x","schema_id":{"namespace":"omh","name":"heart-rate"}},"body":{"heart_rate":{"unit":"beats/min"}}}`, "body.heart_rate.value", "required"},
		"no time":        {`{"header":{"id":"x","schema_id":{"namespace":"omh","name":"heart-rate"}},"body":{"heart_rate":{"value":60,"unit":"beats/min"}}}`, "body.effective_time_frame", "required"},
		"other namespac": {`{"header":{"id":"x","schema_id":{"namespace":"acme","name":"heart-rate"}},"body":{}}`, "header.schema_id.namespace", "unknown-schema"},
	} {
		raws, err := DecodePayload([]byte(c.body), 10)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		e, _ := raws[0].Err.(*vigil.Error)
		if e == nil || e.Field != c.field || e.Reason != c.reason {
			t.Errorf("%s: %#v", name, raws[0].Err)
		}
	}
	if _, err := DecodePayload([]byte("{"), 10); vigil.ErrorReason(err) != "malformed" {
		t.Errorf("malformed: %v", err)
	}
}
