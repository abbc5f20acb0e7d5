package pubhealth

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

var ctx = context.Background()

// monday is the start of ISO week 2026-W45.
var monday = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

type cohort struct {
	t  *testing.T
	st *pebble.Store
	n  int
}

func newCohort(t *testing.T) *cohort {
	o := pebble.DefaultOptions()
	o.CompactInterval = -1
	o.Now = func() time.Time { return monday.AddDate(0, 0, 21) }
	st, err := pebble.Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &cohort{t: t, st: st}
}

// add registers a patient and stores, on each of the given days of week
// 2026-W45, one temperature, one SpO2 and one blood pressure.
func (c *cohort) add(postal, birth, sex string, days int, temp, spo2, sys, dia float64) string {
	c.t.Helper()
	c.n++
	id := fmt.Sprintf("p%03d", c.n)
	if err := c.st.CreatePatient(ctx, &vigil.Patient{ID: id, PostalCode: postal, BirthDate: birth, Sex: sex}); err != nil {
		c.t.Fatal(err)
	}
	var rs []*vigil.Reading
	for d := range days {
		at := monday.AddDate(0, 0, d).Add(9 * time.Hour)
		rs = append(rs, &vigil.Reading{DeviceID: "dev-" + id, ID: fmt.Sprint(d), PatientID: id, Time: at, Received: at,
			Values: []vigil.Measurement{
				{Code: vigil.LOINCBodyTemp, Value: temp, Unit: "Cel"},
				{Code: vigil.LOINCSpO2, Value: spo2, Unit: "%"},
				{Code: vigil.LOINCSystolic, Value: sys, Unit: "mm[Hg]"},
				{Code: vigil.LOINCDiastolic, Value: dia, Unit: "mm[Hg]"},
			}})
	}
	if len(rs) > 0 {
		if _, err := c.st.AppendReadings(ctx, rs); err != nil {
			c.t.Fatal(err)
		}
	}
	return id
}

func find(t *testing.T, tb *Table, week, region, band, sex string) Cell {
	t.Helper()
	for _, c := range tb.Cells {
		if c.Week == week && c.Region == region && c.AgeBand == band && c.Sex == sex {
			return c
		}
	}
	t.Fatalf("no cell %s %s %s %s", week, region, band, sex)
	return Cell{}
}

func TestAggregateMetrics(t *testing.T) {
	c := newCohort(t)
	// SW1, 45–64, female: 12 patients. 3 with fever; SpO2 95 or 97;
	// blood pressure 150/85 (hypertensive) for 4, 120/80 for 8; 8 report
	// every day, 4 on three days.
	for i := range 12 {
		temp := 37.0
		if i < 3 {
			temp = 38.4
		}
		spo2 := 95.0
		if i%2 == 0 {
			spo2 = 97
		}
		sys := 120.0
		if i < 4 {
			sys = 150
		}
		days := 7
		if i >= 8 {
			days = 3
		}
		c.add("sw1a 1aa", "1970-06-15", "female", days, temp, spo2, sys, 80)
	}
	// A patient with no readings that week counts nowhere.
	c.add("SW1A 2BB", "1970-06-15", "female", 0, 0, 0, 0, 0)
	tb, err := Aggregate(ctx, c.st, Options{From: monday, To: monday.AddDate(0, 0, 7)})
	if err != nil {
		t.Fatal(err)
	}
	cell := find(t, tb, "2026-W45", "SW1", "45-64", "female")
	if cell.Suppressed != "" || cell.Patients != 12 {
		t.Fatalf("cell: %+v", cell)
	}
	for name, c := range map[string]struct {
		got  *float64
		want float64
	}{
		"fever rate":         {cell.FeverRate, 0.25},
		"mean SpO2":          {cell.MeanSpO2, 96},
		"hypertensive share": {cell.HypertensiveShare, 0.333},
		"adherence":          {cell.Adherence, 0.810}, // (8·7 + 4·3) / 12 / 7
	} {
		if c.got == nil || *c.got != c.want {
			t.Errorf("%s = %v, want %v", name, c.got, c.want)
		}
	}
	if tot := find(t, tb, "2026-W45", "SW1", All, All); tot.Patients != 12 {
		t.Errorf("region total %+v", tot)
	}
}

