//go:build !race

// The scenario runs one goroutine through 24 simulated hours; under the
// race detector it takes minutes and finds nothing the other tests do not.

package sim

import (
	"context"
	"testing"
)

// Through Vigil's real alerting on a real store: every sepsis-like course
// raises NEWS2 medium before high, and stable noisy patients raise no
// alert at all over 24 simulated hours.
func TestScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 24 hours of a cohort")
	}
	rep, err := Scenario(context.Background(), ScenarioOptions{Dir: t.TempDir(), Stable: 6, Deteriorating: 4, Hours: 24, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("false alerts %d (%.2f per patient-day) %v; NEWS2 medium before high %d of %d, median lead %.0f min",
		rep.FalseAlerts, rep.FalseAlertsPerPatDay, rep.FalseAlertsByRule, rep.MediumBeforeHigh, rep.DeterioratingPatients, rep.LeadMinutes)
	if rep.FalseAlerts != 0 {
		t.Errorf("stable patients raised %d alerts: %v", rep.FalseAlerts, rep.FalseAlertsByRule)
	}
	if rep.MediumBeforeHigh != 4 {
		for _, p := range rep.Patients {
			if p.Deteriorates {
				t.Logf("%s: medium %v high %v alerts %v", p.ID, deref(p.MediumAt), deref(p.HighAt), p.Alerts)
			}
		}
		t.Errorf("NEWS2 medium before high for %d of 4 deteriorating patients", rep.MediumBeforeHigh)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
