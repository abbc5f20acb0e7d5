package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	agelib "filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil/internal/backup"
	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

func storeFormat() int  { return pebble.FormatVersion }
func backupFormat() int { return backup.FormatVersion }

// backupSummary is what vigil backup, verify and restore print.
type backupSummary struct {
	File        string   `json:"file,omitempty"`
	Manifest    string   `json:"manifest,omitempty"`
	ID          string   `json:"id"`
	Base        string   `json:"base,omitempty"`
	Chain       []string `json:"chain"`
	Files       int      `json:"files"`
	Bytes       int64    `json:"bytes"`
	StoredHere  int      `json:"storedHere"`
	BytesHere   int64    `json:"bytesHere"`
	MasterKey   bool     `json:"masterKey"`
	Restored    string   `json:"restoredTo,omitempty"`
	Vigil       string   `json:"vigil,omitempty"`
	CreatedTime string   `json:"created"`
}

func summarize(m *backup.Manifest) backupSummary {
	s := backupSummary{ID: m.ID, Base: m.Base, Chain: m.Chain, MasterKey: m.MasterKey, Vigil: m.Vigil, CreatedTime: m.Created.Format(time.RFC3339)}
	for _, f := range m.Files {
		s.Files++
		s.Bytes += f.Size
		if f.In == "" || f.In == m.ID {
			s.StoredHere++
			s.BytesHere += f.Size
		}
	}
	return s
}

func (s backupSummary) print(w *tabwriter.Writer) {
	if s.File != "" {
		fmt.Fprintf(w, "backup:\t%s\n", s.File)
	}
	if s.Manifest != "" {
		fmt.Fprintf(w, "manifest:\t%s\n", s.Manifest)
	}
	kind := "full"
	if s.Base != "" {
		kind = "incremental on " + s.Base
	}
	fmt.Fprintf(w, "id:\t%s (%s, made %s)\n", s.ID, kind, s.CreatedTime)
	fmt.Fprintf(w, "snapshot:\t%d files, %d bytes; %d files, %d bytes in this archive\n", s.Files, s.Bytes, s.StoredHere, s.BytesHere)
	fmt.Fprintf(w, "restore needs:\t%s\n", strings.Join(s.Chain, " then "))
	if !s.MasterKey {
		fmt.Fprintf(w, "master key:\tnot inside: keep DATA/master-key (or VIGIL_MASTER_KEY) safely apart; the restored data opens only with it\n")
	}
}

