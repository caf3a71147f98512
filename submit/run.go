package submit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/jsonl"
)

// maxReportedErrors bounds the record errors collected from a bounded input before the run gives up reading it.
const maxReportedErrors = 20

type run struct {
	opts    *Options
	log     *slog.Logger
	enc     *json.Encoder
	emitted map[string]bool
	api     *batchapi.Client
}

// Run submits the records of opts.Inputs, after finishing the unfinished intents found in opts.SpoolDir. It
// returns the first record error (a *jsonl.RecordError, several joined for a bounded input) when the input is bad
// and SkipInvalid is off; nothing from a bad bounded input is uploaded.
func Run(ctx context.Context, opts Options) error {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return err
	}
	r := &run{opts: &opts, log: opts.Logger, enc: json.NewEncoder(opts.Out), emitted: map[string]bool{}}
	r.api = r.apiClient()
	if err := os.MkdirAll(opts.SpoolDir, 0o700); err != nil {
		return fmt.Errorf("create spool dir: %w", err)
	}
	if !opts.DryRun {
		if err := r.resumeAll(ctx); err != nil {
			return err
		}
	}
	if opts.Resume || len(opts.Inputs) == 0 {
		return nil
	}
	return r.submit(ctx)
}

// resumeAll finishes the unfinished intents of every run directory no other process holds.
func (r *run) resumeAll(ctx context.Context) error {
	entries, err := os.ReadDir(r.opts.SpoolDir)
	if err != nil {
		return fmt.Errorf("read spool dir: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".dry-run") {
			continue
		}
		if err := r.resumeDir(ctx, filepath.Join(r.opts.SpoolDir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) resumeDir(ctx context.Context, dir string) error {
	lock, err := lockRunDir(dir)
	if errors.Is(err, ErrRunDirBusy) {
		r.log.Debug("skipping a run directory in use", "dir", dir)
		return nil
	}
	if err != nil {
		return err
	}
	defer lock.Unlock()
	js, err := loadJournals(dir)
	if err != nil {
		return err
	}
	if err := cleanStale(dir, spoolFiles(js)); err != nil {
		return err
	}
	for _, j := range js {
		if j.State == StateCreated {
			continue
		}
		r.log.Info("finishing an unfinished intent", "journal", j.path, "state", j.State)
		if err := r.finish(ctx, j); err != nil {
			return err
		}
	}
	return nil
}

func spoolFiles(js []*journal) map[string]bool {
	keep := make(map[string]bool, len(js))
	for _, j := range js {
		keep[j.SpoolFile] = true
	}
	return keep
}

// runKey names the run directory of a command line: the same inputs with the same options that shape the batch
// files find the journals of their earlier runs there.
func runKey(o *Options) (string, error) {
	var ids []string
	for _, in := range o.Inputs {
		if in.Reader != nil {
			ids = append(ids, "stream:"+in.Name)
			continue
		}
		abs, err := filepath.Abs(in.Path)
		if err != nil {
			return "", err
		}
		ids = append(ids, "file:"+abs)
	}
	meta := make([]string, 0, len(o.Metadata))
	for k, v := range o.Metadata {
		meta = append(meta, k+"="+v)
	}
	sort.Strings(meta)
	shape := []any{ids, o.Format, o.Endpoint, o.Model, o.System, o.TextField, o.IDField,
		o.Template, o.MaxRequests, o.MaxBytes, meta}
	if o.MaxTokens > 0 { // only then, so that the run directories of earlier versions keep their names
		shape = append(shape, o.MaxTokens)
	}
	shapeJSON, err := json.Marshal(shape)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(shapeJSON)
	name := "input"
	if len(o.Inputs) > 0 {
		name = strings.Map(func(c rune) rune {
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' {
				return c
			}
			return '_'
		}, batchapi.Truncate(o.Inputs[0].Name, 40))
	}
	return name + "-" + hex.EncodeToString(sum[:8]), nil
}

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
	tokens           int64
	err              error // a *jsonl.RecordError for a bad line
}

// chunkBytes is the size of a chunk's buffer: large enough that handing chunks over costs little, small enough that
// the chunks in flight (the channel's four, one filling, one draining) stay a few MB of the heap.
const chunkBytes = 256 << 10

type chunk struct {
	lines []inLine
	buf   []byte
	err   error // a read error: the input ends
}

// read reads the inputs in turn, builds and checks each line's request, and hands them over in chunks: on its own
// goroutine, so parsing runs beside hashing and writing. A chunk goes as soon as the reader would block, so a slow
// stream's lines are not held back; the channel is small, so a slow consumer slows the reading. Chunks come back
// through free to be reused.
func (r *run) read(ctx context.Context, b *builder, out chan<- *chunk, free <-chan *chunk) {
	defer close(out)
	send := func(c *chunk) bool {
		select {
		case out <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	get := func() *chunk {
		select {
		case c := <-free:
			c.lines, c.buf, c.err = c.lines[:0], c.buf[:0], nil
			return c
		default:
			return &chunk{buf: make([]byte, 0, chunkBytes)}
		}
	}
	var req request
	for _, in := range r.opts.Inputs {
		if !r.readInput(in, b, &req, get, send) {
			return
		}
	}
}

// readInput is read's work on one input, which it closes when done; false when reading must stop.
func (r *run) readInput(in Input, b *builder, req *request, get func() *chunk, send func(*chunk) bool) bool {
	src := in.Reader
	if src == nil {
		f, err := os.Open(in.Path)
		if err != nil {
			send(&chunk{err: fmt.Errorf("open input: %w", err)})
			return false
		}
		defer f.Close()
		src = f
	}
	rd := jsonl.NewReader(src, in.Name, int(r.opts.MaxBytes))
	c := get()
	for {
		line, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if _, ok := jsonl.AsRecordError(err); !ok {
				c.err = err
				send(c)
				return false
			}
		} else if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		r.opts.Progress.Records.Add(1)
		l := inLine{name: in.Name, num: rd.Line(), err: err}
		raw := line
		if err == nil {
			if berr := b.build(in.Name, l.num, line, req); berr != nil {
				l.err = &jsonl.RecordError{Source: in.Name, Line: l.num, Reason: berr.Error()}
			} else {
				line, l.customID, l.model, l.inputs, l.tokens = req.line, req.customID, req.model, req.inputs, req.tokens
			}
		}
		keepRaw := r.opts.SkipInvalid && l.err == nil
		need := len(line)
		if keepRaw {
			need += len(raw)
		}
		if len(c.lines) > 0 && len(c.buf)+need > cap(c.buf) {
			// Hand the chunk over rather than grow it: a grown buffer stays grown, in every chunk in flight.
			if !send(c) {
				return false
			}
			c = get()
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
		if len(c.lines) >= 1024 || len(c.buf) >= chunkBytes || rd.Buffered() == 0 {
			if !send(c) {
				return false
			}
			c = get()
		}
	}
	return len(c.lines) == 0 || send(c)
}

func (r *run) submit(ctx context.Context) error {
	key, err := runKey(r.opts)
	if err != nil {
		return err
	}
	dir := filepath.Join(r.opts.SpoolDir, key)
	if r.opts.DryRun {
		dir += ".dry-run"
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("clear the last dry run: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create run dir: %w", err)
	}
	lock, err := lockRunDir(dir)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	js, err := loadJournals(dir)
	if err != nil {
		return err
	}
	if err := cleanStale(dir, spoolFiles(js)); err != nil {
		return err
	}
	bySHA := make(map[string]*journal, len(js))
	for _, j := range js {
		bySHA[j.SpoolSHA256] = j
	}
	bounded, err := r.bounded()
	if err != nil {
		return err
	}
	b, err := newBuilder(r.opts)
	if err != nil {
		return err
	}
	sp := newSpooler(dir, r.opts)
	defer sp.discard()
	r.log.Info("submitting", "run_dir", dir, "bounded", bounded, "dry_run", r.opts.DryRun)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines, free := make(chan *chunk, 4), make(chan *chunk, 8)
	go r.read(ctx, b, lines, free)

	var (
		sealed  []*spooledPart // of a bounded input, submitted once all of it is valid
		badErrs []error
		req     request
		timer   = time.NewTimer(time.Hour)
		timerC  <-chan time.Time
	)
	timer.Stop()
	deliver := func(p *spooledPart) error {
		if p == nil {
			return nil
		}
		timer.Stop()
		timerC = nil
		if bounded {
			sealed = append(sealed, p)
			return nil
		}
		return r.deliver(ctx, p, bySHA)
	}
	bad := func(line []byte, err error) error {
		re, _ := jsonl.AsRecordError(err)
		if r.opts.SkipInvalid {
			r.opts.Progress.Rejected.Add(1)
			return r.reject(re, line)
		}
		if !bounded {
			return re
		}
		badErrs = append(badErrs, re)
		if len(badErrs) >= maxReportedErrors {
			return errors.Join(badErrs...)
		}
		return nil
	}

loop:
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timerC:
			timerC = nil
			p, err := sp.seal()
			if err != nil {
				return err
			}
			r.log.Debug("flush interval passed: submitting a partial batch")
			if err := deliver(p); err != nil {
				return err
			}
		case c, ok := <-lines:
			if !ok {
				break loop
			}
			for _, l := range c.lines {
				line := c.buf[l.start:l.end]
				if l.err != nil {
					if err := bad(line, l.err); err != nil {
						return err
					}
					continue
				}
				req = request{line: line, customID: l.customID, model: l.model, inputs: l.inputs, tokens: l.tokens}
				wasEmpty := sp.pending() == 0
				p, err := sp.add(l.name, l.num, &req)
				if derr := deliver(p); derr != nil {
					return derr
				}
				if err != nil {
					if _, ok := jsonl.AsRecordError(err); !ok {
						return err
					}
					if l.rawEnd > l.rawStart {
						line = c.buf[l.rawStart:l.rawEnd]
					}
					if err := bad(line, err); err != nil {
						return err
					}
					continue
				}
				if sp.full() {
					p, err := sp.seal()
					if err != nil {
						return err
					}
					if err := deliver(p); err != nil {
						return err
					}
					continue
				}
				if (wasEmpty || p != nil) && r.opts.FlushInterval > 0 && !bounded {
					timer.Reset(r.opts.FlushInterval)
					timerC = timer.C
				}
			}
			if c.err != nil {
				return c.err
			}
			select {
			case free <- c:
			default:
			}
		}
	}
	p, err := sp.seal()
	if err != nil {
		return err
	}
	if err := deliver(p); err != nil {
		return err
	}
	if len(badErrs) > 0 {
		for _, p := range sealed {
			_ = os.Remove(p.Path)
		}
		return errors.Join(badErrs...)
	}
	for _, p := range sealed {
		if err := r.deliver(ctx, p, bySHA); err != nil {
			return err
		}
	}
	if n := r.opts.Progress.Rejected.Load(); n > 0 {
		r.log.Warn("skipped invalid records", "count", n)
	}
	return nil
}

// bounded reports whether every input is a regular file, which can be validated whole before any upload; a stream
// cannot be, so its batches go as they fill.
func (r *run) bounded() (bool, error) {
	for _, in := range r.opts.Inputs {
		if in.Reader != nil {
			return false, nil
		}
		st, err := os.Stat(in.Path)
		if err != nil {
			return false, fmt.Errorf("open input: %w", err)
		}
		if !st.Mode().IsRegular() {
			return false, nil
		}
	}
	return true, nil
}

// reject writes a bad record and its reason to the rejects file as one JSON line.
func (r *run) reject(re *jsonl.RecordError, line []byte) error {
	type rejected struct {
		Source string  `json:"source"`
		Line   int     `json:"line"`
		Reason string  `json:"reason"`
		Record *string `json:"record,omitempty"`
	}
	rej := rejected{Source: re.Source, Line: re.Line, Reason: re.Reason}
	if len(line) > 0 { // a line too long to hold comes as an empty slice: no record, rather than ""
		s := string(line)
		rej.Record = &s
	}
	b, err := json.Marshal(rej)
	if err != nil {
		return err
	}
	if _, err := r.opts.Rejects.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write rejects: %w", err)
	}
	return nil
}

