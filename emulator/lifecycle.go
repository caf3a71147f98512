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
	"time"
)

// Per-request error codes of the error file.
const (
	CodeBatchExpired   = "batch_expired"
	CodeBatchCancelled = "batch_cancelled"
	CodeServerError    = "server_error"
)

// outputBuckets is how many scratch files the output is scattered into; concatenating them yields an order that
// is not the input order without holding the file in memory.
const outputBuckets = 16

// progressSteps is how many times request_counts advance during in_progress.
const progressSteps = 10

// runBatch is the lifecycle goroutine of one batch.
func (s *Server) runBatch(b *batch, input fileMeta) {
	defer s.wg.Done()
	log := s.log.With("batch", b.ID)
	if !s.pause(b, s.opts.PhaseDelay) {
		return
	}
	if b.cancelReq.Load() {
		s.finishCancelled(b, nil)
		return
	}

	v, err := s.validateInput(b, input)
	if err != nil {
		log.Error("validate input file", "err", err)
		v.Errors = []batchError{newBatchError(CodeServerError, "The emulator could not read the input file: "+err.Error(), "input_file_id", 0)}
	}
	switch s.startBatch(b, v) {
	case startFailed:
		return
	case startCancelled:
		s.finishCancelled(b, nil)
		return
	}
	log.Debug("batch in_progress", "requests", v.Total)

	out, err := s.process(b, input.path)
	if err != nil {
		log.Error("process batch", "err", err)
	}
	if !out.stopped && !b.cancelReq.Load() {
		s.setStatus(b, func(now int64) {
			if b.Status == StatusInProgress { // a cancel that just arrived keeps its cancelling status
				b.Status, b.FinalizingAt = StatusFinalizing, now
			}
		})
		if !s.pause(b, s.opts.PhaseDelay) {
			out.cleanup()
			return
		}
	}
	switch {
	case b.cancelReq.Load():
		s.finishCancelled(b, out)
	case out.stopped:
		s.finish(b, out, func(now int64) {
			b.Status, b.ExpiredAt = StatusExpired, now
			s.stats.ExpiredBatches++
		})
	default:
		late := s.Faults().LateOutputFile
		s.finish(b, out, func(now int64) {
			b.Status, b.CompletedAt = StatusCompleted, now
			if late > 0 && b.OutputFileID != "" {
				b.outputHiddenUntil = s.now().Add(late)
				s.stats.LateOutputFiles++
			}
		})
	}
	log.Debug("batch done", "status", b.statusLocked(s))
}

func (b *batch) statusLocked(s *Server) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return b.Status
}

// pause waits d, or less when the batch is nudged; it reports false when the server is closing.
func (s *Server) pause(b *batch, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.ctx.Done():
		return false
	case <-t.C:
	case <-b.wake:
	}
	return true
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
	dir             string
	outPaths        [outputBuckets]string
	errPaths        [outputBuckets]string
	outLines        int64
	errLines        int64
	stopped         bool // expired before answering everything
	inTok, outTok   int64
	completed, fail int64
	cache           *promptCache // the batch's prompt prefixes, for cached_tokens
	cachedTok       int64
}

func (r *results) cleanup() {
	if r != nil && r.dir != "" {
		_ = os.RemoveAll(r.dir)
	}
}

// bucketWriter scatters lines into bucket files by a hash of their custom_id.
type bucketWriter struct {
	files [outputBuckets]*os.File
	bufs  [outputBuckets]*bufio.Writer
}

func openBuckets(paths *[outputBuckets]string) (*bucketWriter, error) {
	bw := &bucketWriter{}
	for i, p := range paths {
		f, err := os.Create(filepath.Clean(p))
		if err != nil {
			bw.close()
			return nil, fmt.Errorf("create output bucket: %w", err)
		}
		bw.files[i], bw.bufs[i] = f, bufio.NewWriterSize(f, 32<<10)
	}
	return bw, nil
}

func (bw *bucketWriter) write(bucket uint64, line []byte) error {
	return bw.emit(bucket, answered{line: line})
}

