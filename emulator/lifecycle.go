package emulator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Per-request error codes of the error file.
const (
	CodeBatchExpired   = "batch_expired"
	CodeBatchCancelled = "batch_cancelled"
	CodeServerError    = "server_error"
)

// outputBuckets is how many scratch files the output is scattered into at most; concatenating them yields an order
// that is not the input order without holding the file in memory.
const outputBuckets = 16

// requestsPerBucket sizes the buckets of a small batch: a batch of 20 requests scatters its lines into 2 files, not
// 16 (creating a file is what an emulator with 10 000 small batches in flight spends most of its time on).
const requestsPerBucket = 100

// progressSteps is how many times request_counts advance during in_progress, for a batch of at least
// progressSteps×minSlice requests; a smaller one advances in slices of minSlice, fewer times.
const (
	progressSteps = 10
	minSlice      = 16
)

// slicing returns how many requests a batch of total answers per step, and the pause between steps: in_progress
// lasts about one PhaseDelay whatever the number of steps.
func slicing(total int64, phase time.Duration) (step int64, pause time.Duration) {
	step = max((total+progressSteps-1)/progressSteps, min(total, minSlice), 1)
	return step, phase / time.Duration(max((total+step-1)/step, 1))
}

// buckets are a batch's scratch files of one kind (output, errors), and which of them exist.
type buckets struct {
	paths [outputBuckets]string
	n     uint64 // buckets in use: up to outputBuckets, fewer for a small batch
	used  uint32 // bit i: paths[i] was created
}

// newBuckets names the scratch files of a batch of total requests.
func newBuckets(dir, prefix string, total int64) buckets {
	b := buckets{n: uint64(min(max((total+requestsPerBucket-1)/requestsPerBucket, 2), outputBuckets))}
	for i := range b.n {
		b.paths[i] = filepath.Join(dir, prefix+"."+strconv.FormatUint(i, 10))
	}
	return b
}

// existing lists the buckets written to, in bucket order.
func (b *buckets) existing() []string {
	var out []string
	for i, p := range b.paths {
		if b.used&(1<<i) != 0 {
			out = append(out, p)
		}
	}
	return out
}

func (b *buckets) remove() {
	for _, p := range b.existing() {
		_ = os.Remove(p)
	}
	b.used = 0
}

// batchPhase is where a batch's lifecycle stands between two steps.
type batchPhase int

const (
	phaseValidating batchPhase = iota // waiting one PhaseDelay, then validating the input file
	phaseAnswering                    // answering a slice of the requests per step, a tenth of a PhaseDelay apart
	phaseFinalizing                   // one PhaseDelay finalizing, then the result files
	phaseCancelling                   // one PhaseDelay cancelling, then the result files of what was answered
)

// batchRun is the lifecycle of one batch, stepped by the scheduler: it holds what survives between steps (where the
// answering stands in the input file, the tallies, the scratch buckets' paths), never an open file.
type batchRun struct {
	s     *Server
	b     *batch
	input fileMeta
	phase batchPhase
	res   *results // nil until answering starts
	ans   answering
}

// answering is how far the answering of a batch's input file has gone.
type answering struct {
	offset      int64  // bytes of the input file read so far
	answered    int64  // requests answered so far
	stopCode    string // batch_cancelled or batch_expired once answering stopped; the rest go to the error file
	expireAfter int64  // answers before an expiring batch stops
	step        int64  // answers per step
	pause       time.Duration
}

