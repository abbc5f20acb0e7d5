package netlimit

import (
	"bytes"
	"io"
)

// ReadBody reads at most limit+1 bytes of body (so that a caller can tell
// a body over the limit by its length) into one buffer sized from
// length, the length the request declared (negative when unknown).
// io.ReadAll grows its buffer from 512 bytes, which cost a 600 KB batch
// upload several allocations and copies of its body.
func ReadBody(body io.Reader, length int64, limit int) ([]byte, error) {
	var b bytes.Buffer
	if length >= 0 && length <= int64(limit) {
		b.Grow(int(length) + bytes.MinRead) // room to read EOF without growing
	}
	_, err := b.ReadFrom(io.LimitReader(body, int64(limit)+1))
	return b.Bytes(), err
}
