package submit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/batchctl/batchctl/jsonl"
)

// inLine is one line read from an input: the request built from it, or why it is bad. Its bytes, the request line
// or the bad line as read, are buf[start:end] of its chunk. With --skip-invalid, the line as read of a built request
// is kept too, at buf[rawStart:rawEnd], for the rejects file: a check across the batch (a repeated custom_id, a
// second model, the batch's byte limit) may still reject it, and a rejects file must hold what the user wrote.
type inLine struct {
	name             string
	num              int
	start, end       int
	rawStart, rawEnd int
	customID         string
	model            string
	inputs           int
	bodyOff, bodyLen int          // the body in the line, which the spooler's goroutine estimates
	members          []packMember // of a packed request
	err              error        // a *jsonl.RecordError for a bad line
}

// chunkBytes is the size of a chunk's buffer: large enough that handing chunks over costs little, small enough that
// the chunks in flight (the channel's four, one filling, one draining) stay a few MB of the heap.
const chunkBytes = 256 << 10

type chunk struct {
	lines []inLine
	buf   []byte
	err   error // a read error: the input ends
}

// reader is read's side of the hand-over: where chunks go, where they come back to be reused, and when to stop.
type reader struct {
	out  chan<- *chunk
	free <-chan *chunk
	// stop ends the reading at the next line: what was read is still handed over, unless abort is closed too
	// (the consumer is gone).
	stop, abort <-chan struct{}
	// gate, when set, holds the reading of a new chunk while the batches waiting for upload are too many.
	gate *backlog
}

func (rd *reader) send(c *chunk) bool {
	select {
	case rd.out <- c:
		return true
	case <-rd.abort:
		return false
	}
}

// get returns an empty chunk, or nil when reading must stop: every line read before is in a chunk handed over.
func (rd *reader) get() *chunk {
	if rd.gate != nil && !rd.gate.wait(rd.stop) {
		return nil
	}
	select {
	case <-rd.stop:
		return nil
	default:
	}
	return rd.fresh()
}

// fresh returns an empty chunk, reused when one came back.
func (rd *reader) fresh() *chunk {
	select {
	case c := <-rd.free:
		c.lines, c.buf, c.err = c.lines[:0], c.buf[:0], nil
		return c
	default:
		return &chunk{buf: make([]byte, 0, chunkBytes)}
	}
}

// read reads the inputs in turn, builds and checks each line's request, and hands them over in chunks: on its own
// goroutine, so parsing runs beside hashing and writing. A chunk goes as soon as the reader would block, so a slow
// stream's lines are not held back; the channel is small, so a slow consumer slows the reading. Chunks come back
// through free to be reused.
func (r *run) read(b *builder, rd *reader) {
	defer close(rd.out)
	var req request
	for _, in := range r.opts.Inputs {
		if !r.readInput(in, b, &req, rd) {
			return
		}
	}
}

