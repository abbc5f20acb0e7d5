package pubhealth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iomt/vigil"
)

// A research extract is row-level data for an approved study, made
// pseudonymous — and it stays personal data (GDPR Recital 26: whoever
// holds the key can re-identify), not anonymous:
//
//   - the patient becomes a keyed pseudonym, HMAC-SHA256 under a key of
//     the study (itself derived from the server's research secret, so
//     two studies' pseudonyms cannot be linked without it);
//   - every time is shifted by the patient's own offset (1 to 180 days either way,
//     from the same key), so intervals within a patient are exact while
//     calendar dates are not;
//   - the HIPAA Safe Harbor identifiers Vigil holds are left out: names,
//     record numbers (MRN, ids), device ids and serials, postal codes, all
//     date elements but the birth year, and ages over 89 (shown as 90+);
//     sex and the readings' codes, values and units stay.
//
// Safe Harbor asks for dates to be removed rather than shifted, which is
// one more reason the extract is pseudonymised data under a data-use
// agreement, not de-identified data.

// ResearchSecretFile is the name, in the data directory, of the secret
// study keys derive from.
const ResearchSecretFile = "research-key"

// LoadOrCreateSecret reads the research secret at path (32 bytes),
// creating it (mode 0600) on first use. Nodes sharing studies must share
// it.
func LoadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != 32 {
			return nil, errors.New(path + ": not a 32-byte research secret")
		}
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	b = make([]byte, 32)
	rand.Read(b)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreateSecret(path) // another process made it first
		}
		return nil, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	return b, f.Close()
}

// ExtractOptions say what a study receives.
type ExtractOptions struct {
	Study    string    // the study's id (its key derives from it)
	Approval string    // the ethics or data-access approval reference (required)
	From, To time.Time // real times of the readings
	Codes    []string  // LOINC codes; empty: the vital signs Vigil maps
	Secret   []byte    // the research secret (LoadOrCreateSecret)
}

// ResearchCodes are the codes an extract holds by default.
var ResearchCodes = []string{vigil.LOINCHeartRate, vigil.LOINCSpO2, vigil.LOINCRespRate, vigil.LOINCBodyTemp,
	vigil.LOINCSystolic, vigil.LOINCDiastolic, vigil.LOINCGlucoseMass, vigil.LOINCBodyWeight}

// ExtractHeader is the first line of an extract's CSV.
var ExtractHeader = []string{"subject", "time", "code", "value", "unit", "birth_year", "sex"}

// Pseudonym is the patient's pseudonym in a study.
func Pseudonym(studyKey []byte, patientID string) string {
	m := hmac.New(sha256.New, studyKey)
	m.Write([]byte("subject\x00" + patientID))
	return "S-" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(m.Sum(nil)[:10])
}

// Shift is the patient's time offset in a study: a whole number of days
// from −180 to +180, never 0.
func Shift(studyKey []byte, patientID string) time.Duration {
	m := hmac.New(sha256.New, studyKey)
	m.Write([]byte("shift\x00" + patientID))
	d := int(binary.BigEndian.Uint64(m.Sum(nil)[:8]) % 360) // never 0: −180 … −1, 1 … 180
	if d < 180 {
		d -= 180
	} else {
		d -= 179
	}
	return time.Duration(d) * 24 * time.Hour
}

// StudyKey derives a study's key from the research secret.
func StudyKey(secret []byte, study string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("study\x00" + study))
	return m.Sum(nil)
}

// WriteExtract writes the study's extract as CSV and returns the number
// of rows.
func WriteExtract(ctx context.Context, src Source, o ExtractOptions, w io.Writer) (int, error) {
	if !vigil.ValidID(o.Study) {
		return 0, vigil.FieldErrorf("study", "invalid", "a study id: letters, digits and '-', up to 48")
	}
	if strings.TrimSpace(o.Approval) == "" {
		return 0, vigil.FieldErrorf("approval", "required", "an extract is for an approved study: give the approval reference (ethics committee or data-access decision)")
	}
	if len(o.Secret) < 32 {
		return 0, vigil.Errorf(vigil.EINTERNAL, "no research secret")
	}
	if o.From.IsZero() || o.To.IsZero() || !o.From.Before(o.To) {
		return 0, vigil.FieldErrorf("from", "invalid", "give a period: from before to")
	}
	codes := o.Codes
	if len(codes) == 0 {
		codes = ResearchCodes
	}
	key := StudyKey(o.Secret, o.Study)
	cw := csv.NewWriter(w)
	if err := cw.Write(ExtractHeader); err != nil {
		return 0, err
	}
	rows := 0
	err := eachPatient(ctx, src, func(p *vigil.Patient) error {
		subject, shift := Pseudonym(key, p.ID), Shift(key, p.ID)
		birth := birthYear(p.BirthDate, o.To)
		for _, code := range codes {
			series, err := src.ReadSeries(ctx, p.ID, code, "", o.From, o.To, maxValues)
			if err != nil {
				return err
			}
			for _, s := range series {
				for i, ms := range s.T {
					t := time.UnixMilli(ms).UTC().Add(shift)
					if err := cw.Write([]string{subject, t.Format(time.RFC3339Nano), code, strconv.FormatFloat(s.V[i], 'f', -1, 64), s.Unit, birth, p.Sex}); err != nil {
						return err
					}
					rows++
				}
			}
		}
		return nil
	})
	if err != nil {
		return rows, err
	}
	cw.Flush()
	return rows, cw.Error()
}

// birthYear is the year of birth, or 90+ for anyone 90 or older at the
// end of the extract (Safe Harbor), or "".
func birthYear(birthDate string, at time.Time) string {
	b, err := time.Parse("2006-01-02", birthDate)
	if err != nil {
		return ""
	}
	if at.Year()-b.Year() > 89 {
		return "90+"
	}
	return strconv.Itoa(b.Year())
}