// step runs the batch's current phase and returns the wait until the next one, or done once the batch has ended.
func (r *batchRun) step() (time.Duration, bool) {
	s, b := r.s, r.b
	log := s.log.With("batch", b.ID)
	switch r.phase {
	case phaseValidating:
		if b.cancelReq.Load() {
			r.phase = phaseCancelling
			return s.opts.PhaseDelay, false
		}
		v, err := s.validateInput(b, r.input)
		if err != nil {
			log.Error("validate input file", "err", err)
			v.Errors = []batchError{newBatchError(CodeServerError, "The emulator could not read the input file: "+err.Error(), "input_file_id", 0)}
		}
		switch s.startBatch(b, v) {
		case startFailed:
			return 0, true
		case startCancelled:
			r.phase = phaseCancelling
			return s.opts.PhaseDelay, false
		}
		log.Debug("batch in_progress", "requests", v.Total)
		r.phase = phaseAnswering
		return 0, false

	case phaseAnswering:
		finished, err := s.answerSlice(b, r.input.path, r)
		if err != nil {
			s.failInternal(b, r.res, "answer the batch's requests", err)
			return 0, true
		}
		if !finished {
			return r.ans.pause, false
		}
		switch {
		case b.cancelReq.Load():
			r.phase = phaseCancelling
			return s.opts.PhaseDelay, false
		case r.res.stopped:
			s.finish(b, r.res, func(now int64) {
				b.Status, b.ExpiredAt = StatusExpired, now
				s.stats.ExpiredBatches++
			})
			log.Debug("batch done", "status", StatusExpired)
			return 0, true
		}
		s.setStatus(b, func(now int64) {
			if b.Status == StatusInProgress { // a cancel that just arrived keeps its cancelling status
				b.Status, b.FinalizingAt = StatusFinalizing, now
			}
		})
		r.phase = phaseFinalizing
		return s.opts.PhaseDelay, false

	case phaseFinalizing:
		if b.cancelReq.Load() {
			r.phase = phaseCancelling
			return s.opts.PhaseDelay, false
		}
		late := s.Faults().LateOutputFile
		s.finish(b, r.res, func(now int64) {
			b.Status, b.CompletedAt = StatusCompleted, now
			if late > 0 && b.OutputFileID != "" {
				b.outputHiddenUntil = s.now().Add(late)
				s.stats.LateOutputFiles++
			}
		})
		log.Debug("batch done", "status", StatusCompleted)
		return 0, true

	default: // phaseCancelling
		res := r.res
		if res == nil {
			res = &results{}
		}
		s.finish(b, res, func(now int64) { b.Status, b.CancelledAt = StatusCancelled, now })
		log.Debug("batch done", "status", StatusCancelled)
		return 0, true
	}
}

func (s *Server) setStatus(b *batch, f func(now int64)) {
	s.mu.Lock()
	f(s.now().Unix())
	s.mu.Unlock()
}

// startOutcome says how a batch leaves validating.
type startOutcome int

const (
	startRunning startOutcome = iota
	startFailed
	startCancelled
)

// startBatch applies the validation outcome and the enqueued-token limit: the batch fails, or moves to
// in_progress with its tokens enqueued.
func (s *Server) startBatch(b *batch, v validation) startOutcome {
	limits := s.Faults().TokenLimitPerModel
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().Unix()
	b.Model = v.Model
	if b.cancelReq.Load() {
		return startCancelled
	}
	if len(v.Errors) > 0 {
		b.Status, b.FailedAt, b.Errors = StatusFailed, now, v.Errors
		s.webhookLocked(b)
		return startFailed
	}
	if limit := limits[v.Model]; limit > 0 && s.enqueued[v.Model]+v.PromptTokens > limit {
		b.Status, b.FailedAt = StatusFailed, now
		b.Errors = []batchError{newBatchError(CodeTokenLimitExceeded, fmt.Sprintf(
			"Enqueued token limit reached for %s in organization org-emulator. Limit: %d enqueued tokens. Please try again once some in_progress batches have been completed.",
			v.Model, limit), "", 0)}
		s.stats.TokenLimitFailures++
		s.webhookLocked(b)
		return startFailed
	}
	s.enqueued[v.Model] += v.PromptTokens
	b.enqueuedTokens = v.PromptTokens
	if s.stats.PeakEnqueuedTokens == nil {
		s.stats.PeakEnqueuedTokens = map[string]int64{}
	}
	s.stats.PeakEnqueuedTokens[v.Model] = max(s.stats.PeakEnqueuedTokens[v.Model], s.enqueued[v.Model])
	b.Status, b.InProgressAt, b.Total = StatusInProgress, now, v.Total
	return startRunning
}

