package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/vigil-iomt/vigil"
)

// Problem is an RFC 9457 problem details body with Vigil's extension
// members: the field and machine-readable reason of a refusal, the error
// code, and per-reading errors of a multi-reading message.
type Problem struct {
	Type     string         `json:"type"`
	Title    string         `json:"title"`
	Status   int            `json:"status"`
	Detail   string         `json:"detail,omitempty"`
	Code     string         `json:"code,omitempty"`
	Field    string         `json:"field,omitempty"`
	Reason   string         `json:"reason,omitempty"`
	Accepted *int           `json:"accepted,omitempty"`
	Errors   []ReadingError `json:"errors,omitempty"`
}

// ReadingError describes one refused reading of a message.
type ReadingError struct {
	Index  int    `json:"index"`
	ID     string `json:"id,omitempty"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail"`
}

// StatusOf maps a Vigil error code to an HTTP status. This is the one
// place the mapping lives for the HTTP API.
func StatusOf(code string) int {
	switch code {
	case vigil.EINVALID:
		return http.StatusBadRequest
	case vigil.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case vigil.EFORBIDDEN:
		return http.StatusForbidden
	case vigil.ENOTFOUND:
		return http.StatusNotFound
	case vigil.ECONFLICT:
		return http.StatusConflict
	case vigil.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case vigil.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	case vigil.EFULL:
		return http.StatusInsufficientStorage
	case vigil.ETOOMANY:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// problemFor builds the problem body of err. Internal errors are not
// described to clients (they are logged instead).
func problemFor(err error) *Problem {
	var e *vigil.Error
	if !errors.As(err, &e) {
		e = &vigil.Error{Code: vigil.EINTERNAL, Message: "internal error"}
	}
	st := StatusOf(e.Code)
	p := &Problem{Type: "about:blank", Title: http.StatusText(st), Status: st, Detail: e.Message, Code: e.Code, Field: e.Field, Reason: e.Reason}
	if e.Code == vigil.EINTERNAL {
		p.Detail = "internal error; the server log has the details"
	}
	if e.Reason != "" {
		p.Type = "https://vigil-iomt.github.io/problems/" + e.Reason
	}
	return p
}

func writeProblem(w http.ResponseWriter, p *Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if p.Status == http.StatusServiceUnavailable || p.Status == http.StatusInsufficientStorage {
		w.Header().Set("Retry-After", "5")
	}
	if p.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeJSONHeader(w, status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// writeJSONHeader starts a JSON answer.
func writeJSONHeader(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
}

// errorFromProblem turns a problem body back into a *vigil.Error (the
// client side of problemFor).
func errorFromProblem(status int, p *Problem) *vigil.Error {
	code := p.Code
	if code == "" {
		switch status {
		case 400, 422:
			code = vigil.EINVALID
		case 401:
			code = vigil.EUNAUTHORIZED
		case 403:
			code = vigil.EFORBIDDEN
		case 404:
			code = vigil.ENOTFOUND
		case 409:
			code = vigil.ECONFLICT
		case 413:
			code = vigil.ETOOLARGE
		case 503:
			code = vigil.EUNAVAILABLE
		default:
			code = vigil.EINTERNAL
		}
	}
	msg := p.Detail
	if msg == "" {
		msg = p.Title
	}
	return &vigil.Error{Code: code, Message: msg, Field: p.Field, Reason: p.Reason}
}
