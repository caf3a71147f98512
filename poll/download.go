package poll

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/provider"
)

// maxStalledResumes bounds the resumes of one download in a row that bring no byte: a download that makes progress
// may be cut and resumed any number of times.
const maxStalledResumes = 3

// download opens a file's content as a body that resumes where a cut left it (the provider's Open from the byte
// reached: a Range request), so a connection reset or a body cut short half way through a large output file costs
// the rest of the file, not the whole load. size is the body's length, or -1.
func (d *Daemon) download(ctx context.Context, p provider.Provider, fileID string) (body io.ReadCloser, size int64, err error) {
	d.m.PollCalls.WithLabelValues("download").Inc()
	b, err := p.Open(ctx, fileID, 0)
	if err != nil {
		return nil, 0, err
	}
	return &resumingBody{ctx: ctx, d: d, p: p, fileID: fileID, body: b.ReadCloser, size: b.Size}, b.Size, nil
}

// resumingBody reads a file's content, and when the connection is cut asks for the rest from the byte it reached.
// A server that answers a Range request with the whole body has the bytes already read skipped.
type resumingBody struct {
	ctx     context.Context
	d       *Daemon
	p       provider.Provider
	fileID  string
	body    io.ReadCloser
	size    int64 // the whole body's length, -1 when unknown
	off     int64 // bytes read so far
	stalled int   // resumes in a row that brought nothing
}

func (b *resumingBody) Read(p []byte) (int, error) {
	for {
		n, err := b.body.Read(p)
		b.off += int64(n)
		if n > 0 {
			b.stalled = 0
		}
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF && (b.size < 0 || b.off >= b.size): //nolint:errorlint // the end of a body is io.EOF itself
			return n, io.EOF
		case errors.Is(err, io.EOF):
			err = io.ErrUnexpectedEOF // fewer bytes than announced, or a failure that carries io.EOF
		}
		if b.ctx.Err() != nil || batchapi.Classify(err) != batchapi.Transient || b.stalled >= maxStalledResumes {
			return n, err
		}
		if rerr := b.resume(); rerr != nil {
			return n, &cutError{msg: fmt.Sprintf("download of %s cut at byte %d (%v); resuming failed: %v", b.fileID, b.off, err, rerr),
				causes: []error{err, rerr}}
		}
		if n > 0 {
			return n, nil
		}
	}
}

// resume replaces the cut body with the rest of the file.
func (b *resumingBody) resume() error {
	b.stalled++
	_ = b.body.Close()
	b.d.m.PollCalls.WithLabelValues("download").Inc()
	rest, err := b.p.Open(b.ctx, b.fileID, b.off)
	if err != nil {
		b.body = io.NopCloser(eofReader{})
		return err
	}
	b.body = rest.ReadCloser
	if !rest.Partial {
		// The whole body again: skip what was read.
		if _, err := io.CopyN(io.Discard, rest, b.off); err != nil {
			return fmt.Errorf("skip the %d bytes read: %w", b.off, err)
		}
	}
	b.d.log.Info("download resumed", "file_id", b.fileID, "at_byte", b.off, "partial", rest.Partial)
	return nil
}

func (b *resumingBody) Close() error { return b.body.Close() }

// cutError is a download cut short whose resume failed. Whatever its causes, it is not the end of the file: a resume
// that met a connection closed before any answer fails with the client's io.EOF, and a reader that stops at
// errors.Is(err, io.EOF) (jsonl.Reader, the loader) would take the cut for the end and load the lines before it as
// the whole file, for good. So errors.Is and errors.As see its causes, except io.EOF.
type cutError struct {
	msg    string
	causes []error
}

func (e *cutError) Error() string { return e.msg }

func (e *cutError) Is(target error) bool {
	if target == io.EOF { //nolint:errorlint // io.EOF itself is what must not match
		return false
	}
	for _, c := range e.causes {
		if errors.Is(c, target) {
			return true
		}
	}
	return false
}

func (e *cutError) As(target any) bool {
	for _, c := range e.causes {
		if errors.As(c, target) {
			return true
		}
	}
	return false
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