// emit writes an answered line, streaming its body when it has one to stream.
func (bw *bucketWriter) emit(bucket uint64, a answered) error {
	w := bw.bufs[bucket%outputBuckets]
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

// process answers the request lines in input order, writing them scattered into buckets, while request_counts
// advance in progressSteps steps over about one PhaseDelay. It stops early on cancel or expiry.
func (s *Server) process(b *batch, inputPath string) (*results, error) {
	res := &results{dir: filepath.Join(s.dataDir, "tmp", b.ID)}
	if err := os.MkdirAll(res.dir, 0o750); err != nil {
		return res, fmt.Errorf("create scratch dir: %w", err)
	}
	for i := range outputBuckets {
		res.outPaths[i] = filepath.Join(res.dir, "out."+strconv.Itoa(i))
		res.errPaths[i] = filepath.Join(res.dir, "err."+strconv.Itoa(i))
	}
	outW, err := openBuckets(&res.outPaths)
	if err != nil {
		return res, err
	}
	errW, err := openBuckets(&res.errPaths)
	if err != nil {
		_ = outW.close()
		return res, err
	}
	defer func() { _ = outW.close(); _ = errW.close() }()

	in, err := os.Open(filepath.Clean(inputPath))
	if err != nil {
		return res, fmt.Errorf("open input file: %w", err)
	}
	defer in.Close()

	s.mu.Lock()
	total, expiresAt := b.Total, b.ExpiresAt
	s.mu.Unlock()
	faults := s.Faults()
	expireAfter := int64(math.Ceil(faults.ExpireCompletedShare * float64(total)))
	step := max((total+progressSteps-1)/progressSteps, 1)
	stepPause := s.opts.PhaseDelay / progressSteps
	seed := strconv.FormatInt(s.opts.Seed, 10)
	seq := strconv.FormatInt(b.seq, 10)

	br := bufio.NewReaderSize(in, 64<<10)
	var (
		buf      []byte
		answered int64
		stopCode string
	)
	for {
		buf, err = readLine(br, buf[:0], s.opts.MaxFileBytes)
		if errors.Is(err, io.EOF) && len(buf) == 0 {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return res, fmt.Errorf("read input file: %w", err)
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
		if stopCode == "" {
			switch {
			case b.cancelReq.Load():
				stopCode = CodeBatchCancelled
			case b.expireReq.Load() && answered >= expireAfter:
				stopCode = CodeBatchExpired
			case !b.azure && answered%1024 == 0 && s.now().Unix() >= expiresAt: // Azure lets a late batch run on
				stopCode = CodeBatchExpired
			}
		}
		if stopCode != "" {
			msg := "This request could not be executed before the completion window expired."
			if stopCode == CodeBatchCancelled {
				msg = "This request was not executed because the batch was cancelled."
			}
			line, _ := json.Marshal(outputLine{ID: fakeID("batch_req_", key), CustomID: req.CustomID, Error: &lineError{Code: stopCode, Message: msg}})
			if err := errW.write(bucket, line); err != nil {
				return res, err
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
			return res, err
		}
		answered++
		if answered%step == 0 {
			s.publish(b, res)
			if !s.pause(b, stepPause) {
				return res, nil
			}
		}
	}
	res.stopped = stopCode == CodeBatchExpired
	s.publish(b, res)
	return res, nil
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
	a := makeAnswer(b.apiEndpoint(), req.Body, s.now().Unix(), key, res.cache)
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
		s.log.Error("write batch result files", "batch", b.ID, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enqueued[b.Model] -= b.enqueuedTokens
	b.enqueuedTokens = 0
	b.OutputFileID, b.ErrorFileID = outID, errID
	final(s.now().Unix())
	s.webhookLocked(b)
}

// finishCancelled spends one PhaseDelay cancelling, then delivers what was answered.
func (s *Server) finishCancelled(b *batch, res *results) {
	if !s.pause(b, s.opts.PhaseDelay) {
		res.cleanup()
		return
	}
	if res == nil {
		res = &results{}
	}
	s.finish(b, res, func(now int64) { b.Status, b.CancelledAt = StatusCancelled, now })
}

// writeResultFiles concatenates the buckets into files with purpose batch_output. An empty file is not created:
// its id stays null, as OpenAI leaves it; Azure creates both files, empty or not.
func (s *Server) writeResultFiles(b *batch, res *results) (outID, errID string, err error) {
	if res.outLines > 0 || b.azure {
		if outID, err = s.concatBuckets(b, res.outPaths[:], "output"); err != nil {
			return "", "", err
		}
	}
	if res.errLines > 0 || b.azure {
		if errID, err = s.concatBuckets(b, res.errPaths[:], "error"); err != nil {
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
		if p == "" {
			continue // a batch cancelled before it ran has no buckets
		}
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