func newBackupCmd(g *globals) *cobra.Command {
	var out, baseFile string
	var recipients, recipientFiles []string
	var withKey bool
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Back up a data directory, online, encrypted, with checksums (incremental after the first)",
		Long: `Take a consistent snapshot of the data directory — the embedded store (registry, readings,
alerts, audit log, rules, mapping templates, dead letters) and the node's keys and TLS material —
while the server keeps running and taking readings, and write it as a tar stream encrypted with
age to the given recipients (age public keys; make a key pair with vigil backup keygen).

Everything a device was told is stored before the backup starts is in it. A manifest of every
file's size and SHA-256 is the archive's last entry and is also written next to it (FILE.manifest
.json, no patient data): give it as --base to the next backup to make that one incremental (only
the files the base lacks; the store's sstables never change once written). The master key that
unwraps the data keys stays out unless --with-master-key: keep it apart (key escrow), and the
backup is useless to whoever takes it without it.

When the server runs on --data, the snapshot is taken through its API (admin token in
DATA/control.json); otherwise directly. PostgreSQL: use pg_dump or a base backup (docs/operations.md).`,
		Example: `  vigil backup keygen --out /root/vigil-backup.key       # prints the recipient (age1…)
  vigil backup --data /var/lib/vigil --recipient age1… --out /backups/vigil-full.tar.age
  vigil backup --data /var/lib/vigil --recipient age1… --base /backups/vigil-full.tar.age.manifest.json --out /backups/vigil-inc1.tar.age
  vigil backup verify /backups/vigil-full.tar.age /backups/vigil-inc1.tar.age --identity /root/vigil-backup.key
  vigil restore /backups/vigil-full.tar.age /backups/vigil-inc1.tar.age --identity /root/vigil-backup.key --data /var/lib/vigil-new`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.data == "" {
				return fmt.Errorf("no data directory: pass --data DIR or set VIGIL_DATA")
			}
			if out == "" {
				return fmt.Errorf("give --out FILE (or --out - for standard output)")
			}
			for _, f := range recipientFiles {
				b, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("--recipient-file: %w", err)
				}
				for _, line := range strings.Split(string(b), "\n") {
					if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
						recipients = append(recipients, line)
					}
				}
			}
			var base *backup.Manifest
			if baseFile != "" {
				if !strings.HasSuffix(baseFile, ".manifest.json") {
					baseFile += ".manifest.json"
				}
				b, err := os.ReadFile(baseFile)
				if err != nil {
					return fmt.Errorf("--base: %w (give the earlier backup's FILE.manifest.json)", err)
				}
				base = &backup.Manifest{}
				if err := json.Unmarshal(b, base); err != nil {
					return fmt.Errorf("--base %s: %v", baseFile, err)
				}
			}
			var dst io.Writer = g.stdout
			var file *os.File
			if out != "-" {
				f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
				if err != nil {
					return fmt.Errorf("--out: %w", err)
				}
				file, dst = f, f
			}
			m, err := writeBackup(cmd.Context(), g, dst, recipients, base, withKey)
			if err == nil && file != nil {
				err = file.Sync()
			}
			if file != nil {
				if cerr := file.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					os.Remove(out)
				}
			}
			if err != nil {
				return fmt.Errorf("backup failed, nothing written: %w", err)
			}
			s := summarize(m)
			if file != nil {
				s.File, s.Manifest = out, out+".manifest.json"
				mb, _ := json.MarshalIndent(m, "", "  ")
				if err := os.WriteFile(s.Manifest, mb, 0o600); err != nil {
					return err
				}
			}
			w := g.stdout
			if out == "-" {
				w = g.stderr
			}
			if g.json && out != "-" {
				return g.print(s, nil)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			s.print(tw)
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "file to write the encrypted backup to (- for standard output); it must not exist")
	f.StringSliceVar(&recipients, "recipient", nil, "age public key (age1…) to encrypt to (repeatable: any one of the identities opens it)")
	f.StringSliceVar(&recipientFiles, "recipient-file", nil, "file of age public keys, one per line")
	f.StringVar(&baseFile, "base", "", "an earlier backup's manifest (FILE.manifest.json): back up only what it lacks")
	f.BoolVar(&withKey, "with-master-key", false, "include DATA/master-key (otherwise keep it apart: the backup's data keys open only with it)")
	cmd.AddCommand(newBackupKeygenCmd(g), newBackupVerifyCmd(g))
	return cmd
}

// writeBackup writes the encrypted snapshot of g.data to dst, through the
// running server or directly.
func writeBackup(ctx context.Context, g *globals, dst io.Writer, recipients []string, base *backup.Manifest, withKey bool) (*backup.Manifest, error) {
	enc, err := backup.Encrypt(dst, recipients)
	if err != nil {
		return nil, err
	}
	var m *backup.Manifest
	if c, err := node.ReadControl(g.data); err == nil && processAlive(c.PID) {
		// Online: the server snapshots its own store; the manifest is the
		// stream's last entry, read back as it passes.
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			var rerr error
			m, rerr = backup.Read(io.TeeReader(pr, enc), nil)
			io.Copy(io.Discard, pr)
			done <- rerr
		}()
		err := httpapi.NewClient(c.HTTPURL, c.Token).WithTLS(g.clientTLS()).Backup(ctx, pw, httpapi.BackupRequest{Base: base, MasterKey: withKey})
		pw.CloseWithError(err)
		if rerr := <-done; err == nil {
			err = rerr
		}
		if err != nil {
			return nil, err
		}
	} else {
		st, err := pebble.Open(filepath.Join(g.data, "store"), pebble.Options{CompactInterval: -1})
		if err != nil {
			return nil, err
		}
		id := backup.NewID(time.Now())
		snap := filepath.Join(g.data, "backup-"+id)
		err = backup.Prepare(g.data, snap, st.Checkpoint, withKey)
		st.Close()
		if err == nil {
			m, err = backup.Write(enc, snap, base, id, buildInfo().Version, time.Now())
		}
		os.RemoveAll(snap)
		if err != nil {
			return nil, err
		}
	}
	return m, enc.Close()
}

func newBackupKeygenCmd(g *globals) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Make an age key pair for backups: the identity to a file, the recipient printed",
		Long: `Make an age X25519 key pair. The identity (AGE-SECRET-KEY-1…) goes to --out, mode 0600:
keep it off the server, with whoever may restore. The recipient (age1…) is printed: give it to
vigil backup --recipient. Keys made by age-keygen work as well.`,
		Example: `  vigil backup keygen --out /root/vigil-backup.key`,
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if out == "" {
				return fmt.Errorf("give --out FILE for the identity (the secret half)")
			}
			id, err := agelib.GenerateX25519Identity()
			if err != nil {
				return err
			}
			text := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
			f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			if _, err := f.WriteString(text); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			return g.print(map[string]string{"identity": out, "recipient": id.Recipient().String()}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "identity (secret, keep it safe):\t%s\nrecipient (for --recipient):\t%s\n", out, id.Recipient())
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the identity to (must not exist)")
	return cmd
}

