package node_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/node"
)

// Encryption at rest: a patient's name and identifier, stored through the
// registry and in a review note, appear nowhere in the data directory's
// files (store tables and write-ahead log included); after a restart and
// a data-key rotation everything still reads.
func TestEncryptionAtRest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const name, mrn = "Quargleworth", "MRN-QX-90210"
	n, err := node.Start(ctx, node.Options{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0"})
	must(t, err)
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p-q", Identifier: mrn, Family: name, Given: "Zebedee", BirthDate: "1941-03-02"}))
	must(t, n.Store.AddReview(ctx, &vigil.Review{ID: "r1", PatientID: "p-q", By: "dr", At: time.Now(), Minutes: 5, Note: "called " + name + " about BP"}))
	must(t, n.Close())

	grep := func() []string {
		var hits []string
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, s := range []string{name, mrn, "1941-03-02"} {
				if bytes.Contains(b, []byte(s)) {
					hits = append(hits, filepath.Base(path)+": "+s)
				}
			}
			return nil
		})
		return hits
	}
	if hits := grep(); len(hits) > 0 {
		t.Fatalf("PHI in the clear on disk: %v", hits)
	}

	// Restart, rotate the data key, write more; all of it reads.
	sl, err := node.OpenSealer(dir)
	must(t, err)
	old := sl.Current()
	must(t, sl.Rotate())
	if sl.Current() == old {
		t.Fatal("rotation kept the key")
	}
	n, err = node.Start(ctx, node.Options{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0"})
	must(t, err)
	defer n.Close()
	must(t, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p-r", Identifier: "MRN-R-1", Family: "Rotated"}))
	for id, family := range map[string]string{"p-q": name, "p-r": "Rotated"} {
		p, err := n.Store.FindPatientByID(ctx, id)
		if err != nil || p.Family != family {
			t.Fatalf("%s after restart and rotation: %+v %v", id, p, err)
		}
	}
	ps, _, err := n.Store.FindPatients(ctx, vigil.PatientFilter{Identifier: mrn})
	if err != nil || len(ps) != 1 {
		t.Fatalf("search by identifier: %v %v", ps, err)
	}
}
