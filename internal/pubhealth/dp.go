package pubhealth

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/google/differential-privacy/go/v3/dpagg"

	"github.com/vigil-iomt/vigil"
)

// Differential privacy (Options.Epsilon > 0), with Google's library
// (github.com/google/differential-privacy/go/v3, dpagg):
//
//   - The privacy unit is the patient. Each patient contributes one value
//     per metric to one cell per week, so a patient touches at most as many
//     cells as the export has weeks (the L0 bound) and each once (L∞ = 1);
//     means are of values clamped to fixed bounds (SpO2 70–100 %, shares
//     0–1).
//   - Laplace noise. ε is split over the six aggregations of a cell —
//     patients 30 %, patients with a temperature, with fever, SpO2 mean,
//     hypertensive-share mean and adherence mean 14 % each — which compose
//     sequentially to the table's ε. Which cells exist is itself private:
//     a cell is released only when its noisy patient count passes the
//     library's threshold for δ (Count.ThresholdedResult).
//   - Only cells are released, no totals: sums of noisy cells are
//     post-processing and cost nothing more. A released cell whose noisy
//     count is under K is still suppressed (post-processing too).
//
// Rates are ratios of noisy counts, clamped to [0, 1].

var epsilonShares = struct{ count, temp, fever, spo2, hyper, adherence float64 }{0.30, 0.14, 0.14, 0.14, 0.14, 0.14}

func (t *Table) private(contribs map[[4]string][]patientWeek, weeks int, o Options) error {
	if o.Delta <= 0 || o.Delta >= 1 {
		return vigil.FieldErrorf("delta", "invalid", "a differentially private export needs 0 < delta < 1 (for example 1e-5)")
	}
	t.Epsilon, t.Delta = o.Epsilon, o.Delta
	l0 := int64(weeks)
	count := func(share float64) (*dpagg.Count, error) {
		return dpagg.NewCount(&dpagg.CountOptions{Epsilon: o.Epsilon * share, MaxPartitionsContributed: l0})
	}
	mean := func(share, lower, upper float64) (*dpagg.BoundedMean, error) {
		return dpagg.NewBoundedMean(&dpagg.BoundedMeanOptions{Epsilon: o.Epsilon * share, MaxPartitionsContributed: l0,
			MaxContributionsPerPartition: 1, Lower: lower, Upper: upper})
	}
	for key, pws := range contribs {
		n, err := count(epsilonShares.count)
		if err != nil {
			return err
		}
		temp, err1 := count(epsilonShares.temp)
		fever, err2 := count(epsilonShares.fever)
		spo2, err3 := mean(epsilonShares.spo2, 70, 100)
		hyper, err4 := mean(epsilonShares.hyper, 0, 1)
		adh, err5 := mean(epsilonShares.adherence, 0, 1)
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			return err
		}
		for _, pw := range pws {
			n.Increment()
			if pw.hasTemp {
				temp.Increment()
				if pw.fever {
					fever.Increment()
				}
			}
			if pw.hasSpO2 {
				spo2.Add(pw.spo2)
			}
			if pw.hasBP {
				hyper.Add(pw.hyper)
			}
			adh.Add(float64(pw.adherentDays) / 7)
		}
		released, err := n.ThresholdedResult(o.Delta)
		if err != nil {
			return err
		}
		if released == nil {
			continue // the cell's existence stays private
		}
		c := Cell{Week: key[0], Region: key[1], AgeBand: key[2], Sex: key[3], Patients: int(max(*released, 0))}
		if c.Patients < o.K {
			t.Cells = append(t.Cells, c.withheld("small"))
			continue
		}
		tn, _ := temp.Result()
		fn, _ := fever.Result()
		if tn > 0 {
			c.FeverRate = round3(math.Min(1, math.Max(0, float64(fn)/float64(tn))))
		}
		if v, err := spo2.Result(); err == nil {
			c.MeanSpO2 = round3(v)
		}
		if v, err := hyper.Result(); err == nil {
			c.HypertensiveShare = round3(v)
		}
		if v, err := adh.Result(); err == nil {
			c.Adherence = round3(v)
		}
		t.Cells = append(t.Cells, c)
	}
	t.sort()
	return nil
}

func round3(v float64) *float64 {
	r := math.Round(v*1000) / 1000
	return &r
}

// Budget is how much differential privacy an analyst may spend in all.
type Budget struct{ Epsilon, Delta float64 }

// DefaultBudget: ten queries at the default ε = 1, δ = 1e-5 each.
var DefaultBudget = Budget{Epsilon: 10, Delta: 1e-4}

// Default cost of one private export.
const (
	DefaultEpsilon = 1.0
	DefaultDelta   = 1e-5
)

// Users is where the ledger keeps each analyst's spending.
type Users interface {
	FindUserByID(ctx context.Context, id string) (*vigil.User, error)
	UpdateUser(ctx context.Context, u *vigil.User, version int) error
}

// Charge records a query's (ε, δ) against the user's budget before it
// runs, or refuses it (EFORBIDDEN) when the budget would be exceeded.
// Spending is stored with the user (version-checked, so concurrent
// queries on several nodes cannot both spend the last of it).
func Charge(ctx context.Context, users Users, userID string, epsilon, delta float64, b Budget) (*vigil.PrivacySpent, error) {
	for range 10 {
		u, err := users.FindUserByID(ctx, userID)
		if err != nil {
			return nil, err
		}
		spent := vigil.PrivacySpent{}
		if u.PrivacySpent != nil {
			spent = *u.PrivacySpent
		}
		if spent.Epsilon+epsilon > b.Epsilon*(1+1e-9) || spent.Delta+delta > b.Delta*(1+1e-9) {
			return nil, &vigil.Error{Code: vigil.EFORBIDDEN, Reason: "privacy-budget-spent",
				Message: formatBudget(spent, epsilon, delta, b)}
		}
		spent.Epsilon += epsilon
		spent.Delta += delta
		spent.Queries++
		u.PrivacySpent = &spent
		err = users.UpdateUser(ctx, u, u.Version)
		if vigil.ErrorCode(err) == vigil.ECONFLICT {
			continue // another query or change came first: read again
		}
		if err != nil {
			return nil, err
		}
		return &spent, nil
	}
	return nil, vigil.Errorf(vigil.EUNAVAILABLE, "the privacy budget is being updated concurrently; try again")
}

func formatBudget(spent vigil.PrivacySpent, epsilon, delta float64, b Budget) string {
	return fmt.Sprintf("privacy budget: this query needs ε = %.4g, δ = %.4g; %.4g of ε = %.4g and %.4g of δ = %.4g are left after %d queries. "+
		"Ask for a smaller epsilon, or an administrator for a new budget period",
		epsilon, delta, math.Max(0, b.Epsilon-spent.Epsilon), b.Epsilon, math.Max(0, b.Delta-spent.Delta), b.Delta, spent.Queries)
}
