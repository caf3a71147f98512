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
	"strings"
	"time"
)

// msgRun is the lifecycle of one message batch, stepped by the scheduler: one PhaseDelay queued, about one
// PhaseDelay answering (a slice of the requests per step; see slicing), one more canceling when a cancel came, then ended with its
// results file. It keeps no file open between steps.
type msgRun struct {
	s        *Server
	b        *msgBatch
	res      *msgResults // nil until answering starts
	offset   int64       // bytes of the requests file read so far
	answered int64
	slice    int64         // requests answered per step
	pause    time.Duration // between steps
	stop     string        // canceled or expired once answering stopped
	canceled bool          // answering is done and the batch waits its PhaseDelay canceling
}

func (r *msgRun) step() (time.Duration, bool) {
	s, b := r.s, r.b
	if r.canceled {
		s.endMessageBatch(b, r.res)
		return 0, true
	}
	finished, err := s.answerMessageSlice(r)
	if err != nil {
		// The batch stays in_progress: there is no failed status for a message batch, and ended without its
		// results would read as a batch with nothing to deliver. The log says why.
		s.log.Error("answer message batch; it stays in_progress", "batch", b.ID, "err", err)
		r.res.cleanup()
		return 0, true
	}
	switch {
	case !finished:
		return r.pause, false
	case b.cancelReq.Load():
		r.canceled = true
		return s.opts.PhaseDelay, false
	}
	s.endMessageBatch(b, r.res)
	return 0, true
}

// msgResults are the scratch buckets of a message batch's results lines, and their tallies.
type msgResults struct {
	buckets                               buckets
	succeeded, errored, canceled, expired int64
	inTok, outTok                         int64
	cache                                 *promptCache
}

func (r *msgResults) cleanup() {
	if r != nil {
		r.buckets.remove()
	}
}

// msgResultLine is one line of a message batch's results.
type msgResultLine struct {
	CustomID string    `json:"custom_id"`
	Result   msgResult `json:"result"`
}

type msgResult struct {
	Type    string            `json:"type"`
	Message *anthropicMessage `json:"message,omitempty"`
	Error   *anthropicError   `json:"error,omitempty"`
}

// anthropicMessage is the Message schema of a succeeded result.
type anthropicMessage struct {
	ID           string               `json:"id"`
	Type         string               `json:"type"`
	Role         string               `json:"role"`
	Model        string               `json:"model"`
	Content      []anthropicTextBlock `json:"content"`
	StopReason   string               `json:"stop_reason"`
	StopSequence *string              `json:"stop_sequence"`
	Usage        anthropicUsage       `json:"usage"`
}

type anthropicTextBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// anthropicUsage counts input tokens apart from the cached ones: input_tokens + cache_creation_input_tokens +
// cache_read_input_tokens is the whole prompt.
type anthropicUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreation            struct {
		Ephemeral5mInputTokens int64 `json:"ephemeral_5m_input_tokens"`
		Ephemeral1hInputTokens int64 `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
	OutputTokens int64  `json:"output_tokens"`
	ServiceTier  string `json:"service_tier"`
}

// answerMessageSlice answers the next slice of the requests, in input order, writing the results scattered into
// buckets so that they come out in another order; a slice of the requests per step (see slicing). Once the batch is cancelled or
// expires, the requests left get canceled or expired results at once. It reports whether the requests are done.
func (s *Server) answerMessageSlice(r *msgRun) (finished bool, err error) {
	b := r.b
	if r.res == nil {
		r.res = &msgResults{buckets: newBuckets(filepath.Join(s.dataDir, "tmp"), b.ID+".results", b.Requests)}
		r.slice, r.pause = slicing(b.Requests, s.opts.PhaseDelay)
	}
	res := r.res
	out := openBuckets(&res.buckets)
	defer func() {
		if cerr := out.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	in, err := os.Open(filepath.Clean(b.requestsPath))
	if err != nil {
		return false, fmt.Errorf("open requests file: %w", err)
	}
	defer in.Close()
	if _, err := in.Seek(r.offset, io.SeekStart); err != nil {
		return false, fmt.Errorf("seek requests file: %w", err)
	}

	faults := s.Faults()
	expireAfter := int64(math.Ceil(faults.ExpireCompletedShare * float64(b.Requests)))
	seed := strconv.FormatInt(s.opts.Seed, 10)
	seq := strconv.FormatInt(b.seq, 10)
	br := bufio.NewReaderSize(in, 64<<10)
	var (
		buf []byte
		n   int64
	)
	for {
		buf, n, err = readLineCounted(br, buf[:0], s.maxMessageBatchBytes())
		r.offset += n
		if errors.Is(err, io.EOF) && len(buf) == 0 {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("read requests file: %w", err)
		}
		var req struct {
			CustomID string          `json:"custom_id"`
			Params   json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(buf, &req); err != nil {
			return false, fmt.Errorf("read requests file: %w", err)
		}
		if r.stop == "" {
			switch {
			case b.cancelReq.Load():
				r.stop = ResultCanceled
			case b.expireReq.Load() && r.answered >= expireAfter:
				r.stop = ResultExpired
			case r.answered%1024 == 0 && !s.now().Before(b.ExpiresAt):
				r.stop = ResultExpired
			}
		}
		line := msgResultLine{CustomID: req.CustomID, Result: msgResult{Type: r.stop}}
		switch r.stop {
		case ResultCanceled:
			res.canceled++
		case ResultExpired:
			res.expired++
		default:
			line.Result = s.answerMessage(b, faults, seed, seq, req.CustomID, req.Params, res)
		}
		enc, err := json.Marshal(line)
		if err != nil {
			return false, fmt.Errorf("encode result of %s: %w", req.CustomID, err)
		}
		if err := out.write(hash64(seed, req.CustomID), enc); err != nil {
			return false, err
		}
		if r.stop != "" {
			continue
		}
		r.answered++
		if r.answered%r.slice == 0 {
			return false, nil
		}
	}
	return true, nil
}

// answerMessage is the result of one request: errored for a share RequestFailRate of them (picked by a hash of
// the seed, the batch and the custom_id), succeeded otherwise.
func (s *Server) answerMessage(b *msgBatch, faults Faults, seed, seq, customID string, params json.RawMessage, res *msgResults) msgResult {
	key := b.ID + "\x00" + customID
	h := hash64(seed, "anthropic", seq, customID)
	if u := float64(h>>11) / (1 << 53); faults.RequestFailRate > 0 && u < faults.RequestFailRate {
		res.errored++
		s.count(func(st *Stats) { st.Anthropic.ErroredRequests++ })
		e := anthropicError{Type: "error", RequestID: fakeID("req_", "req", key)}
		if hash64(seed, "kind", seq, customID)%2 == 0 {
			e.Error = anthropicErrorDetail{Type: anthropicInvalidRequest, Message: "prompt is too long: 215343 tokens > 200000 maximum"}
		} else {
			e.Error = anthropicErrorDetail{Type: anthropicAPIError, Message: "Internal server error"}
		}
		return msgResult{Type: ResultErrored, Error: &e}
	}
	if res.cache == nil {
		res.cache = newPromptCache()
	}
	m := makeMessage(params, key, res.cache)
	res.succeeded++
	res.inTok += m.Usage.InputTokens + m.Usage.CacheCreationInputTokens + m.Usage.CacheReadInputTokens
	res.outTok += m.Usage.OutputTokens
	return msgResult{Type: ResultSucceeded, Message: &m}
}

// messageParams are the fields of a Messages API request the fake answer reads.
type messageParams struct {
	Model     string          `json:"model"`
	MaxTokens int64           `json:"max_tokens"`
	System    json.RawMessage `json:"system"`
	Messages  []chatMessage   `json:"messages"`
}

// messagePrompt returns the text the whole request sends (system and messages, for token counts) and the text
// the fake answer echoes (the last user message).
func messagePrompt(p messageParams) (all, answered string) {
	var b strings.Builder
	collectText(p.System, &b)
	for _, m := range p.Messages {
		start := b.Len()
		collectText(m.Content, &b)
		if m.Role == "user" {
			answered = strings.TrimPrefix(b.String()[start:], "\n")
		}
	}
	return b.String(), answered
}

// makeMessage builds the deterministic Message answering one request's params; key makes its id unique per batch
// and request. A request that marks a cache_control breakpoint writes its prompt prefix to the batch's cache, and
// a later one sharing the prefix reads it, in the steps of [PromptCacheStep] tokens from [PromptCacheMinTokens].
func makeMessage(raw json.RawMessage, key string, cache *promptCache) anthropicMessage {
	var p messageParams
	_ = json.Unmarshal(raw, &p)
	all, answered := messagePrompt(p)
	in := max(EstimateTokens(all), 1)
	text, out, cut := limitText(AnswerText(answered), p.MaxTokens)
	m := anthropicMessage{
		ID: fakeID("msg_", key), Type: "message", Role: "assistant", Model: p.Model,
		Content: []anthropicTextBlock{{Type: "text", Text: text}}, StopReason: "end_turn",
	}
	if cut {
		m.StopReason = "max_tokens"
	}
	if bytes.Contains(raw, []byte(`"cache_control"`)) {
		read := cache.cachedTokens(all)
		var written int64
		if read == 0 && len(all) >= 4*PromptCacheMinTokens {
			// The longest prefix the cache now remembers: whole steps of the prompt.
			written = int64(len(all) / (4 * PromptCacheStep) * PromptCacheStep)
		}
		m.Usage.CacheReadInputTokens, m.Usage.CacheCreationInputTokens = read, written
		m.Usage.CacheCreation.Ephemeral5mInputTokens = written
	}
	m.Usage.InputTokens = in - m.Usage.CacheReadInputTokens - m.Usage.CacheCreationInputTokens
	m.Usage.OutputTokens = out
	m.Usage.ServiceTier = "batch"
	return m
}

// endMessageBatch concatenates the buckets into the results file and ends the batch. A batch whose results file
// cannot be written stays in_progress (the log says why) rather than ending without its results.
func (s *Server) endMessageBatch(b *msgBatch, res *msgResults) {
	defer res.cleanup()
	if err := concatFiles(res.buckets.existing(), b.resultsPath); err != nil {
		s.log.Error("write message batch results; the batch stays in_progress", "batch", b.ID, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b.Status, b.EndedAt = ProcessingEnded, s.now()
	b.Succeeded, b.Errored, b.Canceled, b.Expired = res.succeeded, res.errored, res.canceled, res.expired
	b.InputTokens, b.OutputTokens = res.inTok, res.outTok
	if res.expired > 0 {
		s.stats.Anthropic.ExpiredBatches++
	}
	s.log.Debug("message batch ended", "batch", b.ID, "succeeded", res.succeeded, "errored", res.errored,
		"canceled", res.canceled, "expired", res.expired)
}

// concatFiles writes the files at paths, one after the other, to dst.
func concatFiles(paths []string, dst string) error {
	f, err := os.Create(filepath.Clean(dst))
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	for _, p := range paths {
		src, err := os.Open(filepath.Clean(p))
		if err != nil {
			_ = f.Close()
			return fmt.Errorf("open bucket: %w", err)
		}
		_, err = io.Copy(f, src)
		_ = src.Close()
		if err != nil {
			_ = f.Close()
			return fmt.Errorf("write %s: %w", dst, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", dst, err)
	}
	return nil
}
