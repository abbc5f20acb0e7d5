// Package backup makes, checks and restores backups of a Vigil data
// directory: a consistent online snapshot (the embedded store's Pebble
// checkpoint, taken while ingest continues, with the node's keys and TLS
// material) written as a tar stream, encrypted with age
// (filippo.io/age) to the operators' recipients, with a manifest of every
// file's size and SHA-256. An incremental backup carries only the files
// its base does not have (Pebble's sstables never change once written);
// a restore takes the full backup and the incrementals after it.
// Format: docs/formats/backup.md.
package backup

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
)

// FormatVersion is the backup format this code writes and reads.
const FormatVersion = 1

// ManifestName is the tar entry, always the last, holding the Manifest.
const ManifestName = "MANIFEST.json"

// Manifest describes a backup: every file of the snapshot, whether this
// archive or an earlier one of its chain holds its bytes.
type Manifest struct {
	Format  int       `json:"format"`
	ID      string    `json:"id"` // time-ordered, e.g. 20261202T054501Z
	Created time.Time `json:"created"`
	// Base is the backup this one adds to (incremental), "" for a full one.
	Base string `json:"base,omitempty"`
	// Chain is every backup a restore needs, oldest first, this one last.
	Chain []string `json:"chain"`
	Files []File   `json:"files"`
	// MasterKey says whether DATA/master-key is inside (only when asked:
	// without it, the restored data keys open only with the master key
	// kept elsewhere).
	MasterKey bool `json:"masterKey"`
	// Vigil is the version of the Vigil that wrote it.
	Vigil string `json:"vigil,omitempty"`
}

// File is one file of a snapshot.
type File struct {
	Path   string `json:"path"` // slash-separated, relative to the data directory
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// In is the backup whose archive holds the bytes ("" or this ID: this
	// one).
	In string `json:"in,omitempty"`
}

// KeyFiles are the files of a data directory, beside the store, that a
// backup keeps: the wrapped data keys, the audit, command and research
// keys, the TLS material and an edge's configuration state.
var KeyFiles = []string{"data-keys.json", "audit-key", "audit-key.pub", "command-key", "research-key", "edge-config.json", "tls"}

