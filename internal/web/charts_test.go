package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

// The patient page's series: every vital of the range, bucket means past
// maxPoints values, NEWS2 bands, alert markers; only for patients the user
// may see; the HTML page answers 403 with an explanation otherwise.
func TestPatientSeries(t *testing.T) {
	e := newEnv(t, nil)
	e.addPatient("p1", "Ada", "Lovelace", "4B", "1")
	e.addPatient("p2", "Alan", "Turing", "4B", "2")
	e.addUser("nurse1", vigil.RoleNurse, "", "pw-nurse")
	e.addUser("ada", vigil.RolePatient, "p1", "pw-ada")
	now := time.Now().UTC().Truncate(time.Second)
	// 2 hours of heart rate every 5 s (1440 values): 720 in the last hour.
	var rs []*vigil.Reading
	for i := range 1440 {
		at := now.Add(-2*time.Hour + time.Duration(i)*5*time.Second)
		rs = append(rs, &vigil.Reading{DeviceID: "mon1", ID: fmt.Sprint(i), PatientID: "p1", Time: at,
			Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: float64(60 + i%20), Unit: "/min"}}})
	}
	e.ingest(rs...)
	// Systolic 84 for long enough raises the sbp-low alert.
	for i := range 3 {
		e.ingest(&vigil.Reading{DeviceID: "cuff1", ID: fmt.Sprint(i), PatientID: "p1", Time: now.Add(time.Duration(i-3) * 40 * time.Second),
			Values: []vigil.Measurement{{Code: vigil.LOINCSystolic, Value: 84, Unit: "mm[Hg]"}, {Code: vigil.LOINCDiastolic, Value: 50, Unit: "mm[Hg]"}}})
	}

	nurse, _ := e.login("nurse1", "pw-nurse")
	get := func(c *http.Client, rng string) Charts {
		var ch Charts
		if err := json.Unmarshal([]byte(e.get(c, "/web/api/patients/p1/series?range="+rng, http.StatusOK)), &ch); err != nil {
			t.Fatal(err)
		}
		return ch
	}
	series := func(ch Charts, code string) Series {
		for _, s := range ch.Series {
			if s.Code == code {
				return s
			}
		}
		t.Fatalf("no %s series in %+v", code, ch)
		return Series{}
	}
	h1 := get(nurse, "1h")
	hr := series(h1, vigil.LOINCHeartRate)
	if hr.Count < 715 || hr.Count > 721 || len(hr.Points) > maxPoints || len(hr.Points) < maxPoints/2 {
		t.Fatalf("1 h of HR: %d values in %d points, want ~720 in at most %d", hr.Count, len(hr.Points), maxPoints)
	}
	for i, p := range hr.Points {
		if p[1] < 60 || p[1] > 79 || (i > 0 && p[0] <= hr.Points[i-1][0]) || int64(p[0]) < h1.From || int64(p[0]) > h1.To {
			t.Fatalf("point %d = %v: not a mean of 60–79 in order within the range", i, p)
		}
	}
	if hr.Low == nil || *hr.Low != 51 || *hr.High != 90 {
		t.Errorf("HR band %v–%v, want NEWS2's 51–90", hr.Low, hr.High)
	}
	if h8 := get(nurse, "8h"); series(h8, vigil.LOINCHeartRate).Count != 1440 {
		t.Errorf("8 h of HR: %d values, want 1440", series(h8, vigil.LOINCHeartRate).Count)
	}
	if sp := series(h1, vigil.LOINCSpO2); len(sp.Limits) != 1 || sp.Limits[0].Value != 92 || !sp.Limits[0].Below || sp.Limits[0].Priority != vigil.PriorityHigh {
		t.Errorf("SpO2 limits %+v, want the spo2-low threshold below 92", sp.Limits)
	}
	if lim := series(h1, vigil.LOINCHeartRate).Limits; len(lim) != 2 {
		t.Errorf("HR limits %+v, want hr-low and hr-high", lim)
	}
	// A clinician's patient-specific limit replaces the default on the chart.
	v88 := 88.0
	if err := e.alerts.SetOverrides("p1", []vigil.ThresholdOverride{{Rule: "spo2-low", Below: &v88, Reason: "COPD, target 88-92 %", Expires: now.Add(24 * time.Hour), By: "dr", Set: now}}); err != nil {
		t.Fatal(err)
	}
	if lim := series(get(nurse, "1h"), vigil.LOINCSpO2).Limits; len(lim) != 1 || lim[0].Value != 88 || !lim[0].Patient {
		t.Errorf("SpO2 limits with the override %+v, want 88, patient-specific", lim)
	}
	sys := series(h1, vigil.LOINCSystolic)
	if sys.Count != 3 || len(sys.Points) != 3 || sys.Points[2][1] != 84 {
		t.Errorf("systolic: %+v", sys)
	}
	if len(h1.Alerts) != 1 || h1.Alerts[0].Priority == "" || h1.Alerts[0].Code != vigil.LOINCSystolic {
		t.Errorf("alert markers %+v, want the sbp-low alert", h1.Alerts)
	}
	e.get(nurse, "/web/api/patients/p1/series?range=2y", http.StatusBadRequest)

	ada, _ := e.login("ada", "pw-ada")
	if got := series(get(ada, "24h"), vigil.LOINCHeartRate).Count; got != 1440 {
		t.Errorf("a patient's own chart: %d values", got)
	}
	e.get(ada, "/web/api/patients/p2/series", http.StatusForbidden)
	if page := e.get(ada, "/patients/p2", http.StatusForbidden); !strings.Contains(page, "You may not see this patient") {
		t.Errorf("403 page: %s", page)
	}
	if page := e.get(ada, "/patients/p1", http.StatusOK); !strings.Contains(page, `data-patient="p1"`) || !strings.Contains(page, "uPlot.iife.min.js") {
		t.Errorf("patient page: %s", page)
	}
	// Without a session the page sends the browser to sign in.
	res, err := e.client().Get(e.srv.URL + "/patients/p1")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/login" {
		t.Errorf("no session: %d %s", res.StatusCode, res.Header.Get("Location"))
	}
	// uPlot is served from the binary, with its licence.
	if js := e.get(nurse, "/web/static/vendor/uplot-1.6.32/uPlot.iife.min.js", http.StatusOK); !strings.Contains(js, "uPlot") {
		t.Error("vendored uPlot not served")
	}
	if lic := e.get(nurse, "/web/static/vendor/uplot-1.6.32/LICENSE", http.StatusOK); !strings.Contains(lic, "MIT") {
		t.Error("uPlot licence not served")
	}
}