// readInput is read's work on one input, which it closes when done; false when reading must stop. Each line is
// put in a chunk before the reader may stop, so a line read is always handed over.
func (r *run) readInput(in Input, b *builder, req *request, rdr *reader) bool {
	src := in.Reader
	if src == nil {
		f, err := os.Open(in.Path)
		if err != nil {
			rdr.send(&chunk{err: fmt.Errorf("open input: %w", err)})
			return false
		}
		defer f.Close()
		src = f
	}
	rd := jsonl.NewReader(src, in.Name, int(r.opts.MaxBytes))
	c := rdr.get()
	if c == nil {
		return false
	}
	for {
		line, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if _, ok := jsonl.AsRecordError(err); !ok {
				c.err = err
				rdr.send(c)
				return false
			}
		} else if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		r.opts.Progress.Records.Add(1)
		l := inLine{name: in.Name, num: rd.Line(), err: err}
		raw := line
		if err == nil && b.pk != nil {
			if berr := b.addPacked(in.Name, l.num, line); berr != nil {
				l.err = &jsonl.RecordError{Source: in.Name, Line: l.num, Reason: berr.Error()}
			} else if !b.packFull() && (in.Reader == nil || rd.Buffered() > 0) {
				continue
			} else {
				// Full, or a stream whose next line has not come: the records read go into the spool now (within
				// WriteThroughInterval, as a stream's records must), in a smaller pack.
				l, line = r.packedLine(b, req)
			}
			raw = nil
		} else if err == nil {
			if berr := b.build(in.Name, l.num, line, req); berr != nil {
				l.err = &jsonl.RecordError{Source: in.Name, Line: l.num, Reason: berr.Error()}
			} else {
				line, l.customID, l.model, l.inputs = req.line, req.customID, req.model, req.inputs
				l.bodyOff, l.bodyLen = req.bodyOff, req.bodyLen
			}
		}
		if c = r.put(rdr, c, l, line, raw, rd.Buffered() == 0); c == nil {
			return false
		}
	}
	if b.pk != nil && b.packPending() {
		// A pack never spans two inputs: its records' lines are of one input.
		l, line := r.packedLine(b, req)
		if c = r.put(rdr, c, l, line, nil, true); c == nil {
			return false
		}
	}
	return len(c.lines) == 0 || rdr.send(c)
}

// packedLine builds the open pack into its request line; a pack that fails to build is a bad line of its first
// record's.
func (r *run) packedLine(b *builder, req *request) (inLine, []byte) {
	first := b.pk.members[0]
	l := inLine{name: b.pk.name, num: first.num}
	if err := b.buildPacked(req); err != nil {
		l.err = &jsonl.RecordError{Source: l.name, Line: l.num, Reason: "packed request: " + err.Error()}
		return l, nil
	}
	l.customID, l.model, l.inputs, l.members = req.customID, req.model, req.inputs, req.members
	l.bodyOff, l.bodyLen = req.bodyOff, req.bodyLen
	return l, req.line
}

// put appends a line to chunk c and hands c over when it is full or the input has nothing buffered (flush); it
// returns the chunk to fill next, nil when reading must stop.
func (r *run) put(rdr *reader, c *chunk, l inLine, line, raw []byte, flush bool) *chunk {
	keepRaw := r.opts.SkipInvalid && l.err == nil && raw != nil
	need := len(line)
	if keepRaw {
		need += len(raw)
	}
	if len(c.lines) > 0 && len(c.buf)+need > cap(c.buf) {
		// Hand the chunk over rather than grow it: a grown buffer stays grown, in every chunk in flight.
		if !rdr.send(c) {
			return nil
		}
		c = rdr.fresh()
	}
	if keepRaw {
		l.rawStart = len(c.buf)
		c.buf = append(c.buf, raw...)
		l.rawEnd = len(c.buf)
	}
	l.start = len(c.buf)
	c.buf = append(c.buf, line...)
	l.end = len(c.buf)
	c.lines = append(c.lines, l)
	if len(c.lines) >= 1024 || len(c.buf) >= chunkBytes || flush {
		if !rdr.send(c) {
			return nil
		}
		return rdr.get()
	}
	return c
}

// backlog counts a stream's sealed batch files not yet created as batches. The reader waits while it is full, so a
// slow API slows the reading of the input, and never the writing of what was read.
type backlog struct {
	mu    sync.Mutex
	n     int
	max   int
	freed chan struct{} // closed, and replaced, whenever n drops
}

func newBacklog(max int) *backlog { return &backlog{max: max, freed: make(chan struct{})} }

func (b *backlog) add() {
	b.mu.Lock()
	b.n++
	b.mu.Unlock()
}

func (b *backlog) done() {
	b.mu.Lock()
	b.n--
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// wait returns true once the backlog has room, false if stop is closed first.
func (b *backlog) wait(stop <-chan struct{}) bool {
	for {
		b.mu.Lock()
		if b.n < b.max {
			b.mu.Unlock()
			return true
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-stop:
			return false
		}
	}
}
