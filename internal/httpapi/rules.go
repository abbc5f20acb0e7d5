package httpapi

import (
	"net/http"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/alerting"
)

// RuleRequest saves a new version of a CEL rule (the language:
// docs/rules.md). Enabled defaults to true; Note is required when the
// rule exists (it is the rule's audit trail).
type RuleRequest struct {
	Title      string `json:"title"`
	Expr       string `json:"expr"`
	ForSeconds int    `json:"forSeconds"`
	Priority   string `json:"priority"`
	Enabled    *bool  `json:"enabled,omitempty"`
	Note       string `json:"note,omitempty"`
}

func (s *Server) putRule(w http.ResponseWriter, r *http.Request, p *vigil.Principal) error {
	var req RuleRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	rule := vigil.Rule{ID: r.PathValue("id"), Title: req.Title, Expr: req.Expr, ForSeconds: req.ForSeconds, Priority: req.Priority,
		Enabled: req.Enabled == nil || *req.Enabled, Note: req.Note, SavedBy: p.UserID}
	saved, err := s.o.Alerts.SaveRule(r.Context(), rule)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if saved.Version == 1 {
		status = http.StatusCreated
	}
	writeJSON(w, status, saved)
	return nil
}

func (s *Server) listRules(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	rs, err := s.o.Store.FindRules(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(rs))
	return nil
}

func (s *Server) getRule(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	v, err := intParam(r.URL.Query().Get("version"), 0)
	if err != nil {
		return err
	}
	rule, err := s.o.Store.FindRule(r.Context(), r.PathValue("id"), v)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rule)
	return nil
}

func (s *Server) ruleHistory(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	rs, err := s.o.Store.RuleHistory(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rs)
	return nil
}

// BacktestRequest runs a rule over stored history without saving it.
type BacktestRequest = alerting.BacktestRequest

func (s *Server) backtest(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	var req BacktestRequest
	if err := s.decode(r, &req); err != nil {
		return err
	}
	rep, err := s.o.Alerts.Backtest(r.Context(), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// deviceStatus serves what Vigil last heard from a device: when, and its
// battery. A registered device that has not reported since Vigil started
// answers with only its id.
func (s *Server) deviceStatus(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	d, err := s.o.Store.FindDeviceByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	st, ok := s.o.Alerts.DeviceStatus(d.ID)
	if !ok {
		st = alerting.DeviceStatus{Device: d.ID}
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// auditVerify checks the audit log: 200 with the report whether or not
// it is intact (ok says which).
func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if s.o.AuditVerify == nil {
		return vigil.Errorf(vigil.ENOTFOUND, "this server keeps no audit log")
	}
	rep, err := s.o.AuditVerify(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
