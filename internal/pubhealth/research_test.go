package pubhealth

import (
	"bytes"
	"encoding/csv"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

// An extract names no patient, record number, device, postal code or
// real date; each patient has one stable pseudonym per study (another in
// another study) and one time shift, so intervals within a patient stay
// exact; the very old show as 90+.
func TestResearchExtract(t *testing.T) {
	c := newCohort(t)
	a := c.add("SW1A 1AA", "1961-07-04", "female", 3, 37.2, 97, 128, 82)
	b := c.add("EC1 1AA", "1930-02-02", "male", 2, 38.1, 93, 150, 95)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.st.UpdatePatient(ctx, &vigil.Patient{ID: a, Family: "Doe", Given: "Jane", Identifier: "MRN-778899", PostalCode: "SW1A 1AA", BirthDate: "1961-07-04", Sex: "female"}, 0))
	secret, err := LoadOrCreateSecret(filepath.Join(t.TempDir(), ResearchSecretFile))
	must(err)
	run := func(study string) [][]string {
		var buf bytes.Buffer
		n, err := WriteExtract(ctx, c.st, ExtractOptions{Study: study, Approval: "REC 26/LO/0042", From: monday, To: monday.AddDate(0, 0, 7), Secret: secret}, &buf)
		must(err)
		for _, forbidden := range []string{a, b, "Doe", "Jane", "MRN-778899", "SW1A", "EC1", "1961-07-04", "dev-"} {
			if strings.Contains(buf.String(), forbidden) {
				t.Fatalf("extract holds %q:\n%s", forbidden, buf.String())
			}
		}
		rows, err := csv.NewReader(&buf).ReadAll()
		must(err)
		if len(rows)-1 != n || n != 4*3+4*2 {
			t.Fatalf("%d rows (reported %d), want 20", len(rows)-1, n)
		}
		return rows[1:]
	}
	rows := run("heart-study")
	subjects := map[string][]time.Time{}
	years := map[string]string{}
	for _, r := range rows {
		at, err := time.Parse(time.RFC3339Nano, r[1])
		must(err)
		subjects[r[0]] = append(subjects[r[0]], at)
		years[r[0]] = r[5]
	}
	if len(subjects) != 2 {
		t.Fatalf("%d pseudonyms for 2 patients", len(subjects))
	}
	key := StudyKey(secret, "heart-study")
	pa := Pseudonym(key, a)
	if years[pa] != "1961" || years[Pseudonym(key, b)] != "90+" {
		t.Fatalf("birth years: %v", years)
	}
	// Shifted by the patient's offset; the day-to-day interval is exact.
	shift := Shift(key, a)
	if shift == 0 || shift%(24*time.Hour) != 0 || shift < -180*24*time.Hour || shift > 180*24*time.Hour {
		t.Fatalf("shift %v", shift)
	}
	ta := subjects[pa]
	if !ta[0].Equal(monday.Add(9*time.Hour).Add(shift)) || ta[4].Sub(ta[0]) != 24*time.Hour {
		t.Fatalf("times of patient a: %v (shift %v)", ta, shift)
	}
	// Same study again: same pseudonyms; another study: unlinkable ones.
	again := run("heart-study")
	if again[0][0] != rows[0][0] {
		t.Fatal("pseudonym changed between two extracts of one study")
	}
	other := run("copd-study")
	for _, r := range other {
		if _, same := subjects[r[0]]; same {
			t.Fatal("two studies share a pseudonym")
		}
	}
	// Without an approval reference: refused.
	if _, err := WriteExtract(ctx, c.st, ExtractOptions{Study: "x", From: monday, To: monday.AddDate(0, 0, 7), Secret: secret}, &bytes.Buffer{}); vigil.ErrorCode(err) != vigil.EINVALID {
		t.Fatalf("no approval: %v", err)
	}
	// The secret persists.
	dir := t.TempDir()
	s1, _ := LoadOrCreateSecret(filepath.Join(dir, ResearchSecretFile))
	s2, _ := LoadOrCreateSecret(filepath.Join(dir, ResearchSecretFile))
	if !bytes.Equal(s1, s2) || len(s1) != 32 {
		t.Fatal("research secret not kept")
	}
}
