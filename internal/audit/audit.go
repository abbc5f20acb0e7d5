// Package audit keeps Vigil's tamper-evident audit log: every login,
// failed login, PHI read and write and configuration change, appended to a
// Merkle tree (RFC 6962 hashing, github.com/transparency-dev/merkle) whose
// head is signed with the node's Ed25519 audit key after every append.
//
// # Records and verification
//
// Record i is stored as {"entry": {...}, "root": hex} where root is the
// tree's root hash after entry i. Verify replays the log from the start:
//
//   - an entry whose index is not its position, or a gap, means records
//     were deleted or reordered (the first such position is named);
//   - a recomputed root that differs from the stored root after entry i
//     means entry i (or an earlier one, if roots were rewritten too) was
//     edited — the first mismatch is named;
//   - the signed head must verify with the public key, match the number
//     of records (fewer records: the log was truncated) and the root.
//
// Someone who can write the data directory can rewrite entries and their
// roots, but not sign a new head without the private key: keep a copy of
// the public key (DATA/audit-key.pub) elsewhere and verify against it.
package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/vigil-iomt/vigil"
)

// Outcomes of an audited action.
const (
	Success = "success"
	Denied  = "denied"
	Failure = "failure"
)

// Entry is one audited event. It never holds PHI beyond identifiers: the
// patient id, not names or values.
type Entry struct {
	Index    uint64    `json:"index"`
	Time     time.Time `json:"time"`
	Actor    string    `json:"actor,omitempty"` // user or device id; "" when authentication failed
	Role     string    `json:"role,omitempty"`
	Action   string    `json:"action"`             // e.g. "login", "GET /fhir/R4/Observation"
	Resource string    `json:"resource,omitempty"` // the path or object
	Patient  string    `json:"patient,omitempty"`  // whose data, when one patient's
	Outcome  string    `json:"outcome"`            // success, denied, failure
	Detail   string    `json:"detail,omitempty"`   // e.g. the error code, a break-glass reason
	Remote   string    `json:"remote,omitempty"`   // client address
}

type record struct {
	Entry json.RawMessage `json:"entry"`
	Root  string          `json:"root"`
}

// Head is a signed tree head.
type Head struct {
	Size  uint64    `json:"size"`
	Root  string    `json:"root"` // hex
	Time  time.Time `json:"time"`
	Sig   string    `json:"sig"`   // hex Ed25519 over SignedBytes
	Range []string  `json:"range"` // the compact range (hex), to resume appending
}

// SignedBytes is what the head's signature covers.
func (h Head) SignedBytes() []byte {
	return []byte("vigil-audit-tree-head/v1\n" + strconv.FormatUint(h.Size, 10) + "\n" + h.Root + "\n" + h.Time.UTC().Format(time.RFC3339Nano) + "\n")
}

// Store keeps the log; the embedded store implements it.
type Store interface {
	AppendAudit(ctx context.Context, index uint64, rec, head []byte) error
	AuditHead(ctx context.Context) ([]byte, bool, error)
	ScanAudit(ctx context.Context, from uint64, fn func(index uint64, rec []byte) error) error
}

var hasher = rfc6962.DefaultHasher

func factory() *compact.RangeFactory {
	return &compact.RangeFactory{Hash: hasher.HashChildren}
}

// Log appends to the audit log. It is safe for concurrent use.
type Log struct {
	store Store
	key   ed25519.PrivateKey
	now   func() time.Time

	mu  sync.Mutex
	rng *compact.Range
}

// Open resumes the log from its signed head (checking the signature).
func Open(ctx context.Context, s Store, key ed25519.PrivateKey, now func() time.Time) (*Log, error) {
	if now == nil {
		now = time.Now
	}
	l := &Log{store: s, key: key, now: now, rng: factory().NewEmptyRange(0)}
	b, ok, err := s.AuditHead(ctx)
	if err != nil || !ok {
		return l, err
	}
	var h Head
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("audit: stored head: %w", err)
	}
	if !ed25519.Verify(key.Public().(ed25519.PublicKey), h.SignedBytes(), mustHex(h.Sig)) {
		return nil, errors.New("audit: the stored tree head's signature does not verify with this node's key: run vigil audit verify")
	}
	hashes := make([][]byte, len(h.Range))
	for i, x := range h.Range {
		hashes[i] = mustHex(x)
	}
	if l.rng, err = factory().NewRange(0, h.Size, hashes); err != nil {
		return nil, fmt.Errorf("audit: stored head: %w", err)
	}
	return l, nil
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}

// Record appends e (its Index and, when zero, Time are set here) durably
// before it returns.
func (l *Log) Record(ctx context.Context, e Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Index = l.rng.End()
	if e.Time.IsZero() {
		e.Time = l.now().UTC()
	}
	entry, err := json.Marshal(e)
	if err != nil {
		return err
	}
	next, err := factory().NewRange(0, l.rng.End(), slices.Clone(l.rng.Hashes()))
	if err != nil {
		return err
	}
	if err := next.Append(hasher.HashLeaf(entry), nil); err != nil {
		return err
	}
	root, err := next.GetRootHash(nil)
	if err != nil {
		return err
	}
	rec, _ := json.Marshal(record{Entry: entry, Root: hex.EncodeToString(root)})
	h := Head{Size: next.End(), Root: hex.EncodeToString(root), Time: e.Time}
	for _, x := range next.Hashes() {
		h.Range = append(h.Range, hex.EncodeToString(x))
	}
	h.Sig = hex.EncodeToString(ed25519.Sign(l.key, h.SignedBytes()))
	head, _ := json.Marshal(h)
	if err := l.store.AppendAudit(ctx, e.Index, rec, head); err != nil {
		return fmt.Errorf("audit: append: %w", err)
	}
	l.rng = next
	return nil
}

