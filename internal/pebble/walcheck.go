package pebble

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/record"
)

// walTail is how the newest write-ahead log of a store ends.
type walTail struct {
	file string // base name, e.g. 000012.log
	size int64
	good int64 // bytes up to the end of the last whole record
	// ignored counts the bytes after good that are not zero: an
	// interrupted (torn) write, or the rest of a reused log file.
	ignored int64
	// corrupt: a damaged record is followed by whole ones (disk damage,
	// not an interrupted write); Pebble refuses to open then.
	corrupt bool
}

// checkWAL reads the newest write-ahead log in dir (nil when there is
// none) the way Pebble replays it, to say afterwards what recovery did.
func checkWAL(dir string) (*walTail, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var nums []uint64
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".log"); ok {
			if v, err := strconv.ParseUint(n, 10, 64); err == nil {
				nums = append(nums, v)
			}
		}
	}
	if len(nums) == 0 {
		return nil, nil
	}
	num := slices.Max(nums)
	name := fmt.Sprintf("%06d.log", num)
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	t := &walTail{file: name, size: int64(len(data))}
	r := newRecordReader(bytes.NewReader(data), num)
	for {
		rec, err := r.Next()
		if err == nil {
			_, err = io.Copy(io.Discard, rec)
		}
		if err == nil {
			t.good = r.Offset()
			continue
		}
		if errors.Is(err, record.ErrInvalidChunk) || errors.Is(err, record.ErrZeroedChunk) {
			t.corrupt = true
		}
		break
	}
	// Pebble replays up to the first chunk it cannot read and, unless the
	// log says where it was last synced, takes that for the end. Damage in
	// the middle of the log would then drop every record after it without
	// a word. So: skip the whole chunks of a record torn at its end, and
	// look past the first bad one for a whole chunk of this log.
	off := int(t.good)
	for off < len(data) {
		next, ok := wholeChunk(data, off, uint32(num))
		if !ok {
			break
		}
		off = next
	}
	for o := off + 1; o+recyclableHeader <= len(data) && !t.corrupt; o++ {
		_, t.corrupt = wholeChunk(data, o, uint32(num))
	}
	for _, b := range data[min(t.good, t.size):] {
		if b != 0 {
			t.ignored++
		}
	}
	return t, nil
}

// damaged explains a store that Pebble refused to open because its
// newest log is damaged before whole records.
func (t *walTail) damaged(dir string) error {
	return fmt.Errorf("the store's write-ahead log %s is damaged at byte %d, and whole records follow the damage: "+
		"that is disk damage, not an interrupted write, and Vigil does not guess what the damaged part held. "+
		"Keep a copy of %s, check the disk, then restore the data directory from a backup — or, to keep what precedes the damage "+
		"and lose what follows it, run `vigil store salvage`", filepath.Join(dir, t.file), t.good, dir)
}

// Salvage is what SalvageWAL did.
type Salvage struct {
	Log     string `json:"log"`     // the damaged log
	Kept    int64  `json:"kept"`    // bytes up to the last whole record before the damage
	Dropped int64  `json:"dropped"` // bytes after it, whole records among them
	Copy    string `json:"copy"`    // where the damaged log was copied first
}

// SalvageWAL makes a store whose newest write-ahead log is damaged in the
// middle openable again: it copies the log beside the store
// (DIR.damaged-{time}/), then cuts it at the last whole record before the
// damage. Whatever followed the damage — acknowledged readings among it —
// is lost from the store (the copy keeps the bytes). It returns nil and
// does nothing when the log is not damaged. The store must be closed.
func SalvageWAL(dir string, now time.Time) (*Salvage, error) {
	t, err := checkWAL(dir)
	if err != nil {
		return nil, err
	}
	if t == nil || !t.corrupt {
		return nil, nil
	}
	path := filepath.Join(dir, t.file)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	copyDir := filepath.Clean(dir) + ".damaged-" + now.UTC().Format("20060102T150405Z")
	if err := os.MkdirAll(copyDir, 0o700); err != nil {
		return nil, err
	}
	cp := filepath.Join(copyDir, t.file)
	if err := os.WriteFile(cp, data, 0o600); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(t.good); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return &Salvage{Log: path, Kept: t.good, Dropped: t.size - t.good, Copy: cp}, nil
}

// Pebble's chunk format (cockroachdb/pebble record package): checksum
// (4 bytes LE), length (2), encoding (1), log number (4, the recyclable
// and WAL-sync encodings 5–12), a synced offset (8, WAL-sync only), then
// the payload; a chunk never crosses a 32 KiB block; the checksum is a
// masked CRC-32C of everything from the encoding byte on.
const (
	walBlock         = 32 << 10
	recyclableHeader = 11
	walSyncHeader    = 19
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// wholeChunk reports whether a whole, intact chunk of log num starts at
// data[o:], and where it ends.
func wholeChunk(data []byte, o int, num uint32) (int, bool) {
	if o+recyclableHeader > len(data) {
		return 0, false
	}
	enc := data[o+6]
	hs := recyclableHeader
	switch {
	case enc >= 9 && enc <= 12:
		hs = walSyncHeader
	case enc < 5 || enc > 12:
		return 0, false
	}
	length := int(binary.LittleEndian.Uint16(data[o+4:]))
	end := o + hs + length
	if end > len(data) || o%walBlock+hs+length > walBlock || binary.LittleEndian.Uint32(data[o+7:]) != num {
		return 0, false
	}
	c := crc32.Update(0, castagnoli, data[o+6:end])
	return end, binary.LittleEndian.Uint32(data[o:]) == (c>>15|c<<17)+0xa282ead8
}

// newRecordReader is record.NewReader(r, num): its file-number type is
// internal to Pebble (it checks that a reused log's records carry this
// log's number), so the number is converted by reflection.
func newRecordReader(r io.Reader, num uint64) *record.Reader {
	f := reflect.ValueOf(record.NewReader)
	out := f.Call([]reflect.Value{reflect.ValueOf(r), reflect.ValueOf(num).Convert(f.Type().In(1))})
	return out[0].Interface().(*record.Reader)
}
