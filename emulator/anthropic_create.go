package emulator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// customIDPattern is the rule the real service applies to a message batch request's custom_id.
var customIDPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// badMessageBatch is a creation the real service refuses with 400 invalid_request_error; its message names the
// offending field as the service does ("requests.3.custom_id: ...").
type badMessageBatch struct{ msg string }

func (e *badMessageBatch) Error() string { return e.msg }

func badf(format string, args ...any) error {
	return &badMessageBatch{msg: fmt.Sprintf(format, args...)}
}

func (s *Server) maxMessageBatchRequests() int {
	if s.opts.MaxMessageBatchRequests > 0 {
		return s.opts.MaxMessageBatchRequests
	}
	return DefaultMaxMessageBatchRequests
}

func (s *Server) maxMessageBatchBytes() int64 {
	if s.opts.MaxMessageBatchBytes > 0 {
		return s.opts.MaxMessageBatchBytes
	}
	return DefaultMaxMessageBatchBytes
}

// handleMsgBatchCreate streams the body to disk one request at a time, checking each; any bad request refuses the
// whole batch and nothing is created.
func (s *Server) handleMsgBatchCreate(w http.ResponseWriter, r *http.Request) {
	limit := s.maxMessageBatchBytes()
	tooLarge := func() {
		s.count(func(st *Stats) { st.Anthropic.RefusedCreates++ })
		writeAnthropicError(w, http.StatusRequestEntityTooLarge, anthropicRequestTooLarge,
			fmt.Sprintf("Request exceeds the maximum size of %d bytes for the Message Batches API.", limit))
	}
	if r.ContentLength > limit {
		tooLarge()
		return
	}
	body := http.MaxBytesReader(w, r.Body, limit)

	id := newID("msgbatch_")
	tmpPath := filepath.Join(s.dataDir, "tmp", id+".requests")
	defer os.Remove(tmpPath) //nolint:errcheck // gone after the rename on success
	n, err := s.spoolToFile(body, tmpPath)
	var (
		bad *badMessageBatch
		mbe *http.MaxBytesError
	)
	if errors.As(err, &bad) {
		// The real limit is checked before the body is read: a body too large is 413 whatever it holds.
		if _, derr := io.Copy(io.Discard, body); errors.As(derr, &mbe) {
			tooLarge()
			return
		}
		s.count(func(st *Stats) { st.Anthropic.RefusedCreates++ })
		writeAnthropicError(w, http.StatusBadRequest, anthropicInvalidRequest, bad.msg)
		return
	}
	if errors.As(err, &mbe) {
		tooLarge()
		return
	}
	if err != nil {
		s.log.Error("store message batch requests", "err", err)
		writeAnthropicError(w, http.StatusInternalServerError, anthropicAPIError, "Internal server error")
		return
	}

	now := s.now()
	b := &msgBatch{
		ID: id, Status: ProcessingInProgress, Requests: n, CreatedAt: now, ExpiresAt: now.Add(MessageBatchLifetime),
		requestsPath: filepath.Join(s.dataDir, "batches", id+".requests.jsonl"),
		resultsPath:  filepath.Join(s.dataDir, "batches", id+".results.jsonl"),
	}
	if err := os.Rename(tmpPath, b.requestsPath); err != nil {
		s.log.Error("store message batch requests", "batch", id, "err", err)
		writeAnthropicError(w, http.StatusInternalServerError, anthropicAPIError, "Internal server error")
		return
	}
	if s.chance(s.Faults().ExpireRate) {
		b.expireReq.Store(true)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = os.Remove(b.requestsPath)
		writeAnthropicError(w, statusAnthropicOverloaded, anthropicOverloaded, "The emulator is shutting down.")
		return
	}
	st := &s.anthropic
	if st.batches == nil {
		st.batches = make(map[string]*msgBatch)
	}
	b.seq = st.created
	st.created++
	st.batches[id] = b
	st.seq = append(st.seq, b)
	s.stats.Anthropic.BatchesCreated++
	obj := b.object(baseURL(r))
	b.timer = s.sched.add(&msgRun{s: s, b: b}, s.opts.PhaseDelay)
	s.mu.Unlock()
	s.log.Debug("message batch created", "batch", id, "requests", n)
	writeJSON(w, http.StatusOK, obj)
}

