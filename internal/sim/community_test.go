package sim

import (
	"context"
	"testing"
)

// A community programme with an outbreak in one region, through the real
// store and biosurveillance: the outbreak is signalled within days, and
// quiet regions raise few false signals.
func TestCommunityOutbreak(t *testing.T) {
	rep, err := Community(context.Background(), CommunityOptions{Dir: t.TempDir(), Regions: 6, Patients: 100, Days: 60,
		OutbreakRegion: 2, OutbreakDay: 40, Seed: 3, Secret: []byte("fixed key: the same noise each run")})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", rep)
	if rep.Readings < 6*100*60/2 || rep.OutbreakRegion != "R02" {
		t.Fatalf("report: %+v", rep)
	}
	best := 99
	for _, d := range rep.DaysToSignal {
		best = min(best, d)
	}
	if best > 10 {
		t.Fatalf("the outbreak was not signalled within 10 days: %v", rep.DaysToSignal)
	}
	for m, f := range rep.FalseSignalsPerRegionMonth {
		if f > 6 {
			t.Errorf("%s: %.2f false signals per region-month", m, f)
		}
	}
	if _, err := Community(context.Background(), CommunityOptions{Dir: t.TempDir(), Regions: 2, OutbreakRegion: 5, OutbreakDay: 20}); err == nil {
		t.Fatal("an outbreak in a region that does not exist was accepted")
	}
}