// Prepare makes the consistent copy of dataDir in snap (which must not
// exist): checkpoint writes the store's snapshot to snap/store, the key
// files are copied, and DATA/master-key too when withMasterKey.
func Prepare(dataDir, snap string, checkpoint func(dir string) error, withMasterKey bool) error {
	if err := os.MkdirAll(snap, 0o700); err != nil {
		return err
	}
	if err := checkpoint(filepath.Join(snap, "store")); err != nil {
		return fmt.Errorf("snapshot the store: %w", err)
	}
	files := slices.Clone(KeyFiles)
	if withMasterKey {
		files = append(files, "master-key")
	}
	for _, name := range files {
		src := filepath.Join(dataDir, name)
		err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dataDir, p)
			if d.IsDir() {
				return os.MkdirAll(filepath.Join(snap, rel), 0o700)
			}
			return copyFile(p, filepath.Join(snap, rel))
		})
		if errors.Is(err, fs.ErrNotExist) {
			if name == "master-key" {
				return errors.New("--with-master-key: there is no DATA/master-key (the master key comes from VIGIL_MASTER_KEY; keep it with your key escrow)")
			}
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// NewID is a backup id for t.
func NewID(t time.Time) string { return t.UTC().Format("20060102T150405.000Z") }

// Write writes the snapshot directory snap as a tar stream to w: every
// file not already in base (same path, size and SHA-256), then the
// manifest. It returns the manifest.
func Write(w io.Writer, snap string, base *Manifest, id, version string, now time.Time) (*Manifest, error) {
	m := &Manifest{Format: FormatVersion, ID: id, Created: now.UTC(), Vigil: version, Chain: []string{id}}
	have := map[string]File{}
	if base != nil {
		if base.Format != FormatVersion {
			return nil, fmt.Errorf("base backup %s has format %d; this Vigil writes %d: make a full backup", base.ID, base.Format, FormatVersion)
		}
		m.Base, m.Chain = base.ID, append(slices.Clone(base.Chain), id)
		for _, f := range base.Files {
			if f.In == "" {
				f.In = base.ID
			}
			have[f.Path] = f
		}
	}
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(snap, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(snap, p)
		rel = filepath.ToSlash(rel)
		if rel == "master-key" {
			m.MasterKey = true
		}
		sum, size, err := hashFile(p)
		if err != nil {
			return err
		}
		f := File{Path: rel, Size: size, SHA256: sum}
		if old, ok := have[rel]; ok && old.Size == size && old.SHA256 == sum {
			f.In = old.In
			m.Files = append(m.Files, f)
			return nil
		}
		m.Files = append(m.Files, f)
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o600, Size: size, ModTime: now.UTC(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		n, err := io.Copy(tw, in)
		if err == nil && n != size {
			err = fmt.Errorf("%s changed while it was backed up", rel)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	if err := tw.WriteHeader(&tar.Header{Name: ManifestName, Mode: 0o600, Size: int64(len(mb)), ModTime: now.UTC(), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(mb); err != nil {
		return nil, err
	}
	return m, tw.Close()
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// Encrypt returns a writer that encrypts to the recipients (age X25519
// public keys, age1…) onto w; Close it to finish.
func Encrypt(w io.Writer, recipients []string) (io.WriteCloser, error) {
	if len(recipients) == 0 {
		return nil, errors.New("a backup is encrypted: give at least one --recipient (an age public key, age1…; make one with vigil backup keygen)")
	}
	var rs []age.Recipient
	for _, r := range recipients {
		x, err := age.ParseX25519Recipient(strings.TrimSpace(r))
		if err != nil {
			return nil, fmt.Errorf("recipient %q: %v (an age public key starts with age1)", r, err)
		}
		rs = append(rs, x)
	}
	return age.Encrypt(w, rs...)
}

// Decrypt opens an encrypted backup with the identities (the contents of
// age identity files: AGE-SECRET-KEY-1… lines).
func Decrypt(r io.Reader, identities string) (io.Reader, error) {
	ids, err := age.ParseIdentities(strings.NewReader(identities))
	if err != nil {
		return nil, fmt.Errorf("identity: %v", err)
	}
	out, err := age.Decrypt(r, ids...)
	if err != nil {
		return nil, fmt.Errorf("cannot decrypt the backup with this identity: %w", err)
	}
	return out, nil
}

// Read reads one decrypted archive: each file goes to extract (nil:
// read and check only), its SHA-256 and size checked against the
// manifest at the end. It returns the manifest, or an error naming what
// does not match.
func Read(r io.Reader, extract func(name string, r io.Reader) error) (*Manifest, error) {
	tr := tar.NewReader(r)
	got := map[string]File{}
	var m *Manifest
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("the backup is damaged or truncated: %w", err)
		}
		if m != nil {
			return nil, fmt.Errorf("entry %s after the manifest: not a Vigil backup", h.Name)
		}
		name := path.Clean(h.Name)
		if name == ManifestName {
			m = &Manifest{}
			if err := json.NewDecoder(tr).Decode(m); err != nil {
				return nil, fmt.Errorf("manifest: %w", err)
			}
			continue
		}
		if !fs.ValidPath(name) || h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("entry %q is not a plain relative file: not a Vigil backup", h.Name)
		}
		hsh := sha256.New()
		src := io.TeeReader(tr, hsh)
		if extract != nil {
			if err := extract(name, src); err != nil {
				return nil, err
			}
		}
		if _, err := io.Copy(io.Discard, src); err != nil { // what extract left unread
			return nil, fmt.Errorf("the backup is damaged or truncated at %s: %w", name, err)
		}
		got[name] = File{Path: name, Size: h.Size, SHA256: hex.EncodeToString(hsh.Sum(nil))}
	}
	if m == nil {
		return nil, errors.New("no manifest: the backup is truncated or not a Vigil backup")
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("backup format %d; this Vigil reads %d", m.Format, FormatVersion)
	}
	for _, f := range m.Files {
		if f.In != "" && f.In != m.ID {
			continue // in an earlier backup of the chain
		}
		g, ok := got[f.Path]
		switch {
		case !ok:
			return nil, fmt.Errorf("%s is in the manifest but not in the archive", f.Path)
		case g.Size != f.Size || g.SHA256 != f.SHA256:
			return nil, fmt.Errorf("%s does not match its checksum: the backup is damaged", f.Path)
		}
		delete(got, f.Path)
	}
	for p := range got {
		return nil, fmt.Errorf("%s is in the archive but not in the manifest", p)
	}
	return m, nil
}

// Restore extracts a chain of decrypted archives (the full backup first,
// then each incremental after it) into target, which must be empty or
// absent, and checks that every file of the last manifest is there with
// its checksum. It returns the last manifest.
func Restore(archives []io.Reader, target string) (*Manifest, error) {
	if ents, err := os.ReadDir(target); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%s is not empty: restore into an empty or new directory", target)
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return nil, err
	}
	var last *Manifest
	var ids []string
	for i, a := range archives {
		m, err := Read(a, func(name string, r io.Reader) error {
			dst := filepath.Join(target, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, r); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		})
		if err != nil {
			return nil, fmt.Errorf("backup %d of %d: %w", i+1, len(archives), err)
		}
		ids = append(ids, m.ID)
		if !slices.Equal(m.Chain, ids) {
			return nil, fmt.Errorf("backup %s needs %s, in that order; given %s", m.ID, strings.Join(m.Chain, ", "), strings.Join(ids, ", "))
		}
		last = m
	}
	if last == nil {
		return nil, errors.New("no backup given")
	}
	// The last manifest is the snapshot: check it whole, drop the rest.
	want := map[string]bool{}
	for _, f := range last.Files {
		p := filepath.Join(target, filepath.FromSlash(f.Path))
		sum, size, err := hashFile(p)
		if err != nil || size != f.Size || sum != f.SHA256 {
			return nil, fmt.Errorf("%s does not match the manifest after the restore (%v)", f.Path, err)
		}
		want[p] = true
	}
	err := filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || want[p] {
			return err
		}
		return os.Remove(p) // a file of an earlier snapshot only (a compacted sstable)
	})
	return last, err
}