// results are the scratch buckets of a batch's output and error lines.
type results struct {
	out, errs       buckets
	outLines        int64
	errLines        int64
	stopped         bool // expired before answering everything
	inTok, outTok   int64
	completed, fail int64
	cache           *promptCache // the batch's prompt prefixes, for cached_tokens
	cachedTok       int64
}

func (r *results) cleanup() {
	if r != nil {
		r.out.remove()
		r.errs.remove()
	}
}

// bucketWriter scatters lines into bucket files by a hash of their custom_id. A bucket is opened (for append) when
// a step first writes to it, and every bucket is closed at the end of the step: a batch holds no file open between
// steps, so the descriptors in use are bounded by the scheduler's workers, not by the batches in flight.
type bucketWriter struct {
	b     *buckets
	files [outputBuckets]*os.File
	bufs  [outputBuckets]*bufio.Writer
}

// bucketBufs recycles the buckets' write buffers from one step to the next.
var bucketBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

func openBuckets(b *buckets) *bucketWriter {
	return &bucketWriter{b: b}
}

// bucket returns the writer of bucket i, opening its file on first use.
func (bw *bucketWriter) bucket(i uint64) (*bufio.Writer, error) {
	if w := bw.bufs[i]; w != nil {
		return w, nil
	}
	f, err := os.OpenFile(filepath.Clean(bw.b.paths[i]), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open output bucket: %w", err)
	}
	bw.b.used |= 1 << i
	w := bucketBufs.Get().(*bufio.Writer)
	w.Reset(f)
	bw.files[i], bw.bufs[i] = f, w
	return w, nil
}

func (bw *bucketWriter) write(bucket uint64, line []byte) error {
	return bw.emit(bucket, answered{line: line})
}

// emit writes an answered line, streaming its body when it has one to stream.
func (bw *bucketWriter) emit(bucket uint64, a answered) error {
	w, err := bw.bucket(bucket % bw.b.n)
	if err != nil {
		return err
	}
	if _, err := w.Write(a.line); err != nil {
		return fmt.Errorf("write output bucket: %w", err)
	}
	if a.body != nil {
		if err := a.body.writeJSON(w); err != nil {
			return fmt.Errorf("write output bucket: %w", err)
		}
		if _, err := w.WriteString(`},"error":null}`); err != nil {
			return fmt.Errorf("write output bucket: %w", err)
		}
	}
	if err := w.WriteByte('\n'); err != nil {
		return fmt.Errorf("write output bucket: %w", err)
	}
	return nil
}

// answered is one answered line: its JSON, or for a body too large to hold (images) the line up to its
// response.body, the body to stream after it, and then the rest of the line.
type answered struct {
	line []byte
	body streamedBody
}

// streamedBody is a response body written straight into the output file.
type streamedBody interface {
	writeJSON(w *bufio.Writer) error
}

// streamedLine is the start of an output line whose 200 response body is streamed after it: the same bytes
// json.Marshal writes for an outputLine, up to the body.
func streamedLine(id, customID, requestID string, body streamedBody) answered {
	q := func(s string) []byte { b, _ := json.Marshal(s); return b }
	line := append([]byte(`{"id":`), q(id)...)
	line = append(append(line, `,"custom_id":`...), q(customID)...)
	line = append(append(line, `,"response":{"status_code":200,"request_id":`...), q(requestID)...)
	return answered{line: append(line, `,"body":`...), body: body}
}

func (bw *bucketWriter) close() error {
	var first error
	for i, f := range bw.files {
		if f == nil {
			continue
		}
		if err := bw.bufs[i].Flush(); err != nil && first == nil {
			first = fmt.Errorf("flush output bucket: %w", err)
		}
		if err := f.Close(); err != nil && first == nil {
			first = fmt.Errorf("close output bucket: %w", err)
		}
		bw.bufs[i].Reset(nil)
		bucketBufs.Put(bw.bufs[i])
		bw.files[i], bw.bufs[i] = nil, nil
	}
	return first
}

