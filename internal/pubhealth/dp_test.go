package pubhealth

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vigil-iomt/vigil"
)

// A differentially private table releases large cells with noisy values
// near the truth, keeps the existence of a one-patient cell private,
// publishes no totals, and is noisy (two runs differ).
func TestPrivateAggregate(t *testing.T) {
	c := newCohort(t)
	for i := range 200 {
		temp := 37.0
		if i < 50 {
			temp = 38.6 // a quarter with fever
		}
		c.add("M1 1AE", "1975-05-05", "female", 7, temp, 96, 120, 80)
	}
	c.add("ZE1 0AA", "1930-01-01", "male", 7, 37, 96, 120, 80) // alone in their cell
	o := Options{From: monday, To: monday.AddDate(0, 0, 7), Epsilon: 1, Delta: 1e-5}
	var counts []int
	for range 5 {
		tb, err := Aggregate(ctx, c.st, o)
		if err != nil {
			t.Fatal(err)
		}
		if tb.Epsilon != 1 || tb.Delta != 1e-5 {
			t.Fatalf("table cost %v %v", tb.Epsilon, tb.Delta)
		}
		for _, cell := range tb.Cells {
			if cell.Region == All || cell.AgeBand == All {
				t.Fatalf("a private table published a total: %+v", cell)
			}
			if cell.Region == "ZE1" {
				t.Fatalf("a one-patient cell was released: %+v", cell)
			}
		}
		cell := find(t, tb, "2026-W45", "M11", "45-64", "female")
		// Bars of about ten noise scales (ε 1 split six ways): a failure
		// means a fault, not bad luck.
		if math.Abs(float64(cell.Patients-200)) > 40 || cell.FeverRate == nil || math.Abs(*cell.FeverRate-0.25) > 0.4 ||
			cell.MeanSpO2 == nil || math.Abs(*cell.MeanSpO2-96) > 12 {
			t.Fatalf("noisy cell far from the truth (200, 0.25, 96): %+v %v %v", cell, *cell.FeverRate, *cell.MeanSpO2)
		}
		counts = append(counts, cell.Patients)
	}
	same := true
	for _, n := range counts[1:] {
		same = same && n == counts[0]
	}
	if same {
		t.Fatalf("five private runs gave the same count %d: no noise?", counts[0])
	}
	if _, err := Aggregate(ctx, c.st, Options{From: monday, To: monday.AddDate(0, 0, 7), Epsilon: 1}); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Fatalf("private export without delta: %v", err)
	}
}

// The ledger refuses a query that would exceed the analyst's budget,
// keeps what was spent with the user, and cannot be raced past the
// budget by concurrent queries.
func TestPrivacyLedger(t *testing.T) {
	c := newCohort(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.st.CreateUser(ctx, &vigil.User{ID: "epi", Role: vigil.RoleAnalyst}))
	b := Budget{Epsilon: 2.5, Delta: 1e-4}
	for i := range 2 {
		spent, err := Charge(ctx, c.st, "epi", 1, 1e-5, b)
		if err != nil || spent.Queries != i+1 {
			t.Fatalf("query %d: %+v %v", i, spent, err)
		}
	}
	_, err := Charge(ctx, c.st, "epi", 1, 1e-5, b)
	if vigil.ErrorCode(err) != vigil.EFORBIDDEN || !strings.Contains(vigil.ErrorMessage(err), "0.5 of ε = 2.5") {
		t.Fatalf("over budget: %v", err)
	}
	if _, err := Charge(ctx, c.st, "epi", 0.5, 1e-5, b); err != nil {
		t.Fatalf("what is left: %v", err)
	}
	u, _ := c.st.FindUserByID(ctx, "epi")
	if u.PrivacySpent == nil || u.PrivacySpent.Epsilon != 2.5 || u.PrivacySpent.Queries != 3 {
		t.Fatalf("stored spending: %+v", u.PrivacySpent)
	}
	// δ is a budget too.
	must(c.st.CreateUser(ctx, &vigil.User{ID: "epi2", Role: vigil.RoleAnalyst}))
	if _, err := Charge(ctx, c.st, "epi2", 0.1, 2e-4, b); vigil.ErrorCode(err) != vigil.EFORBIDDEN {
		t.Fatalf("over the δ budget: %v", err)
	}

	// Twenty concurrent queries of ε = 1 against a budget of 5: five pass.
	must(c.st.CreateUser(ctx, &vigil.User{ID: "epi3", Role: vigil.RoleAnalyst}))
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := Charge(ctx, c.st, "epi3", 1, 0, Budget{Epsilon: 5, Delta: 1}); err == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	u, _ = c.st.FindUserByID(ctx, "epi3")
	if ok.Load() > 5 || u.PrivacySpent.Epsilon > 5 || int64(u.PrivacySpent.Queries) != ok.Load() {
		t.Fatalf("concurrent queries: %d passed, stored %+v", ok.Load(), u.PrivacySpent)
	}
}
