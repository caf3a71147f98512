package jsonl

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// DefaultMaxLineBytes caps a line when NewReader is given no cap: the Batch API's 200 MB input file limit, since one
// line can never be larger than the file holding it.
const DefaultMaxLineBytes = 200_000_000

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Reader reads JSON Lines one line at a time with a cap on the length of a line.
//
// A line is the bytes before '\n'; a '\r' before the '\n' is dropped, so files written on Windows read the same.
// A UTF-8 byte order mark at the start of line 1 is dropped too: editors add it, it is never data, and rejecting
// a whole file for it helps nobody. A line longer than the cap is reported as a *RecordError and skipped without
// being held in memory whole; so is a line that is not valid UTF-8. Reading goes on after either.
type Reader struct {
	br      *bufio.Reader
	source  string
	max     int
	line    int
	long    []byte // accumulates a line longer than the bufio buffer
	tooLong bool
	total   int64 // bytes of the current over-long line, for the message
}

// NewReader returns a Reader of r. source names the input in errors; maxLineBytes caps a line without its line
// ending (0 means DefaultMaxLineBytes).
func NewReader(r io.Reader, source string, maxLineBytes int) *Reader {
	if maxLineBytes <= 0 {
		maxLineBytes = DefaultMaxLineBytes
	}
	return &Reader{br: bufio.NewReaderSize(r, 256<<10), source: source, max: maxLineBytes}
}

// Source returns the name given to NewReader.
func (r *Reader) Source() string { return r.source }

// Line returns the number of the line last returned by Next (1-based).
func (r *Reader) Line() int { return r.line }

// Buffered reports how many bytes can be read without reading the underlying reader; when it is 0 the next call of
// Next may block, which lets a caller hand over what it has before waiting on a slow stream.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Next returns the next line without its line ending. The slice is valid until the next call. A bad line comes back
// as a *RecordError, with the line if it is not valid UTF-8 and nil if it is too long; any other error ends the
// input, io.EOF after the last line. An empty last line
// (a file ending in a newline) is not returned.
func (r *Reader) Next() ([]byte, error) {
	r.long = r.long[:0]
	r.tooLong = false
	r.total = 0
	for {
		frag, err := r.br.ReadSlice('\n')
		switch {
		case err == nil:
			r.line++
			return r.finish(frag)
		case errors.Is(err, bufio.ErrBufferFull):
			r.keep(frag)
		case errors.Is(err, io.EOF):
			if len(frag) == 0 && len(r.long) == 0 && !r.tooLong {
				return nil, io.EOF
			}
			r.line++
			return r.finish(frag)
		default:
			return nil, fmt.Errorf("read %s: %w", r.source, err)
		}
	}
}

// keep holds a fragment of a line longer than the bufio buffer, unless the line is already over the cap: then only
// its length is counted, so an endless line costs no memory.
func (r *Reader) keep(frag []byte) {
	r.total += int64(len(frag))
	if r.tooLong {
		return
	}
	// +2 leaves room for a "\r\n" that does not count against the cap.
	if len(r.long)+len(frag) > r.max+2 {
		r.tooLong = true
		r.long = r.long[:0]
		return
	}
	r.long = append(r.long, frag...)
}

func (r *Reader) finish(frag []byte) ([]byte, error) {
	line := frag
	if len(r.long) > 0 || r.tooLong {
		r.keep(frag)
		line = r.long
	}
	if r.tooLong {
		return nil, Errorf(r.source, r.line, "line is %d bytes, over the limit of %d", r.total, r.max)
	}
	line = bytes.TrimSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if r.line == 1 {
		line = bytes.TrimPrefix(line, utf8BOM)
	}
	if len(line) > r.max {
		return nil, Errorf(r.source, r.line, "line is %d bytes, over the limit of %d", len(line), r.max)
	}
	if !utf8.Valid(line) {
		return line, Errorf(r.source, r.line, "invalid UTF-8 at byte %d", invalidUTF8At(line)+1)
	}
	return line, nil
}

// invalidUTF8At returns the offset of the first byte that does not start a valid UTF-8 sequence.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		c, size := utf8.DecodeRune(b[i:])
		if c == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return len(b)
}
