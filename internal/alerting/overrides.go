package alerting

import (
	"time"

	"github.com/vigil-iomt/vigil"
)

// SetOverrides installs a patient's threshold overrides (replacing any
// before). Expired overrides are ignored at evaluation. It returns
// EINVALID for an unknown rule, a missing reason or expiry, or an override
// that widens nothing (no limit).
func (e *Engine) SetOverrides(patientID string, os []vigil.ThresholdOverride) error {
	for _, o := range os {
		if err := e.validOverride(o); err != nil {
			return err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for k := range e.overrides {
		if k.patient == patientID {
			delete(e.overrides, k)
		}
	}
	for _, o := range os {
		e.overrides[stateKey{patientID, o.Rule}] = o
	}
	return nil
}

func (e *Engine) validOverride(o vigil.ThresholdOverride) error {
	found := false
	for _, r := range e.rules {
		found = found || r.ID == o.Rule
	}
	if !found {
		return vigil.FieldErrorf("rule", "unknown-rule", "no rule %q", o.Rule)
	}
	if o.Below == nil && o.Above == nil {
		return vigil.FieldErrorf("below", "required", "an override sets below and/or above")
	}
	if o.Reason == "" {
		return vigil.FieldErrorf("reason", "required", "a patient-specific limit needs a reason")
	}
	if o.Expires.IsZero() || o.Expires.Sub(e.now()) > 30*24*time.Hour {
		return vigil.FieldErrorf("expires", "invalid", "a patient-specific limit expires within 30 days")
	}
	return nil
}
