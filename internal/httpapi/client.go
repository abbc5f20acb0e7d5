package httpapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/alerting"
	"github.com/vigil-iomt/vigil/internal/audit"
	"github.com/vigil-iomt/vigil/internal/pubhealth"
)

// Client calls a running server's admin API. Errors come back as
// *vigil.Error with the server's code, field, reason and message, so the
// CLI reports them the same way online and offline.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client for the server at baseURL using an API token.
func NewClient(baseURL, token string) *Client {
	return &Client{base: strings.TrimSuffix(baseURL, "/"), token: token, http: &http.Client{Timeout: 30 * time.Second}}
}

// WithTLS makes the client verify the server with cfg (for example a
// pool holding Vigil's local CA) and returns it.
func (c *Client) WithTLS(cfg *tls.Config) *Client {
	c.http.Transport = &http.Transport{TLSClientConfig: cfg}
	return c
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return vigil.Errorf(vigil.EUNAVAILABLE, "cannot reach the Vigil server at %s: %v", c.base, err)
	}
	defer resp.Body.Close()
	if w, ok := out.(io.Writer); ok && resp.StatusCode < 300 {
		// A download (CSV): streamed as it comes.
		if _, err := io.Copy(w, resp.Body); err != nil {
			return vigil.Errorf(vigil.EUNAVAILABLE, "reading the answer of %s: %v", c.base, err)
		}
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return vigil.Errorf(vigil.EUNAVAILABLE, "reading the answer of %s: %v", c.base, err)
	}
	if resp.StatusCode >= 300 {
		var p Problem
		if json.Unmarshal(data, &p) != nil || p.Status == 0 {
			p = Problem{Detail: fmt.Sprintf("%s %s: %s", method, path, resp.Status)}
		}
		return errorFromProblem(resp.StatusCode, &p)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return vigil.Errorf(vigil.EINTERNAL, "unexpected answer from %s%s: %v", c.base, path, err)
		}
	}
	return nil
}

// AddPatient registers a patient (p is updated with the stored record).
func (c *Client) AddPatient(ctx context.Context, p *vigil.Patient) error {
	return c.do(ctx, "POST", "/api/v1/patients", p, p)
}

// AddDevice registers a device and returns its secret.
func (c *Client) AddDevice(ctx context.Context, d *vigil.Device) (string, error) {
	var out DeviceCreated
	if err := c.do(ctx, "POST", "/api/v1/devices", d, &out); err != nil {
		return "", err
	}
	if out.Device != nil {
		*d = *out.Device
	}
	return out.Secret, nil
}

// RotateDeviceSecret gives a device a new secret.
func (c *Client) RotateDeviceSecret(ctx context.Context, id string) (string, error) {
	var out SecretRotated
	err := c.do(ctx, "POST", "/api/v1/devices/"+url.PathEscape(id)+"/secret", nil, &out)
	return out.Secret, err
}

// RevokeDevice takes a device's credential away at once.
func (c *Client) RevokeDevice(ctx context.Context, id string) error {
	return c.do(ctx, "POST", "/api/v1/devices/"+url.PathEscape(id)+"/revoke", nil, nil)
}

// Assign assigns a device to a patient from a time (zero: now).
func (c *Client) Assign(ctx context.Context, deviceID, patientID string, from time.Time) error {
	return c.do(ctx, "POST", "/api/v1/devices/"+url.PathEscape(deviceID)+"/assignments", AssignRequest{Patient: patientID, From: from}, nil)
}

// AddUser registers a user with a password.
func (c *Client) AddUser(ctx context.Context, u *vigil.User, password string) error {
	return c.do(ctx, "POST", "/api/v1/users", UserRequest{User: *u, Password: password}, u)
}

// CreateToken issues an API token.
func (c *Client) CreateToken(ctx context.Context, userID string, spec admin.TokenSpec) (string, *vigil.Token, error) {
	req := TokenRequest{Name: spec.Name, Scopes: spec.Scopes, Patient: spec.Patient}
	if spec.TTL > 0 {
		req.TTL = spec.TTL.String()
	}
	var out TokenCreated
	if err := c.do(ctx, "POST", "/api/v1/users/"+url.PathEscape(userID)+"/tokens", req, &out); err != nil {
		return "", nil, err
	}
	return out.Token, out.Record, nil
}

