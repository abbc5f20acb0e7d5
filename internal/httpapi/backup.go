package httpapi

import (
	"context"
	"io"
	"net/http"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/backup"
)

// BackupRequest is the body of POST /api/v1/backup.
type BackupRequest struct {
	// Base, the manifest of an earlier backup, makes this one incremental:
	// only the files the base does not have are sent.
	Base *backup.Manifest `json:"base,omitempty"`
	// MasterKey includes DATA/master-key.
	MasterKey bool `json:"masterKey,omitempty"`
}

// backup streams a consistent snapshot of the node's data (a tar stream
// ending in its manifest, internal/backup) for vigil backup, which
// encrypts it. Audited like every admin call.
func (s *Server) backup(w http.ResponseWriter, r *http.Request, _ *vigil.Principal) error {
	if s.o.Backup == nil {
		return vigil.Errorf(vigil.EUNAVAILABLE, "this node cannot take a backup")
	}
	var req BackupRequest
	if r.ContentLength != 0 {
		if err := s.decode(r, &req); err != nil {
			return err
		}
	}
	detail := "full"
	if req.Base != nil {
		detail = "incremental on " + req.Base.ID
	}
	if req.MasterKey {
		detail += ", with the master key"
	}
	auditDetail(r, detail)
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Cache-Control", "no-store")
	if _, err := s.o.Backup(r.Context(), w, req.Base, req.MasterKey); err != nil {
		// The stream may have begun: the client finds no manifest at its
		// end and says the backup failed.
		s.log.Error("backup failed", "err", err)
		return err
	}
	return nil
}

// Backup streams a backup of the running node to w (POST /api/v1/backup).
func (c *Client) Backup(ctx context.Context, w io.Writer, req BackupRequest) error {
	return c.do(ctx, "POST", "/api/v1/backup", req, w)
}