// outputLine is the BatchRequestOutput shape of both the output and the error file.
type outputLine struct {
	ID       string        `json:"id"`
	CustomID string        `json:"custom_id"`
	Response *lineResponse `json:"response"`
	Error    *lineError    `json:"error"`
}

type lineResponse struct {
	StatusCode int    `json:"status_code"`
	RequestID  string `json:"request_id"`
	Body       any    `json:"body"`
}

type lineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// answerSlice answers the next slice of the request lines, in input order, writing them scattered into buckets;
// request_counts advance by a slice per step (a tenth of the requests; see slicing), the steps spread over a
// PhaseDelay. Once
// the batch is cancelled or expires, the requests left go to the error file at once. It reports whether the input
// file is done. The input file and the buckets are open only during the call.
func (s *Server) answerSlice(b *batch, inputPath string, r *batchRun) (finished bool, err error) {
	res, st := r.res, &r.ans
	if res == nil {
		tmp := filepath.Join(s.dataDir, "tmp")
		s.mu.Lock()
		total := b.Total
		s.mu.Unlock()
		res = &results{out: newBuckets(tmp, b.ID+".out", total), errs: newBuckets(tmp, b.ID+".err", total)}
		r.res = res
		st.expireAfter = int64(math.Ceil(s.Faults().ExpireCompletedShare * float64(total)))
		st.step, st.pause = slicing(total, s.opts.PhaseDelay)
		if s.chance(s.Faults().DiskFailRate) {
			return false, errInjectedDiskFull
		}
	}
	outW, errW := openBuckets(&res.out), openBuckets(&res.errs)
	defer func() {
		for _, w := range []*bucketWriter{outW, errW} {
			if cerr := w.close(); cerr != nil && err == nil {
				err = cerr
			}
		}
	}()

	in, err := os.Open(filepath.Clean(inputPath))
	if err != nil {
		return false, fmt.Errorf("open input file: %w", err)
	}
	defer in.Close()
	if _, err := in.Seek(st.offset, io.SeekStart); err != nil {
		return false, fmt.Errorf("seek input file: %w", err)
	}

	s.mu.Lock()
	expiresAt := b.ExpiresAt
	s.mu.Unlock()
	faults := s.Faults()
	seed := strconv.FormatInt(s.opts.Seed, 10)
	seq := strconv.FormatInt(b.seq, 10)

	br := bufio.NewReaderSize(in, 64<<10)
	var (
		buf []byte
		n   int64
	)
	for {
		buf, n, err = readLineCounted(br, buf[:0], s.opts.MaxFileBytes)
		st.offset += n
		if errors.Is(err, io.EOF) && len(buf) == 0 {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("read input file: %w", err)
		}
		if len(bytes.TrimSpace(buf)) == 0 {
			continue
		}
		// The file passed validation: a light decode is enough.
		var req requestLine
		if json.Unmarshal(buf, &req) != nil {
			continue
		}
		key := b.ID + "\x00" + req.CustomID
		bucket := hash64(seed, req.CustomID)
		if st.stopCode == "" {
			switch {
			case b.cancelReq.Load():
				st.stopCode = CodeBatchCancelled
			case b.expireReq.Load() && st.answered >= st.expireAfter:
				st.stopCode = CodeBatchExpired
			case !b.azure && st.answered%1024 == 0 && s.now().Unix() >= expiresAt: // Azure lets a late batch run on
				st.stopCode = CodeBatchExpired
			}
		}
		if st.stopCode != "" {
			msg := "This request could not be executed before the completion window expired."
			if st.stopCode == CodeBatchCancelled {
				msg = "This request was not executed because the batch was cancelled."
			}
			line, _ := json.Marshal(outputLine{ID: fakeID("batch_req_", key), CustomID: req.CustomID, Error: &lineError{Code: st.stopCode, Message: msg}})
			if err := errW.write(bucket, line); err != nil {
				return false, err
			}
			res.errLines++
			continue
		}

		line, toError := s.answerLine(b, faults, seed, seq, key, req, res)
		w := outW
		if toError {
			w = errW
			res.errLines++
		} else {
			res.outLines++
		}
		if err := w.emit(bucket, line); err != nil {
			return false, err
		}
		st.answered++
		if st.answered%st.step == 0 {
			s.publish(b, res)
			return false, nil
		}
	}
	res.stopped = st.stopCode == CodeBatchExpired
	s.publish(b, res)
	return true, nil
}

