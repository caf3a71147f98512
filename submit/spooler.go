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
	"strconv"
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
	// PackMap is the file of the record-to-index map of a packed batch file (its path and packMapSuffix), "" when
	// its requests are not packed.
	PackMap string
}

// packMapSuffix names the record-to-index map of a packed batch file: the batch file's name and this suffix. One
// store.PackedRecord a line, written before the request line it belongs to, so every whole request line of a
// batch file has its records there.
const packMapSuffix = ".packmap"

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

	// packing (Options.Pack): the open part's record-to-index map, its records so far and their custom_ids
	pack      bool
	pf        *os.File
	pw        *bufio.Writer
	ptmp      string
	records   int
	memberIDs map[string]int
	pline     []byte
}

func newSpooler(dir string, o *Options, first int) *spooler {
	s := &spooler{dir: dir, maxRequests: o.MaxRequests, maxBytes: o.MaxBytes, maxTokens: o.MaxTokens, sync: !o.DryRun,
		next: first, ids: make(map[string]int), pack: o.Pack > 0, memberIDs: make(map[string]int)}
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
	if err := s.checkMembers(name, req.members); err != nil {
		return sealed, err
	}
	if s.f != nil {
		if req.model != s.model {
			return sealed, jsonl.Errorf(name, num, "second model %q in this batch (model %q since %s)", req.model, s.model, s.modelLine)
		}
		if first, ok := s.ids[req.customID]; ok {
			return sealed, jsonl.Errorf(name, num, "custom_id %q repeated in this batch (first on line %d)", req.customID, first)
		}
	}
	if s.f == nil {
		if err := s.open(name, req.model); err != nil {
			return sealed, err
		}
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
	if err := s.writeMembers(req); err != nil {
		return sealed, err
	}
	if _, err := s.w.Write(req.line); err != nil {
		return sealed, fmt.Errorf("write spool file %s: %w", s.tmp, err)
	}
	if err := s.w.WriteByte('\n'); err != nil {
		return sealed, fmt.Errorf("write spool file %s: %w", s.tmp, err)
	}
	s.dirty = true
	return sealed, nil
}

// checkMembers refuses a packed request whose records repeat a custom_id of the batch, or of each other.
func (s *spooler) checkMembers(name string, members []packMember) error {
	for i, m := range members {
		if first, ok := s.memberIDs[m.customID]; ok {
			return jsonl.Errorf(name, m.num, "custom_id %q repeated in this batch (first on line %d)", m.customID, first)
		}
		for _, o := range members[:i] {
			if o.customID == m.customID {
				return jsonl.Errorf(name, m.num, "custom_id %q repeated in this batch (first on line %d)", m.customID, o.num)
			}
		}
	}
	return nil
}

// writeMembers writes the records of a packed request to the open part's record-to-index map.
func (s *spooler) writeMembers(req *request) error {
	for i, m := range req.members {
		s.records++
		s.memberIDs[m.customID] = m.num
		s.pline = s.pline[:0]
		s.pline = append(s.pline, `{"packed_custom_id":`...)
		s.pline = jsonl.AppendString(s.pline, req.customID)
		s.pline = append(s.pline, `,"index":`...)
		s.pline = strconv.AppendInt(s.pline, int64(i+1), 10)
		s.pline = append(s.pline, `,"custom_id":`...)
		s.pline = jsonl.AppendString(s.pline, m.customID)
		s.pline = append(s.pline, `,"line":`...)
		s.pline = strconv.AppendInt(s.pline, int64(s.records), 10)
		s.pline = append(s.pline, "}\n"...)
		if _, err := s.pw.Write(s.pline); err != nil {
			return fmt.Errorf("write pack map %s: %w", s.ptmp, err)
		}
	}
	return nil
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
	if s.pack {
		s.ptmp = s.tmp + packMapSuffix
		pf, err := os.OpenFile(s.ptmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			_ = f.Close()
			return fmt.Errorf("create pack map: %w", err)
		}
		s.pf = pf
		if s.pw == nil {
			s.pw = bufio.NewWriterSize(pf, 256<<10)
		} else {
			s.pw.Reset(pf)
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
	err := s.flushPackMap()
	if err == nil {
		err = s.w.Flush()
	}
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
	err := s.flushPackMap()
	if err == nil && s.pf != nil {
		err = s.pf.Close()
		s.pf = nil
	}
	if err == nil {
		err = s.w.Flush()
	}
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
	if s.pack {
		p.PackMap = p.Path + packMapSuffix
		if err := os.Rename(s.ptmp, p.PackMap); err != nil {
			return nil, fmt.Errorf("seal pack map: %w", err)
		}
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
	s.records = 0
	clear(s.ids)
	clear(s.memberIDs)
	return p, nil
}

// discard removes the open batch's file, for a run that stops on bad input.
func (s *spooler) discard() {
	if s.f != nil {
		_ = s.f.Close()
		_ = os.Remove(s.tmp)
		s.f = nil
	}
	if s.pf != nil {
		_ = s.pf.Close()
		_ = os.Remove(s.ptmp)
		s.pf = nil
	}
}

// flushPackMap writes the open part's record-to-index map through to its file (and the disk), before the request
// lines are: a request line on disk always has its records in the map.
func (s *spooler) flushPackMap() error {
	if s.pf == nil {
		return nil
	}
	err := s.pw.Flush()
	if err == nil && s.sync {
		err = s.pf.Sync()
	}
	if err != nil {
		return fmt.Errorf("write pack map %s: %w", s.ptmp, err)
	}
	return nil
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
