package submit

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/jsonl"
)

// spooledPart is a sealed batch file on disk.
type spooledPart struct {
	Tokens    int64 // estimated prompt tokens, when estimated
	OutTokens int64 // the bound of the output tokens, when estimated
	Part      int
	Path      string
	SHA256    string
	Requests  int
	Bytes     int64
	Model     string
	Source    string
}

// spooler writes request lines into batch files, cutting a new one before a line would pass a limit, and checks
// what only the batch as a whole can tell: custom_ids repeated within it and a second model.
type spooler struct {
	dir         string
	maxRequests int
	maxBytes    int64
	maxInputs   int   // 0 unless the endpoint counts embedding inputs
	maxTokens   int64 // 0: no cap
	sync        bool
	next        int // number of the next part
	// opened, when set, is called once a part's file exists and before its first request is written, with the
	// input and model of that request: a stream's run records the open part in its journal there.
	opened func(part int, file, source, model string) error
	dirty  bool // written since the last flush

	// the open part; f is nil between parts
	f         *os.File
	w         *bufio.Writer
	h         hash.Hash
	tmp       string
	requests  int
	bytes     int64
	inputs    int
	tokens    int64
	outTokens int64
	model     string
	modelLine string // where the batch's model first appeared
	ids       map[string]int
	sources   []string
}

func newSpooler(dir string, o *Options, first int) *spooler {
	s := &spooler{dir: dir, maxRequests: o.MaxRequests, maxBytes: o.MaxBytes, maxTokens: o.MaxTokens, sync: !o.DryRun,
		next: first, ids: make(map[string]int)}
	if o.Endpoint == jsonl.EndpointEmbeddings {
		s.maxInputs = MaxEmbeddingInputs
	}
	return s
}

// add checks req against the open batch and appends it, sealing the open batch first when req would pass a limit.
// A record problem comes back as a *jsonl.RecordError and leaves the batch as it was; sealed is the batch cut, if
// any.
func (s *spooler) add(name string, num int, req *request) (sealed *spooledPart, err error) {
	size := int64(len(req.line)) + 1
	if size > s.maxBytes {
		return nil, jsonl.Errorf(name, num, "request is %d bytes with its newline, over the batch limit of %d", size, s.maxBytes)
	}
	if s.maxInputs > 0 && req.inputs > s.maxInputs {
		return nil, jsonl.Errorf(name, num, "request has %d embedding inputs, over the batch limit of %d", req.inputs, s.maxInputs)
	}
	if s.maxTokens > 0 && req.tokens > s.maxTokens {
		return nil, jsonl.Errorf(name, num, "request is about %d tokens (estimated), over the batch limit of %d", req.tokens, s.maxTokens)
	}
	if s.f != nil && !s.fits(size, req.inputs, req.tokens) {
		if sealed, err = s.seal(); err != nil {
			return nil, err
		}
	}
	if s.f != nil {
		if req.model != s.model {
			return sealed, jsonl.Errorf(name, num, "second model %q in this batch (model %q since %s)", req.model, s.model, s.modelLine)
		}
		if first, ok := s.ids[req.customID]; ok {
			return sealed, jsonl.Errorf(name, num, "custom_id %q repeated in this batch (first on line %d)", req.customID, first)
		}
	} else if err := s.open(name, req.model); err != nil {
		return sealed, err
	}
	if s.requests == 0 {
		s.model, s.modelLine = req.model, fmt.Sprintf("%s:%d", name, num)
	}
	s.ids[req.customID] = num
	if len(s.sources) == 0 || s.sources[len(s.sources)-1] != name {
		s.sources = append(s.sources, name)
	}
	s.requests++
	s.bytes += size
	s.inputs += req.inputs
	s.tokens += req.tokens
	s.outTokens += req.outTokens
	if _, err := s.w.Write(req.line); err != nil {
		return sealed, fmt.Errorf("write spool file %s: %w", s.tmp, err)
	}
	if err := s.w.WriteByte('\n'); err != nil {
		return sealed, fmt.Errorf("write spool file %s: %w", s.tmp, err)
	}
	s.dirty = true
	return sealed, nil
}

