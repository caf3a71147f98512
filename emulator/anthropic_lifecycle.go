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

// runMessageBatch is the lifecycle goroutine of one message batch: one PhaseDelay queued, about one PhaseDelay
// answering, one more canceling when a cancel came, then ended with its results file.
func (s *Server) runMessageBatch(b *msgBatch) {
	defer s.wg.Done()
	if !s.pauseMsg(b, s.opts.PhaseDelay) {
		return
	}
	res, err := s.answerMessageBatch(b)
	if err != nil {
		// The batch stays in_progress: a batch whose results cannot be written never ends, and the log says why.
		s.log.Error("answer message batch", "batch", b.ID, "err", err)
		res.cleanup()
		return
	}
	if res.closing || (b.cancelReq.Load() && !s.pauseMsg(b, s.opts.PhaseDelay)) {
		res.cleanup()
		return
	}
	s.endMessageBatch(b, res)
}

// pauseMsg waits d, or less when the batch is nudged; it reports false when the server is closing.
func (s *Server) pauseMsg(b *msgBatch, d time.Duration) bool {
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

// msgResults are the scratch buckets of a message batch's results lines, and their tallies.
type msgResults struct {
	dir                                   string
	paths                                 [outputBuckets]string
	succeeded, errored, canceled, expired int64
	inTok, outTok                         int64
	cache                                 *promptCache
	closing                               bool // the server closed before the batch was answered
}

func (r *msgResults) cleanup() {
	if r != nil && r.dir != "" {
		_ = os.RemoveAll(r.dir)
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

// answerMessageBatch answers the requests in input order, writing the results scattered into buckets so that they
// come out in another order, at a pace of about one PhaseDelay per batch. It stops answering on cancel or expiry:
// the requests left get canceled or expired results.
func (s *Server) answerMessageBatch(b *msgBatch) (*msgResults, error) {
	res := &msgResults{dir: filepath.Join(s.dataDir, "tmp", b.ID)}
	if err := os.MkdirAll(res.dir, 0o750); err != nil {
		return res, fmt.Errorf("create scratch dir: %w", err)
	}
	for i := range outputBuckets {
		res.paths[i] = filepath.Join(res.dir, "results."+strconv.Itoa(i))
	}
	out, err := openBuckets(&res.paths)
	if err != nil {
		return res, err
	}
	defer func() {
		if out != nil {
			_ = out.close()
		}
	}()
	in, err := os.Open(filepath.Clean(b.requestsPath))
	if err != nil {
		return res, fmt.Errorf("open requests file: %w", err)
	}
	defer in.Close()

	faults := s.Faults()
	expireAfter := int64(math.Ceil(faults.ExpireCompletedShare * float64(b.Requests)))
	step := max((b.Requests+progressSteps-1)/progressSteps, 1)
	stepPause := s.opts.PhaseDelay / progressSteps
	seed := strconv.FormatInt(s.opts.Seed, 10)
	seq := strconv.FormatInt(b.seq, 10)
	br := bufio.NewReaderSize(in, 64<<10)
	var (
		buf      []byte
		answered int64
		stop     string
	)
	for {
		buf, err = readLine(br, buf[:0], s.maxMessageBatchBytes())
		if errors.Is(err, io.EOF) && len(buf) == 0 {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return res, fmt.Errorf("read requests file: %w", err)
		}
		var req struct {
			CustomID string          `json:"custom_id"`
			Params   json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(buf, &req); err != nil {
			return res, fmt.Errorf("read requests file: %w", err)
		}
		if stop == "" {
			switch {
			case b.cancelReq.Load():
				stop = ResultCanceled
			case b.expireReq.Load() && answered >= expireAfter:
				stop = ResultExpired
			case answered%1024 == 0 && !s.now().Before(b.ExpiresAt):
				stop = ResultExpired
			}
		}
		line := msgResultLine{CustomID: req.CustomID, Result: msgResult{Type: stop}}
		switch stop {
		case ResultCanceled:
			res.canceled++
		case ResultExpired:
			res.expired++
		default:
			line.Result = s.answerMessage(b, faults, seed, seq, req.CustomID, req.Params, res)
		}
		enc, err := json.Marshal(line)
		if err != nil {
			return res, fmt.Errorf("encode result of %s: %w", req.CustomID, err)
		}
		if err := out.write(hash64(seed, req.CustomID), enc); err != nil {
			return res, err
		}
		if stop != "" {
			continue
		}
		answered++
		if answered%step == 0 && !s.pauseMsg(b, stepPause) {
			res.closing = true
			return res, nil
		}
	}
	err = out.close()
	out = nil
	return res, err
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

// endMessageBatch concatenates the buckets into the results file and ends the batch.
func (s *Server) endMessageBatch(b *msgBatch, res *msgResults) {
	defer res.cleanup()
	if err := concatFiles(res.paths[:], b.resultsPath); err != nil {
		s.log.Error("write message batch results", "batch", b.ID, "err", err)
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
