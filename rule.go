package vigil

import (
	"context"
	"time"
)

// Rule is a clinical alert rule written in CEL over a patient's latest
// values and windows (the language is documented in internal/rules and
// docs/rules.md). Every save makes a new version; all versions stay
// readable, with who saved them, when and why, so that every change is
// audited. A disabled version stops the rule and resolves its open alerts.
type Rule struct {
	ID    string `json:"id"`
	Title string `json:"title"` // what the alert says, e.g. "Heart rate rising fast"
	// Expr is the CEL condition; the alert fires while it is true.
	Expr string `json:"expr"`
	// ForSeconds: the condition must hold this long (device time) before
	// the alert fires; 0 fires on the first reading that meets it.
	ForSeconds int    `json:"forSeconds"`
	Priority   string `json:"priority"` // PriorityLow, PriorityMedium or PriorityHigh
	Enabled    bool   `json:"enabled"`
	// Note says why this version was saved (required from version 2).
	Note    string    `json:"note,omitempty"`
	Version int       `json:"version"`
	Saved   time.Time `json:"saved"`
	SavedBy string    `json:"savedBy,omitempty"`
}

// For returns ForSeconds as a duration.
func (r *Rule) For() time.Duration { return time.Duration(r.ForSeconds) * time.Second }

// RuleStore keeps rules and every version of them.
type RuleStore interface {
	// SaveRule stores r as the next version of r.ID (setting Version and
	// Saved).
	SaveRule(ctx context.Context, r *Rule) error
	// FindRule returns the latest version (version 0) or the given one;
	// ENOTFOUND if there is none.
	FindRule(ctx context.Context, id string, version int) (*Rule, error)
	// FindRules returns the latest version of every rule, by id.
	FindRules(ctx context.Context) ([]*Rule, error)
	// RuleHistory returns every version of a rule, oldest first;
	// ENOTFOUND if there is none.
	RuleHistory(ctx context.Context, id string) ([]*Rule, error)
}