// fits reports whether the open batch can take one more request of size bytes (newline included), inputs embedding
// inputs and tokens estimated tokens.
func (s *spooler) fits(size int64, inputs int, tokens int64) bool {
	return s.requests < s.maxRequests && s.bytes+size <= s.maxBytes &&
		(s.maxInputs == 0 || s.inputs+inputs <= s.maxInputs) && (s.maxTokens == 0 || s.tokens+tokens <= s.maxTokens)
}

// full reports whether the open batch can take no further request, so it goes without waiting for the next line:
// the smallest request line is far longer than the 64 bytes this asks for, and takes an input and a token at least.
func (s *spooler) full() bool {
	return s.f != nil && !s.fits(64, 1, 1)
}

// pending reports how many requests the open batch holds.
func (s *spooler) pending() int { return s.requests }

func (s *spooler) open(source, model string) error {
	s.tmp = filepath.Join(s.dir, spoolingName(s.next))
	f, err := os.OpenFile(s.tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create spool file: %w", err)
	}
	if s.opened != nil {
		if err := s.opened(s.next, filepath.Base(s.tmp), source, model); err != nil {
			_ = f.Close()
			_ = os.Remove(s.tmp)
			return err
		}
	}
	s.f, s.h = f, sha256.New()
	if s.w == nil {
		s.w = bufio.NewWriterSize(io.MultiWriter(f, s.h), 1<<20)
	} else {
		s.w.Reset(io.MultiWriter(f, s.h))
	}
	return nil
}

// flush writes what the open batch holds through to its file, and to the disk: a process killed after a flush
// loses none of it. A stream's run calls it at least once a second.
func (s *spooler) flush() error {
	if s.f == nil || !s.dirty {
		return nil
	}
	s.dirty = false
	err := s.w.Flush()
	if err == nil && s.sync {
		err = s.f.Sync()
	}
	if err != nil {
		return fmt.Errorf("write spool file %s: %w", s.tmp, err)
	}
	return nil
}

// seal finishes the open batch: flush, fsync, and rename to part-NNNNN-<sha256 prefix>.jsonl, so a batch file's name
// says its content. It returns nil when no batch is open.
func (s *spooler) seal() (*spooledPart, error) {
	if s.f == nil {
		return nil, nil
	}
	f := s.f
	s.f, s.dirty = nil, false
	err := s.w.Flush()
	if err == nil && s.sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write spool file %s: %w", s.tmp, err)
	}
	sum := hex.EncodeToString(s.h.Sum(nil))
	p := &spooledPart{
		Part: s.next, SHA256: sum, Requests: s.requests, Bytes: s.bytes, Model: s.model, Tokens: s.tokens, OutTokens: s.outTokens,
		Source: batchapi.Truncate(strings.Join(s.sources, ","), MaxMetadataValueLen),
		Path:   filepath.Join(s.dir, sealedName(s.next, sum)),
	}
	if err := os.Rename(s.tmp, p.Path); err != nil {
		return nil, fmt.Errorf("seal spool file: %w", err)
	}
	if s.sync {
		if err := syncDir(s.dir); err != nil {
			return nil, err
		}
	}
	s.next++
	s.requests, s.bytes, s.inputs, s.tokens, s.outTokens, s.model, s.sources = 0, 0, 0, 0, 0, "", s.sources[:0]
	clear(s.ids)
	return p, nil
}

// discard removes the open batch's file, for a run that stops on bad input.
func (s *spooler) discard() {
	if s.f != nil {
		_ = s.f.Close()
		_ = os.Remove(s.tmp)
		s.f = nil
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync spool dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync spool dir %s: %w", dir, err)
	}
	return nil
}