// ListPatients returns all patients.
func (c *Client) ListPatients(ctx context.Context) ([]*vigil.Patient, error) {
	var out []*vigil.Patient
	err := c.do(ctx, "GET", "/api/v1/patients", nil, &out)
	return out, err
}

// ListDevices returns all devices.
func (c *Client) ListDevices(ctx context.Context) ([]*vigil.Device, error) {
	var out []*vigil.Device
	err := c.do(ctx, "GET", "/api/v1/devices", nil, &out)
	return out, err
}

// ListUsers returns all users.
func (c *Client) ListUsers(ctx context.Context) ([]*vigil.User, error) {
	var out []*vigil.User
	err := c.do(ctx, "GET", "/api/v1/users", nil, &out)
	return out, err
}

// DeadLetters lists dead letters, newest first.
func (c *Client) DeadLetters(ctx context.Context, f vigil.DeadLetterFilter) ([]*vigil.DeadLetter, error) {
	q := url.Values{}
	set(q, "device", f.DeviceID)
	set(q, "reason", f.Reason)
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out []*vigil.DeadLetter
	err := c.do(ctx, "GET", "/api/v1/deadletters?"+q.Encode(), nil, &out)
	return out, err
}

// Alerts lists alerts, newest first.
func (c *Client) Alerts(ctx context.Context, f vigil.AlertFilter) ([]*vigil.Alert, error) {
	q := url.Values{}
	set(q, "patient", f.PatientID)
	for _, s := range f.States {
		q.Add("state", s)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out []*vigil.Alert
	err := c.do(ctx, "GET", "/api/v1/alerts?"+q.Encode(), nil, &out)
	return out, err
}

// Acknowledge acknowledges an alert.
func (c *Client) Acknowledge(ctx context.Context, id, note string) (*vigil.Alert, error) {
	var out vigil.Alert
	if err := c.do(ctx, "POST", "/api/v1/alerts/"+url.PathEscape(id)+"/ack", AckRequest{Note: note}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func set(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

// DeadLetter returns one dead letter with its payload.
func (c *Client) DeadLetter(ctx context.Context, id string) (*vigil.DeadLetter, error) {
	var out vigil.DeadLetter
	if err := c.do(ctx, "GET", "/api/v1/deadletters/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteDeadLetter deletes a dead letter.
func (c *Client) DeleteDeadLetter(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/api/v1/deadletters/"+url.PathEscape(id), nil, nil)
}

// ReplayDeadLetter replays one dead letter.
func (c *Client) ReplayDeadLetter(ctx context.Context, id string) (*ReplayResult, error) {
	var out ReplayResult
	if err := c.do(ctx, "POST", "/api/v1/deadletters/"+url.PathEscape(id)+"/replay", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReplayDeadLetters replays every matching dead letter, oldest first.
func (c *Client) ReplayDeadLetters(ctx context.Context, f vigil.DeadLetterFilter) (*ReplaySummary, error) {
	q := url.Values{}
	set(q, "device", f.DeviceID)
	set(q, "reason", f.Reason)
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out ReplaySummary
	if err := c.do(ctx, "POST", "/api/v1/deadletters/replay?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PutMapping saves a new version of a mapping template pair.
func (c *Client) PutMapping(ctx context.Context, id string, req MappingRequest) (*vigil.Mapping, error) {
	var out vigil.Mapping
	if err := c.do(ctx, "PUT", "/api/v1/mappings/"+url.PathEscape(id), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Mappings lists the latest version of every mapping.
func (c *Client) Mappings(ctx context.Context) ([]*vigil.Mapping, error) {
	var out []*vigil.Mapping
	err := c.do(ctx, "GET", "/api/v1/mappings", nil, &out)
	return out, err
}

// PutRule saves a new version of a CEL rule.
func (c *Client) PutRule(ctx context.Context, id string, req RuleRequest) (*vigil.Rule, error) {
	var out vigil.Rule
	if err := c.do(ctx, "PUT", "/api/v1/rules/"+url.PathEscape(id), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Rules lists the latest version of every rule.
func (c *Client) Rules(ctx context.Context) ([]*vigil.Rule, error) {
	var out []*vigil.Rule
	err := c.do(ctx, "GET", "/api/v1/rules", nil, &out)
	return out, err
}

// RuleHistory returns every version of a rule, oldest first.
func (c *Client) RuleHistory(ctx context.Context, id string) ([]*vigil.Rule, error) {
	var out []*vigil.Rule
	err := c.do(ctx, "GET", "/api/v1/rules/"+url.PathEscape(id)+"/history", nil, &out)
	return out, err
}

// Backtest runs a rule over stored history.
func (c *Client) Backtest(ctx context.Context, req BacktestRequest) (*alerting.BacktestReport, error) {
	var out alerting.BacktestReport
	if err := c.do(ctx, "POST", "/api/v1/rules/backtest", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AuditVerify asks the server to check its audit log.
func (c *Client) AuditVerify(ctx context.Context) (*audit.Report, error) {
	var out audit.Report
	if err := c.do(ctx, "GET", "/api/v1/audit/verify", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AuditFind reads one page of the server's audit log.
// Extract writes a study's research extract (CSV) to w.
func (c *Client) Extract(ctx context.Context, o pubhealth.ExtractOptions, w io.Writer) error {
	q := url.Values{"approval": {o.Approval}, "from": {o.From.Format("2006-01-02")}, "to": {o.To.Format("2006-01-02")}, "code": o.Codes}
	return c.do(ctx, "GET", "/api/v1/studies/"+url.PathEscape(o.Study)+"/extract?"+q.Encode(), nil, w)
}

// EdgeStatus fetches an edge gateway's state (GET /api/v1/edge/status).
func (c *Client) EdgeStatus(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.do(ctx, "GET", "/api/v1/edge/status", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Aggregates fetches public-health aggregates (GET /api/v1/aggregates).
func (c *Client) Aggregates(ctx context.Context, o pubhealth.Options) (*pubhealth.Table, error) {
	q := url.Values{"from": {o.From.Format("2006-01-02")}, "to": {o.To.Format("2006-01-02")}, "format": {"json"}}
	if o.K > 0 {
		q.Set("k", strconv.Itoa(o.K))
	}
	if o.PostalChars > 0 {
		q.Set("postal-chars", strconv.Itoa(o.PostalChars))
	}
	var t pubhealth.Table
	if err := c.do(ctx, "GET", "/api/v1/aggregates?"+q.Encode(), nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

func (c *Client) AuditFind(ctx context.Context, q audit.Query) (*audit.Page, error) {
	v := url.Values{}
	for k, x := range map[string]string{"actor": q.Actor, "patient": q.Patient, "outcome": q.Outcome} {
		if x != "" {
			v.Set(k, x)
		}
	}
	if !q.From.IsZero() {
		v.Set("from", q.From.UTC().Format(time.RFC3339))
	}
	if !q.To.IsZero() {
		v.Set("to", q.To.UTC().Format(time.RFC3339))
	}
	if q.After > 0 {
		v.Set("after", strconv.FormatUint(q.After, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out audit.Page
	if err := c.do(ctx, "GET", "/api/v1/audit?"+v.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// EnrollTOTP gives a user a new authenticator secret.
func (c *Client) EnrollTOTP(ctx context.Context, userID string) (otpURL, secret string, err error) {
	var out TOTPEnrolled
	err = c.do(ctx, "POST", "/api/v1/users/"+url.PathEscape(userID)+"/totp", nil, &out)
	return out.URL, out.Secret, err
}

// EnrollmentCode issues a device's one-time enrollment code.
func (c *Client) EnrollmentCode(ctx context.Context, id string, ttl time.Duration) (string, time.Time, error) {
	var out EnrollmentCode
	req := EnrollmentCodeRequest{}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	err := c.do(ctx, "POST", "/api/v1/devices/"+url.PathEscape(id)+"/enrollment-code", req, &out)
	return out.Code, out.Expires, err
}

// IssueDeviceCert has the server issue a client certificate for a device.
func (c *Client) IssueDeviceCert(ctx context.Context, id string) (certPEM, keyPEM []byte, serial string, err error) {
	var out DeviceCert
	err = c.do(ctx, "POST", "/api/v1/devices/"+url.PathEscape(id)+"/cert", nil, &out)
	return []byte(out.Certificate), []byte(out.Key), out.Serial, err
}