// spoolToFile writes the checked requests to path, one line each.
func (s *Server) spoolToFile(body io.Reader, path string) (int64, error) {
	f, err := os.Create(filepath.Clean(path))
	if err != nil {
		return 0, fmt.Errorf("create requests file: %w", err)
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	n, err := spoolMessageRequests(body, bw, s.maxMessageBatchRequests())
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close requests file: %w", cerr)
	}
	return n, err
}

// spoolMessageRequests reads a creation body {"requests":[{"custom_id","params"}, ...]} from r one request at a
// time, so memory holds one request, never the body. Each request is checked as the real service checks it, then
// written to w as one compact line {"custom_id":...,"params":...}. A refusal is a *badMessageBatch; other errors
// come from reading r (an *http.MaxBytesError past the size limit) or writing w.
func spoolMessageRequests(r io.Reader, w io.Writer, maxRequests int) (int64, error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{', "Input should be a valid dictionary"); err != nil {
		return 0, err
	}
	var (
		n     int64
		found bool
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return n, jsonErr(err)
		}
		key, _ := tok.(string)
		if key != "requests" {
			return n, badf("%s: Extra inputs are not permitted", key)
		}
		if found {
			return n, badf("requests: duplicate key")
		}
		found = true
		if n, err = spoolRequests(dec, w, maxRequests); err != nil {
			return n, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return n, jsonErr(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err == nil {
			return n, badf("There was an issue with the format of your request: unexpected data after the JSON body")
		}
		return n, jsonErr(err)
	}
	if !found {
		return n, badf("requests: Field required")
	}
	return n, nil
}

// spoolRequests reads the requests array.
func spoolRequests(dec *json.Decoder, w io.Writer, maxRequests int) (int64, error) {
	if err := expectDelim(dec, '[', "requests: Input should be a valid list"); err != nil {
		return 0, err
	}
	// Hashes, not strings, keep 100 000 custom_ids small; a 64-bit collision is negligible.
	seed := maphash.MakeSeed()
	seen := make(map[uint64]int64)
	var (
		n    int64
		raw  json.RawMessage
		line bytes.Buffer
	)
	for dec.More() {
		if n >= int64(maxRequests) {
			return n, badf("requests: List should have at most %d items after validation, not more", maxRequests)
		}
		raw = raw[:0]
		if err := dec.Decode(&raw); err != nil {
			return n, jsonErr(err)
		}
		id, params, err := checkMessageRequest(n, raw)
		if err != nil {
			return n, err
		}
		h := maphash.String(seed, id)
		if first, dup := seen[h]; dup {
			return n, badf("requests.%d.custom_id: custom_id '%s' is already used by requests.%d; custom_id must be unique within a batch", n, id, first)
		}
		seen[h] = n
		line.Reset()
		line.WriteString(`{"custom_id":`)
		line.WriteString(strconv.Quote(id)) // the pattern admits only ASCII letters, digits, _ and -
		line.WriteString(`,"params":`)
		if strings.IndexByte(params.Raw, '\n') < 0 {
			line.WriteString(params.Raw) // already one line: spaces do no harm
		} else if err := json.Compact(&line, []byte(params.Raw)); err != nil {
			return n, badf("requests.%d.params: Input should be a valid dictionary", n)
		}
		line.WriteString("}\n")
		if _, err := w.Write(line.Bytes()); err != nil {
			return n, fmt.Errorf("write requests file: %w", err)
		}
		n++
	}
	if _, err := dec.Token(); err != nil { // the closing bracket
		return n, jsonErr(err)
	}
	if n == 0 {
		return 0, badf("requests: List should have at least 1 item after validation, not 0")
	}
	return n, nil
}

// checkMessageRequest applies the rules of one request (valid JSON, as the decoder read it): custom_id, and the
// params the Messages API requires. It walks the keys once with gjson rather than decoding the request, which
// may carry long prompts.
func checkMessageRequest(i int64, raw []byte) (string, gjson.Result, error) {
	req := gjson.ParseBytes(raw)
	if !req.IsObject() {
		return "", gjson.Result{}, badf("requests.%d: Input should be a valid dictionary", i)
	}
	var id, params gjson.Result
	var extra string
	req.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "custom_id":
			id = v
		case "params":
			params = v
		default:
			extra = k.Str
			return false
		}
		return true
	})
	switch {
	case extra != "":
		return "", params, badf("requests.%d.%s: Extra inputs are not permitted", i, extra)
	case !id.Exists() || id.Type == gjson.Null:
		return "", params, badf("requests.%d.custom_id: Field required", i)
	case id.Type != gjson.String:
		return "", params, badf("requests.%d.custom_id: Input should be a valid string", i)
	case !customIDPattern.MatchString(id.Str):
		return "", params, badf("requests.%d.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'", i)
	case !params.Exists() || params.Type == gjson.Null:
		return "", params, badf("requests.%d.params: Field required", i)
	case !params.IsObject():
		return "", params, badf("requests.%d.params: Input should be a valid dictionary", i)
	}
	var model, maxTokens, messages gjson.Result
	params.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			model = v
		case "max_tokens":
			maxTokens = v
		case "messages":
			messages = v
		}
		return true
	})
	field := func(name, msg string) error { return badf("requests.%d.params.%s: %s", i, name, msg) }
	switch {
	case !model.Exists() || model.Type == gjson.Null:
		return "", params, field("model", "Field required")
	case model.Type != gjson.String || model.Str == "":
		return "", params, field("model", "Input should be a valid non-empty string")
	case !maxTokens.Exists() || maxTokens.Type == gjson.Null:
		return "", params, field("max_tokens", "Field required")
	}
	n, err := strconv.ParseInt(maxTokens.Raw, 10, 64)
	switch {
	case err != nil:
		return "", params, field("max_tokens", "Input should be a valid integer")
	case n < 1:
		return "", params, field("max_tokens", "Input should be greater than or equal to 1")
	case !messages.Exists() || messages.Type == gjson.Null:
		return "", params, field("messages", "Field required")
	case !messages.IsArray():
		return "", params, field("messages", "Input should be a valid list of messages")
	}
	var (
		j      int
		msgErr error
	)
	messages.ForEach(func(_, m gjson.Result) bool {
		role, content := m.Get("role"), m.Get("content")
		switch {
		case !m.IsObject():
			msgErr = field(fmt.Sprintf("messages.%d", j), "Input should be a valid dictionary")
		case !role.Exists():
			msgErr = field(fmt.Sprintf("messages.%d.role", j), "Field required")
		case role.Type != gjson.String || (role.Str != "user" && role.Str != "assistant"):
			msgErr = field(fmt.Sprintf("messages.%d.role", j), "Input should be 'user' or 'assistant'")
		case !content.Exists() || content.Type == gjson.Null:
			msgErr = field(fmt.Sprintf("messages.%d.content", j), "Field required")
		}
		j++
		return msgErr == nil
	})
	switch {
	case msgErr != nil:
		return "", params, msgErr
	case j == 0:
		return "", params, field("messages", "at least one message is required")
	}
	return id.Str, params, nil
}

// expectDelim reads the next token and refuses the body with msg unless it is the delimiter want.
func expectDelim(dec *json.Decoder, want json.Delim, msg string) error {
	tok, err := dec.Token()
	if err != nil {
		return jsonErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return badf("%s", msg)
	}
	return nil
}

// jsonErr turns a decoding error into a refusal, but passes read errors (the body was cut, or passed the size
// limit) through unchanged.
func jsonErr(err error) error {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syntax), errors.As(err, &typ), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return badf("There was an issue with the format of your request: invalid JSON (%v)", err)
	}
	return fmt.Errorf("read message batch body: %w", err)
}