// Report is the outcome of Verify.
type Report struct {
	Records uint64 `json:"records"`
	Head    Head   `json:"head"`
	OK      bool   `json:"ok"`
	// Problem says what is wrong and where (record index), when not OK.
	Problem string `json:"problem,omitempty"`
	At      *int64 `json:"at,omitempty"` // the first record concerned
}

// Verify checks the whole log against the public key.
func Verify(ctx context.Context, s Store, pub ed25519.PublicKey) (*Report, error) {
	rep := &Report{}
	fail := func(at int64, format string, args ...any) (*Report, error) {
		rep.Problem = fmt.Sprintf(format, args...)
		if at >= 0 {
			rep.At = &at
		}
		return rep, nil
	}
	rng := factory().NewEmptyRange(0)
	var expect uint64
	var problem *Report
	err := s.ScanAudit(ctx, 0, func(i uint64, b []byte) error {
		if problem != nil {
			return nil
		}
		var r record
		var e Entry
		if err := json.Unmarshal(b, &r); err != nil || json.Unmarshal(r.Entry, &e) != nil {
			problem, _ = fail(int64(i), "record %d is not readable: it was edited", i)
			return nil
		}
		switch {
		case i != expect:
			problem, _ = fail(int64(expect), "record %d is missing (the next stored is %d): records were deleted", expect, i)
			return nil
		case e.Index != i:
			problem, _ = fail(int64(i), "record %d holds entry %d: records were reordered or replaced", i, e.Index)
			return nil
		}
		if err := rng.Append(hasher.HashLeaf(r.Entry), nil); err != nil {
			return err
		}
		root, err := rng.GetRootHash(nil)
		if err != nil {
			return err
		}
		if !bytes.Equal(root, mustHex(r.Root)) {
			problem, _ = fail(int64(i), "record %d does not match the tree: it (or its root) was edited", i)
			return nil
		}
		expect++
		return nil
	})
	if err != nil {
		return nil, err
	}
	rep.Records = expect
	if problem != nil {
		return problem, nil
	}
	b, ok, err := s.AuditHead(ctx)
	if err != nil {
		return nil, err
	}
	if !ok {
		if expect == 0 {
			rep.OK = true
			return rep, nil
		}
		return fail(-1, "the signed tree head is missing")
	}
	if err := json.Unmarshal(b, &rep.Head); err != nil {
		return fail(-1, "the signed tree head is not readable")
	}
	h := rep.Head
	if !ed25519.Verify(pub, h.SignedBytes(), mustHex(h.Sig)) {
		return fail(-1, "the tree head's signature does not verify with this public key: the head was forged or the key is not this node's")
	}
	if h.Size > expect {
		return fail(int64(expect), "the signed head covers %d records but %d are stored: the log was truncated after record %d", h.Size, expect, int64(expect)-1)
	}
	if h.Size < expect {
		return fail(int64(h.Size), "%d records follow the signed head (size %d): they were added without the key", expect-h.Size, h.Size)
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return nil, err
	}
	if hex.EncodeToString(root) != h.Root {
		return fail(-1, "the records do not hash to the signed root: records and roots were rewritten")
	}
	rep.OK = true
	return rep, nil
}

// Key files in a data directory.
const (
	KeyFile    = "audit-key"
	PubKeyFile = "audit-key.pub"
)

// LoadOrCreateKey reads the node's audit signing key from path, creating
// it (0600, with the public key beside it) when absent.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, []byte(hex.EncodeToString(priv.Seed())+"\n"), 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path+".pub", []byte(hex.EncodeToString(pub)+"\n"), 0o644); err != nil {
			return nil, err
		}
		return priv, nil
	}
	if err != nil {
		return nil, err
	}
	seed, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("audit key %s is not a hex Ed25519 seed", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// LoadPublicKey reads a public key written by LoadOrCreateKey.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%s is not a hex Ed25519 public key", path)
	}
	return ed25519.PublicKey(k), nil
}

// FromRequest describes an HTTP request by actor (with role) that ended
// with err: the route, the path, the patient it concerns (a {id} of a
// patients route, a FHIR Patient id, or a patient/subject search
// parameter), the outcome and the client address.
func FromRequest(r *http.Request, actor, role string, err error) Entry {
	e := Entry{Actor: actor, Role: role, Action: r.Pattern, Resource: r.URL.Path, Outcome: Success}
	if e.Action == "" {
		e.Action = r.Method + " " + r.URL.Path
	}
	switch {
	case strings.Contains(r.Pattern, "/patients/{id}") || strings.Contains(r.Pattern, "/Patient/{id}"):
		e.Patient = r.PathValue("id")
	case r.URL.Query().Get("patient") != "":
		e.Patient = strings.TrimPrefix(r.URL.Query().Get("patient"), "Patient/")
	case r.URL.Query().Get("subject") != "":
		e.Patient = strings.TrimPrefix(r.URL.Query().Get("subject"), "Patient/")
	}
	if err != nil {
		e.Outcome, e.Detail = Failure, vigil.ErrorCode(err)
		switch e.Detail {
		case vigil.EUNAUTHORIZED, vigil.EFORBIDDEN:
			e.Outcome = Denied
		}
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		e.Remote = host
	}
	return e
}

// Recorder records entries; *Log.Record fits, and nil is allowed.
type Recorder func(ctx context.Context, e Entry)