// A small cell is suppressed, and so is another in its region so that the
// region's total does not reveal it; the week total likewise.
func TestSuppression(t *testing.T) {
	c := newCohort(t)
	for range 20 {
		c.add("EC1 1AA", "1980-01-01", "male", 7, 37, 97, 120, 80)
	}
	for range 4 {
		c.add("EC1 1AA", "1980-01-01", "female", 7, 38.5, 92, 160, 100) // 4 people: their fever must not show
	}
	for range 15 {
		c.add("EC1 1AA", "1950-01-01", "female", 7, 37, 96, 130, 85)
	}
	for range 30 {
		c.add("N1 9GU", "1990-01-01", "female", 7, 37, 98, 118, 76)
	}
	tb, err := Aggregate(ctx, c.st, Options{From: monday, To: monday.AddDate(0, 0, 7)})
	if err != nil {
		t.Fatal(err)
	}
	small := find(t, tb, "2026-W45", "EC1", "45-64", "female")
	if small.Suppressed != "small" || small.Patients != 0 || small.FeverRate != nil {
		t.Fatalf("4-patient cell published: %+v", small)
	}
	comp := find(t, tb, "2026-W45", "EC1", "75+", "female")
	if comp.Suppressed != "complementary" {
		t.Fatalf("the smallest other cell of EC1 (15) was not suppressed with it: %+v", comp)
	}
	if big := find(t, tb, "2026-W45", "EC1", "45-64", "male"); big.Suppressed != "" || big.Patients != 20 {
		t.Fatalf("20-patient cell: %+v", big)
	}
	if tot := find(t, tb, "2026-W45", "EC1", All, All); tot.Suppressed != "" || tot.Patients != 39 {
		t.Fatalf("EC1 total: %+v", tot)
	}
	checkNoRecovery(t, tb.Cells, 11)
}

// checkNoRecovery fails for a published cell under k, or a group whose
// total is published with exactly one suppressed member.
func checkNoRecovery(t *testing.T, cells []Cell, k int) {
	t.Helper()
	type key struct{ week, region string }
	suppressed := map[key]int{}
	published := map[key]bool{}
	for _, c := range cells {
		if c.Suppressed == "" && c.Patients < k {
			t.Fatalf("published cell under k: %+v", c)
		}
		switch {
		case c.Region != All && c.AgeBand == All:
			published[key{c.week(), c.Region}] = c.Suppressed == ""
			if c.Suppressed != "" {
				suppressed[key{c.week(), All}]++
			}
		case c.Region == All:
			published[key{c.week(), All}] = c.Suppressed == ""
		default:
			if c.Suppressed != "" {
				suppressed[key{c.week(), c.Region}]++
			}
		}
	}
	for g, n := range suppressed {
		if n == 1 && published[g] {
			t.Fatalf("group %v: one suppressed member and a published total: it can be recovered by subtraction", g)
		}
	}
}

func (c Cell) week() string { return c.Week }

// Random cohorts: suppression never leaves a small cell recoverable.
func TestSuppressionNeverRecoverable(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 500 {
		var cells []Cell
		for w := range 2 {
			week := fmt.Sprint("2026-W0", w)
			weekTotal := 0
			for r := range 1 + rng.IntN(5) {
				region := fmt.Sprint("R", r)
				regionTotal := 0
				for a := range 1 + rng.IntN(6) {
					n := 1 + rng.IntN(30)
					regionTotal += n
					cells = append(cells, Cell{Week: week, Region: region, AgeBand: fmt.Sprint("A", a), Sex: "x", Patients: n})
				}
				weekTotal += regionTotal
				cells = append(cells, Cell{Week: week, Region: region, AgeBand: All, Sex: All, Patients: regionTotal})
			}
			cells = append(cells, Cell{Week: week, Region: All, AgeBand: All, Sex: All, Patients: weekTotal})
		}
		suppress(cells, 11)
		checkNoRecovery(t, cells, 11)
		_ = trial
	}
}

func TestBandsWeeksRegions(t *testing.T) {
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	for birth, want := range map[string]string{"2010-01-01": "0-17", "2008-12-02": "18-44", "2008-12-03": "0-17", "1960-05-05": "65-74", "1940-01-01": "75+", "": "unknown", "1990-13-01": "unknown"} {
		if got := AgeBand(birth, at); got != want {
			t.Errorf("AgeBand(%q) = %s, want %s", birth, got, want)
		}
	}
	if Week(at) != "2026-W49" || Week(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) != "2026-W53" {
		t.Errorf("weeks: %s %s", Week(at), Week(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)))
	}
	if ws := isoWeeks(time.Date(2026, 11, 4, 12, 0, 0, 0, time.UTC), time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)); len(ws) != 2 || !ws[0].Equal(monday) {
		t.Errorf("isoWeeks: %v", ws)
	}
	for pc, want := range map[string]string{"sw1a 1aa": "SW1", "N1": "unknown", "": "unknown"} {
		if got := Region(&vigil.Patient{PostalCode: pc}, 3); got != want {
			t.Errorf("Region(%q) = %s, want %s", pc, got, want)
		}
	}
}