// answerLine builds one answered line: a 200 answer, or an injected failure in one of the shapes the real
// service uses. It reports whether the line belongs in the error file.
func (s *Server) answerLine(b *batch, faults Faults, seed, seq, key string, req requestLine, res *results) (answered, bool) {
	id := fakeID("batch_req_", key)
	requestID := fakeID("", "req", key)
	h := hash64(seed, seq, req.CustomID)
	if u := float64(h>>11) / (1 << 53); faults.RequestFailRate > 0 && u < faults.RequestFailRate {
		res.fail++
		s.count(func(st *Stats) { st.FailedRequests++ })
		var l outputLine
		toError := true
		switch hash64(seed, "kind", seq, req.CustomID) % 4 {
		case 0: // a server error answered in the error file
			l = outputLine{ID: id, CustomID: req.CustomID, Response: &lineResponse{StatusCode: 500, RequestID: requestID,
				Body: map[string]apiError{"error": {Message: "The server had an error while processing your request. Sorry about that!", Type: "server_error"}}}}
		case 1: // a request the model refused
			l = outputLine{ID: id, CustomID: req.CustomID, Response: &lineResponse{StatusCode: 400, RequestID: requestID,
				Body: map[string]apiError{"error": {
					Message: "This model's maximum context length is 128000 tokens. Please reduce the length of the messages.",
					Type:    "invalid_request_error", Param: nullable("messages"), Code: nullable("context_length_exceeded"),
				}}}}
		case 2: // no response at all, only an error object
			l = outputLine{ID: id, CustomID: req.CustomID, Error: &lineError{Code: CodeServerError,
				Message: "The request could not be completed because of an internal error."}}
		default: // a non-200 answer that lands in the output file
			toError = false
			l = outputLine{ID: id, CustomID: req.CustomID, Response: &lineResponse{StatusCode: 503, RequestID: requestID,
				Body: map[string]apiError{"error": {Message: "The engine is currently overloaded, please try again later.", Type: "server_error"}}}}
		}
		line, _ := json.Marshal(l)
		return answered{line: line}, toError
	}
	if endpoint := b.apiEndpoint(); isImageEndpoint(endpoint) {
		return s.answerImages(endpoint, id, requestID, key, req, res)
	}
	if res.cache == nil {
		res.cache = newPromptCache()
	}
	a := makeAnswer(b.apiEndpoint(), req.Body, s.now().Unix(), key, res.cache,
		garbling{rate: s.opts.GarbleRate, key: seed + "\x00" + seq + "\x00" + req.CustomID})
	res.completed++
	res.inTok += a.InputTokens
	res.cachedTok += a.CachedTokens
	res.outTok += a.OutputTokens
	line, _ := json.Marshal(outputLine{ID: id, CustomID: req.CustomID,
		Response: &lineResponse{StatusCode: 200, RequestID: requestID, Body: a.Body}})
	return answered{line: line}, false
}

// answerImages answers an image request: its pictures streamed into the output file, or the API's 400 answer in
// the error file for a request the API would refuse.
func (s *Server) answerImages(endpoint, id, requestID, key string, req requestLine, res *results) (answered, bool) {
	p, bad := parseImageRequest(endpoint, req.Body, s.fileExists)
	if bad != nil {
		res.fail++
		line, _ := json.Marshal(outputLine{ID: id, CustomID: req.CustomID, Response: &lineResponse{StatusCode: 400,
			RequestID: requestID, Body: map[string]apiError{"error": *bad}}})
		return answered{line: line}, true
	}
	res.completed++
	if u := p.usage(); u != nil {
		res.inTok += u.InputTokens
		res.outTok += u.OutputTokens
	}
	return streamedLine(id, req.CustomID, requestID,
		imagesAnswer{p: p, created: s.now().Unix(), key: key, seed: hash64(string(req.Body))}), false
}