// openArchives decrypts the named backups with the identity file.
func openArchives(files []string, identityFile string) ([]io.Reader, func(), error) {
	if identityFile == "" {
		return nil, nil, errors.New("give --identity FILE: the age identity the backup was encrypted to")
	}
	idb, err := os.ReadFile(identityFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--identity: %w", err)
	}
	var rs []io.Reader
	var closers []io.Closer
	closeAll := func() {
		for _, c := range closers {
			c.Close()
		}
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		closers = append(closers, f)
		r, err := backup.Decrypt(f, string(idb))
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		rs = append(rs, r)
	}
	return rs, closeAll, nil
}

func newBackupVerifyCmd(g *globals) *cobra.Command {
	var identity string
	cmd := &cobra.Command{
		Use:   "verify BACKUP [INCREMENTAL...]",
		Short: "Check backups without restoring them: decryption, every checksum, the chain",
		Long: `Decrypt each backup, read every file and check its size and SHA-256 against the manifest, and
check that the incrementals follow their base in order. Nothing is written.`,
		Example: `  vigil backup verify /backups/vigil-full.tar.age /backups/vigil-inc1.tar.age --identity /root/vigil-backup.key`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			rs, closeAll, err := openArchives(args, identity)
			if err != nil {
				return err
			}
			defer closeAll()
			var out []backupSummary
			var ids []string
			for i, r := range rs {
				m, err := backup.Read(r, nil)
				if err != nil {
					return fmt.Errorf("%s: %w", args[i], err)
				}
				ids = append(ids, m.ID)
				if strings.Join(m.Chain, ",") != strings.Join(ids, ",") && i > 0 {
					return fmt.Errorf("%s (backup %s) needs %s in that order", args[i], m.ID, strings.Join(m.Chain, ", "))
				}
				s := summarize(m)
				s.File = args[i]
				out = append(out, s)
			}
			return g.print(out, func(w *tabwriter.Writer) {
				for _, s := range out {
					s.print(w)
					fmt.Fprintf(w, "checksums:\tall match\n\n")
				}
			})
		},
	}
	cmd.Flags().StringVar(&identity, "identity", "", "age identity file (AGE-SECRET-KEY-1…) the backups were encrypted to")
	return cmd
}

func newRestoreCmd(g *globals) *cobra.Command {
	var identity string
	cmd := &cobra.Command{
		Use:   "restore BACKUP [INCREMENTAL...]",
		Short: "Restore backups into an empty data directory",
		Long: `Restore a full backup, and the incrementals made after it in order, into --data, which must be
empty or new. Every file is checked against the last manifest; then the restored store is opened
once to prove it opens. If the backup does not hold the master key, put it at DATA/master-key (or
set VIGIL_MASTER_KEY) before vigil serve. Check the audit log with vigil audit verify.`,
		Example: `  vigil restore /backups/vigil-full.tar.age /backups/vigil-inc1.tar.age --identity /root/vigil-backup.key --data /var/lib/vigil-new`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if g.data == "" {
				return fmt.Errorf("no data directory to restore into: pass --data DIR")
			}
			if ents, err := os.ReadDir(g.data); err == nil && len(ents) > 0 {
				return fmt.Errorf("%s is not empty: restore into an empty or new directory", g.data)
			} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			rs, closeAll, err := openArchives(args, identity)
			if err != nil {
				return err
			}
			defer closeAll()
			m, err := backup.Restore(rs, g.data)
			if err != nil {
				return fmt.Errorf("restore failed: %w (remove %s before trying again)", err, g.data)
			}
			st, err := pebble.Open(filepath.Join(g.data, "store"), pebble.Options{CompactInterval: -1})
			if err != nil {
				return fmt.Errorf("the restored store does not open: %w", err)
			}
			st.Close()
			s := summarize(m)
			s.Restored = g.data
			return g.print(s, func(w *tabwriter.Writer) {
				s.print(w)
				fmt.Fprintf(w, "restored to:\t%s (checksums match, the store opens)\nnext:\tvigil audit verify --data %s, then vigil serve --data %s\n", g.data, g.data, g.data)
			})
		},
	}
	cmd.Flags().StringVar(&identity, "identity", "", "age identity file (AGE-SECRET-KEY-1…) the backups were encrypted to")
	return cmd
}
