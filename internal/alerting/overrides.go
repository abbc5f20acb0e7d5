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

// ForgetPatient drops everything the engine holds in memory about a
// patient — rule states, open alerts, overrides, rule windows — after
// their data was erased, so no later transition writes an alert of
// theirs back.
func (e *Engine) ForgetPatient(patientID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, st := range e.states {
		if k.patient != patientID {
			continue
		}
		if st.open != nil {
			delete(e.open, st.open.ID)
		}
		delete(e.states, k)
	}
	for k := range e.overrides {
		if k.patient == patientID {
			delete(e.overrides, k)
		}
	}
	e.windows.Forget(patientID)
	e.openG.Set(float64(len(e.open)))
}
