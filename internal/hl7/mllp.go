package hl7

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// MLLP frame bytes.
const (
	StartBlock = 0x0B
	EndBlock   = 0x1C
	CR         = 0x0D
)

// ErrFrameTooLarge is returned when a frame exceeds the reader's limit.
var ErrFrameTooLarge = errors.New("mllp: frame exceeds the size limit")

// FrameReader reads MLLP frames from a stream; frames may arrive split
// across reads or several in one read.
type FrameReader struct {
	r   *bufio.Reader
	max int
}

// NewFrameReader reads frames of at most max bytes from r.
func NewFrameReader(r io.Reader, max int) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// Read returns the next frame's content. Bytes before a start block are
// an error (the connection should be closed: the stream is out of sync).
// io.EOF means the peer closed cleanly between frames.
func (f *FrameReader) Read() ([]byte, error) {
	c, err := f.r.ReadByte()
	if err != nil {
		return nil, err // io.EOF between frames
	}
	if c != StartBlock {
		return nil, fmt.Errorf("mllp: expected start block 0x0B, got 0x%02X", c)
	}
	var buf []byte
	for {
		c, err := f.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if c == EndBlock {
			c2, err := f.r.ReadByte()
			if err != nil {
				if err == io.EOF {
					return nil, io.ErrUnexpectedEOF
				}
				return nil, err
			}
			if c2 != CR {
				return nil, fmt.Errorf("mllp: expected 0x0D after end block, got 0x%02X", c2)
			}
			return buf, nil
		}
		if c == StartBlock {
			return nil, errors.New("mllp: start block inside a frame")
		}
		if len(buf) >= f.max {
			return nil, ErrFrameTooLarge
		}
		buf = append(buf, c)
	}
}

// AppendFrame appends msg framed for MLLP to dst.
func AppendFrame(dst, msg []byte) []byte {
	dst = append(dst, StartBlock)
	dst = append(dst, msg...)
	return append(dst, EndBlock, CR)
}