// deliver turns a sealed batch file into a batch: it records the intent, then finishes it. A file whose content an
// earlier run of the same command already turned into an intent finishes that intent instead.
func (r *run) deliver(ctx context.Context, p *spooledPart, bySHA map[string]*journal) error {
	if r.opts.DryRun {
		r.opts.Progress.Batches.Add(1)
		return r.encode(Created{Requests: p.Requests, Bytes: p.Bytes, SpoolSHA256: p.SHA256, Source: p.Source,
			Endpoint: r.opts.Endpoint, Model: p.Model, Part: p.Part, DryRun: true, SpoolFile: p.Path})
	}
	base := filepath.Base(p.Path)
	if j, ok := bySHA[p.SHA256]; ok && !r.opts.Force {
		if j.SpoolFile != base {
			_ = os.Remove(p.Path)
		}
		r.log.Info("batch file already submitted by an earlier run", "spool_file", base, "state", j.State)
		return r.finish(ctx, j)
	}
	intent := newIntent()
	jpath := strings.TrimSuffix(p.Path, ".jsonl")
	if _, ok := bySHA[p.SHA256]; ok {
		jpath += "-" + intent[:8] // --force: a second intent for the same content
	}
	j := &journal{
		Version: 1, State: StatePending, Intent: intent, Part: p.Part, SpoolFile: base, SpoolSHA256: p.SHA256,
		Requests: p.Requests, Bytes: p.Bytes, Model: p.Model, Endpoint: r.opts.Endpoint, Source: p.Source,
		Metadata: r.metadata(p, intent), SpooledAt: r.opts.Now().UTC(), path: jpath + journalSuffix,
	}
	if err := j.save(); err != nil {
		return err
	}
	bySHA[p.SHA256] = j
	return r.finish(ctx, j)
}