func (s *Server) publish(b *batch, res *results) {
	s.mu.Lock()
	b.Completed, b.Failed = res.completed, res.fail
	b.InputTokens, b.OutputTokens = res.inTok, res.outTok
	b.CachedTokens = res.cachedTok
	s.mu.Unlock()
}

// finish turns the buckets into the output and error files, releases the enqueued tokens and applies the final
// status; final runs under s.mu.
func (s *Server) finish(b *batch, res *results, final func(now int64)) {
	defer res.cleanup()
	outID, errID, err := s.writeResultFiles(b, res)
	if err != nil {
		// A batch whose answers could not be written must not end as if it had none.
		s.failInternal(b, nil, "write the batch's result files", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enqueued[b.Model] -= b.enqueuedTokens
	b.enqueuedTokens = 0
	b.OutputFileID, b.ErrorFileID = outID, errID
	final(s.now().Unix())
	s.webhookLocked(b)
}

// failInternal ends a batch the emulator itself could not carry through (a file it could not open, write or read:
// a full disk, too many open files) as failed, with a server_error in errors.data saying what went wrong. Never
// completed: a client would take a completed batch without output files for one that answered nothing. The
// scratch buckets are removed and the batch's enqueued tokens released.
func (s *Server) failInternal(b *batch, res *results, what string, err error) {
	res.cleanup()
	s.log.Error("internal failure: the batch ends failed", "batch", b.ID, "during", what, "err", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enqueued[b.Model] -= b.enqueuedTokens
	b.enqueuedTokens = 0
	b.Status, b.FailedAt = StatusFailed, s.now().Unix()
	b.Errors = []batchError{newBatchError(CodeServerError,
		fmt.Sprintf("The batch failed because of an internal error in the emulator: it could not %s (%v).", what, err), "", 0)}
	s.stats.InternalFailures++
}

// writeResultFiles concatenates the buckets into files with purpose batch_output. An empty file is not created:
// its id stays null, as OpenAI leaves it; Azure creates both files, empty or not.
func (s *Server) writeResultFiles(b *batch, res *results) (outID, errID string, err error) {
	if res.outLines > 0 || b.azure {
		if outID, err = s.concatBuckets(b, res.out.existing(), "output"); err != nil {
			return "", "", err
		}
	}
	if res.errLines > 0 || b.azure {
		if errID, err = s.concatBuckets(b, res.errs.existing(), "error"); err != nil {
			return outID, "", err
		}
	}
	return outID, errID, nil
}

func (s *Server) concatBuckets(b *batch, paths []string, kind string) (string, error) {
	id := newID("file-")
	path := filepath.Join(s.dataDir, "files", id)
	dst, err := os.Create(filepath.Clean(path))
	if err != nil {
		return "", fmt.Errorf("create %s file: %w", kind, err)
	}
	var size int64
	for _, p := range paths {
		src, err := os.Open(filepath.Clean(p))
		if err != nil {
			_ = dst.Close()
			return "", fmt.Errorf("open %s bucket: %w", kind, err)
		}
		n, err := io.Copy(dst, src)
		_ = src.Close()
		size += n
		if err != nil {
			_ = dst.Close()
			return "", fmt.Errorf("write %s file: %w", kind, err)
		}
	}
	if err := dst.Close(); err != nil {
		return "", fmt.Errorf("close %s file: %w", kind, err)
	}
	now := s.now()
	ttl := b.outputTTL
	if ttl == 0 && !b.azure { // Azure's result files have no default expiry
		ttl = defaultBatchFileTTL
	}
	var expiresAt int64
	if ttl > 0 {
		expiresAt = now.Add(ttl).Unix()
	}
	s.addFile(&fileMeta{
		ID: id, Filename: fmt.Sprintf("%s_%s.jsonl", b.ID, kind), Purpose: "batch_output",
		Bytes: size, CreatedAt: now.Unix(), ExpiresAt: expiresAt, path: path,
	})
	return id, nil
}
