// Package omh reads Open mHealth data points (heart-rate, blood-pressure,
// body-temperature, oxygen-saturation, step-count) as Vigil readings:
// MQTT topic vigil/v1/devices/{id}/omh, HTTP POST /api/v1/devices/{id}/omh.
// The data point's header.id is the reading id; its time is the
// effective_time_frame's date_time, or the end of its time_interval.
package omh

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/ingest"
)

// Format is the vigil.Message format of Open mHealth payloads.
const Format = "omh"

// LOINCSteps is the code step counts are stored under.
const LOINCSteps = "55423-8"

type unitValue struct {
	Value *float64 `json:"value"`
	Unit  string   `json:"unit"`
}

type timeFrame struct {
	DateTime     string `json:"date_time"`
	TimeInterval *struct {
		Start    string `json:"start_date_time"`
		End      string `json:"end_date_time"`
		Duration *struct {
			Value float64 `json:"value"`
			Unit  string  `json:"unit"`
		} `json:"duration"`
	} `json:"time_interval"`
}

type dataPoint struct {
	Header struct {
		ID       string `json:"id"`
		SchemaID struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
			Version   string `json:"version"`
		} `json:"schema_id"`
	} `json:"header"`
	Body struct {
		HeartRate            *unitValue `json:"heart_rate"`
		Systolic             *unitValue `json:"systolic_blood_pressure"`
		Diastolic            *unitValue `json:"diastolic_blood_pressure"`
		BodyTemperature      *unitValue `json:"body_temperature"`
		OxygenSaturation     *unitValue `json:"oxygen_saturation"`
		StepCount            *unitValue `json:"step_count"`
		EffectiveTimeFrame   *timeFrame `json:"effective_time_frame"`
		DescriptiveStatistic string     `json:"descriptive_statistic"`
	} `json:"body"`
}

// DecodePayload implements ingest.Decoder: one data point or an array.
func DecodePayload(payload []byte, maxReadings int) ([]ingest.Raw, error) {
	p := bytes.TrimSpace(payload)
	var dps []dataPoint
	isArray := len(p) > 0 && p[0] == '['
	if isArray {
		if err := json.Unmarshal(p, &dps); err != nil {
			return nil, vigil.FieldErrorf("", "malformed", "malformed JSON: %v", err)
		}
	} else {
		var dp dataPoint
		if err := json.Unmarshal(p, &dp); err != nil {
			return nil, vigil.FieldErrorf("", "malformed", "malformed JSON: %v (send an Open mHealth data point {header, body})", err)
		}
		dps = []dataPoint{dp}
	}
	if len(dps) == 0 || len(dps) > maxReadings {
		return nil, vigil.FieldErrorf("", "too-many", "send 1 to %d data points per message", maxReadings)
	}
	out := make([]ingest.Raw, len(dps))
	for i, dp := range dps {
		prefix := ""
		if isArray {
			prefix = fmt.Sprintf("[%d].", i)
		}
		out[i] = decodeOne(dp, prefix)
	}
	return out, nil
}

// Unit names Open mHealth uses, in UCUM.
var units = map[string]string{"beats/min": "/min", "mmHg": "mm[Hg]", "C": "Cel", "F": "[degF]", "K": "K", "%": "%", "steps": "{steps}"}

func decodeOne(dp dataPoint, prefix string) ingest.Raw {
	r := ingest.Raw{ID: dp.Header.ID, Field: prefix}
	fail := func(field, reason, format string, args ...any) ingest.Raw {
		r.Err = vigil.FieldErrorf(prefix+field, reason, format, args...)
		return r
	}
	if dp.Header.ID == "" {
		return fail("header.id", "required", "a data point needs header.id (unique, so re-sending it is harmless)")
	}
	name := dp.Header.SchemaID.Name
	if ns := dp.Header.SchemaID.Namespace; ns != "omh" {
		return fail("header.schema_id.namespace", "unknown-schema", "schema namespace %q: Vigil reads omh", ns)
	}
	if dp.Body.DescriptiveStatistic != "" {
		return fail("body.descriptive_statistic", "statistic", "a %s over a period is not a measurement; send individual values", dp.Body.DescriptiveStatistic)
	}
	b := dp.Body
	type item struct {
		field, code string
		v           *unitValue
	}
	var items []item
	switch name {
	case "heart-rate":
		items = []item{{"body.heart_rate", vigil.LOINCHeartRate, b.HeartRate}}
	case "blood-pressure":
		items = []item{{"body.systolic_blood_pressure", vigil.LOINCSystolic, b.Systolic}, {"body.diastolic_blood_pressure", vigil.LOINCDiastolic, b.Diastolic}}
	case "body-temperature":
		items = []item{{"body.body_temperature", vigil.LOINCBodyTemp, b.BodyTemperature}}
	case "oxygen-saturation":
		items = []item{{"body.oxygen_saturation", vigil.LOINCSpO2, b.OxygenSaturation}}
	case "step-count":
		items = []item{{"body.step_count", LOINCSteps, b.StepCount}}
	default:
		return fail("header.schema_id.name", "unknown-schema", "schema %q: Vigil reads heart-rate, blood-pressure, body-temperature, oxygen-saturation and step-count", name)
	}
	for _, it := range items {
		if it.v == nil || it.v.Value == nil {
			return fail(it.field+".value", "required", "%s needs a value", it.field)
		}
		u, ok := units[it.v.Unit]
		if !ok {
			u = it.v.Unit // let the mapping say why it does not fit
		}
		r.Values = append(r.Values, ingest.RawValue{System: vigil.SystemLOINC, Code: it.code, Unit: u, Value: *it.v.Value, Field: prefix + it.field})
	}
	tf := b.EffectiveTimeFrame
	if tf == nil {
		return fail("body.effective_time_frame", "required", "a data point needs body.effective_time_frame")
	}
	var ts string
	switch {
	case tf.DateTime != "":
		ts = tf.DateTime
	case tf.TimeInterval != nil && tf.TimeInterval.End != "":
		ts = tf.TimeInterval.End
	case tf.TimeInterval != nil && tf.TimeInterval.Start != "" && tf.TimeInterval.Duration != nil:
		start, err := time.Parse(time.RFC3339Nano, tf.TimeInterval.Start)
		if err != nil {
			return fail("body.effective_time_frame.time_interval.start_date_time", "invalid", "not RFC 3339")
		}
		d, ok := map[string]time.Duration{"sec": time.Second, "min": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[tf.TimeInterval.Duration.Unit]
		if !ok {
			return fail("body.effective_time_frame.time_interval.duration.unit", "invalid", "duration unit %q: use sec, min, h or d", tf.TimeInterval.Duration.Unit)
		}
		r.Time = start.Add(time.Duration(tf.TimeInterval.Duration.Value * float64(d)))
		return r
	default:
		return fail("body.effective_time_frame", "required", "give date_time or a time_interval")
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return fail("body.effective_time_frame", "invalid", "time %q is not RFC 3339 with an offset", ts)
	}
	r.Time = t
	return r
}