func (r *run) metadata(p *spooledPart, intent string) map[string]string {
	m := make(map[string]string, len(r.opts.Metadata)+4)
	for k, v := range r.opts.Metadata {
		m[k] = v
	}
	m[MetaSpoolSHA256] = p.SHA256
	m[MetaIntent] = intent
	m[MetaSource] = p.Source
	m[MetaPart] = strconv.Itoa(p.Part)
	return m
}

// finish takes an intent from whatever state it is in to a created batch, saving the journal before each next
// call, and emits the batch.
func (r *run) finish(ctx context.Context, j *journal) error {
	mayExist := false
	switch j.State {
	case StateCreated:
		return r.emit(ctx, j, true)
	case StatePending:
		id, err := r.api.Upload(ctx, j.spoolPath())
		if err != nil {
			return err
		}
		j.State, j.FileID, j.UploadedAt = StateUploaded, id, r.opts.Now().UTC()
		if err := j.save(); err != nil {
			return err
		}
		r.log.Info("uploaded batch file", "spool_file", j.SpoolFile, "file_id", id, "bytes", j.Bytes)
		if r.opts.afterUpload != nil {
			if err := r.opts.afterUpload(); err != nil {
				return err
			}
		}
	case StateUploaded:
		mayExist = true // the last run may have created the batch and lost the answer
	default:
		return fmt.Errorf("journal %s: unknown state %q", j.path, j.State)
	}
	b, existing, err := r.create(ctx, j, mayExist)
	if err != nil {
		return err
	}
	j.State, j.BatchID, j.CreatedAt = StateCreated, b.ID, r.opts.Now().UTC()
	if err := j.save(); err != nil {
		return err
	}
	// The batch holds the file now; the journal keeps the sha256 that recognises the content.
	_ = os.Remove(j.spoolPath())
	r.opts.Progress.Batches.Add(1)
	r.log.Info("created batch", "batch_id", b.ID, "spool_file", j.SpoolFile, "requests", j.Requests)
	return r.emit(ctx, j, existing)
}

// emit writes a batch's JSON line, once per batch and run, and calls OnCreated.
func (r *run) emit(ctx context.Context, j *journal, existing bool) error {
	if r.emitted[j.BatchID] {
		return nil
	}
	r.emitted[j.BatchID] = true
	c := j.created()
	c.Existing = existing
	if err := r.encode(c); err != nil {
		return err
	}
	if r.opts.OnCreated != nil {
		if err := r.opts.OnCreated(ctx, c); err != nil {
			return fmt.Errorf("after creating batch %s: %w", c.BatchID, err)
		}
	}
	return nil
}

func (r *run) encode(c Created) error {
	if err := r.enc.Encode(c); err != nil {
		return fmt.Errorf("write batch line: %w", err)
	}
	return nil
}
