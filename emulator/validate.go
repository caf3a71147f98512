package emulator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// Validation error codes written to a failed batch's errors.data[].code.
const (
	CodeInvalidJSONLine          = "invalid_json_line"
	CodeMissingRequiredParameter = "missing_required_parameter"
	CodeInvalidType              = "invalid_type"
	CodeInvalidMethod            = "invalid_method"
	CodeInvalidURL               = "invalid_url"
	CodeDuplicateCustomID        = "duplicate_custom_id"
	CodeMismatchedModel          = "mismatched_model"
	CodeTooManyRequests          = "too_many_requests_in_file"
	CodeTooManyEmbeddingInputs   = "too_many_embedding_inputs"
	CodeFileTooLarge             = "file_too_large"
	CodeEmptyFile                = "empty_file"
	CodeTokenLimitExceeded       = "token_limit_exceeded"
)

// maxReportedErrors caps errors.data so that a file of a million bad lines does not make a huge batch object.
const maxReportedErrors = 100

// batchError is the BatchError schema.
type batchError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int64  `json:"line"`
}

func newBatchError(code, msg, param string, line int64) batchError {
	e := batchError{Code: code, Message: msg, Param: nullable(param)}
	if line > 0 {
		e.Line = &line
	}
	return e
}

// requestLine is a parsed, valid input line.
type requestLine struct {
	CustomID string          `json:"custom_id"`
	Body     json.RawMessage `json:"body"`
	Model    string          `json:"-"`
	// EmbeddingInputs counts the inputs of an /v1/embeddings request.
	EmbeddingInputs int `json:"-"`
}

// validateLine checks one input line against the rules of the real service, except those that need the whole
// file (unique custom_id, one model). urls are the spellings of the endpoint a line's url may use; none means the
// endpoint itself. It never panics on any input.
func validateLine(line []byte, endpoint string, urls ...string) (requestLine, *batchError) {
	fail := func(code, msg, param string) (requestLine, *batchError) {
		e := newBatchError(code, msg, param, 0)
		return requestLine{}, &e
	}
	var raw struct {
		CustomID json.RawMessage `json:"custom_id"`
		Method   json.RawMessage `json:"method"`
		URL      json.RawMessage `json:"url"`
		Body     json.RawMessage `json:"body"`
	}
	trimmed := bytes.TrimSpace(line)
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &raw) != nil {
		return fail(CodeInvalidJSONLine, "This line is not parseable as valid JSON.", "")
	}
	var req requestLine
	var method, url string
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *string
	}{{"custom_id", raw.CustomID, &req.CustomID}, {"method", raw.Method, &method}, {"url", raw.URL, &url}} {
		if isNull(f.raw) {
			return fail(CodeMissingRequiredParameter, fmt.Sprintf("Missing required parameter: '%s'.", f.name), f.name)
		}
		if json.Unmarshal(f.raw, f.dst) != nil {
			return fail(CodeInvalidType, fmt.Sprintf("Invalid type for '%s': expected a string.", f.name), f.name)
		}
	}
	if req.CustomID == "" {
		return fail(CodeMissingRequiredParameter, "Missing required parameter: 'custom_id'.", "custom_id")
	}
	if method != "POST" {
		return fail(CodeInvalidMethod, fmt.Sprintf("Invalid method '%s': only POST is supported.", method), "method")
	}
	if len(urls) == 0 {
		urls = []string{endpoint}
	}
	if !slices.Contains(urls, url) {
		return fail(CodeInvalidURL, fmt.Sprintf("The URL '%s' does not match the batch endpoint '%s'.", url, urls[0]), "url")
	}
	if isNull(raw.Body) {
		return fail(CodeMissingRequiredParameter, "Missing required parameter: 'body'.", "body")
	}
	var body struct {
		Model json.RawMessage `json:"model"`
		Input json.RawMessage `json:"input"`
	}
	if raw.Body[0] != '{' || json.Unmarshal(raw.Body, &body) != nil {
		return fail(CodeInvalidType, "Invalid type for 'body': expected an object.", "body")
	}
	if isNull(body.Model) {
		return fail(CodeMissingRequiredParameter, "Missing required parameter: 'body.model'.", "body.model")
	}
	if json.Unmarshal(body.Model, &req.Model) != nil || req.Model == "" {
		return fail(CodeInvalidType, "Invalid type for 'body.model': expected a non-empty string.", "body.model")
	}
	if endpoint == "/v1/embeddings" {
		req.EmbeddingInputs = countEmbeddingInputs(body.Input)
		if req.EmbeddingInputs == 0 {
			return fail(CodeMissingRequiredParameter, "Missing required parameter: 'body.input'.", "body.input")
		}
	}
	req.Body = raw.Body
	return req, nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// countEmbeddingInputs counts the inputs of an embeddings request: a string or a token array is one input, an
// array of strings or of token arrays is one per element.
func countEmbeddingInputs(raw json.RawMessage) int {
	if isNull(raw) {
		return 0
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return 1
	}
	var many []json.RawMessage
	if json.Unmarshal(raw, &many) != nil || len(many) == 0 {
		return 0
	}
	if len(many[0]) > 0 && (many[0][0] == '"' || many[0][0] == '[') {
		return len(many)
	}
	return 1 // an array of token ids
}

// validation is the outcome of reading a whole input file.
type validation struct {
	Total        int64
	Model        string
	PromptTokens int64
	Errors       []batchError
}

// inputRules are what a provider asks of a batch input file beyond what every provider asks.
type inputRules struct {
	// endpoint is the batch's endpoint in OpenAI's /v1 spelling: it decides the body checks and the token counts.
	endpoint string
	// lineURLs are the spellings a line's url may use; empty means endpoint itself.
	lineURLs    []string
	maxRequests int
}

// validateInput applies to a batch's input file the rules of the API the batch was created through.
func (s *Server) validateInput(b *batch, input fileMeta) (validation, error) {
	if b.azure {
		return s.validateAzureInput(b, input)
	}
	return s.validateFile(input.path, b.idsPath, input.Bytes,
		inputRules{endpoint: b.Endpoint, maxRequests: s.opts.MaxRequestsPerFile})
}

// validateFile reads the input file line by line (never the whole file) and applies every rule. It writes the
// custom_ids in input order to idsPath for Server.Batches.
func (s *Server) validateFile(path, idsPath string, size int64, rules inputRules) (validation, error) {
	var v validation
	report := func(e batchError) bool {
		v.Errors = append(v.Errors, e)
		return len(v.Errors) < maxReportedErrors
	}
	if size > s.opts.MaxFileBytes {
		report(newBatchError(CodeFileTooLarge, fmt.Sprintf("The input file is %d bytes; the maximum is %d bytes.", size, s.opts.MaxFileBytes), "input_file_id", 0))
		return v, nil
	}
	in, err := os.Open(filepath.Clean(path))
	if err != nil {
		return v, fmt.Errorf("open input file: %w", err)
	}
	defer in.Close()
	idsFile, err := os.Create(filepath.Clean(idsPath))
	if err != nil {
		return v, fmt.Errorf("create custom_id list: %w", err)
	}
	defer idsFile.Close()
	ids := bufio.NewWriterSize(idsFile, 64<<10)

	// Hashes, not strings, keep a million custom_ids in a few tens of MB; a 64-bit collision is negligible.
	seed := maphash.MakeSeed()
	seen := make(map[uint64]int64)
	br := bufio.NewReaderSize(in, 64<<10)
	var (
		lineNo, embeddingInputs int64
		buf                     []byte
	)
lines:
	for {
		buf, err = readLine(br, buf[:0], s.opts.MaxFileBytes)
		if errors.Is(err, io.EOF) && len(buf) == 0 {
			break lines
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return v, fmt.Errorf("read input file line %d: %w", lineNo+1, err)
		}
		lineNo++
		if len(bytes.TrimSpace(buf)) == 0 {
			continue // blank lines, such as a doubled final newline, are not requests
		}
		v.Total++
		if v.Total > int64(rules.maxRequests) {
			v.Errors = append(v.Errors, newBatchError(CodeTooManyRequests,
				fmt.Sprintf("The input file has more than the maximum of %d requests.", rules.maxRequests), "input_file_id", lineNo))
			break lines
		}
		req, lerr := validateLine(buf, rules.endpoint, rules.lineURLs...)
		if lerr != nil {
			line := lineNo // the error keeps its own line, not the loop's counter
			lerr.Line = &line
			if !report(*lerr) {
				break lines
			}
			continue
		}
		h := maphash.String(seed, req.CustomID)
		if first, dup := seen[h]; dup {
			if !report(newBatchError(CodeDuplicateCustomID,
				fmt.Sprintf("The custom_id '%s' is a duplicate of the one on line %d; custom_id must be unique in a batch.", req.CustomID, first),
				"custom_id", lineNo)) {
				break lines
			}
			continue
		}
		seen[h] = lineNo
		switch {
		case v.Model == "":
			v.Model = req.Model
		case req.Model != v.Model:
			if !report(newBatchError(CodeMismatchedModel,
				fmt.Sprintf("The model '%s' does not match the model '%s' of the other requests; a batch file may use one model only.", req.Model, v.Model),
				"body.model", lineNo)) {
				break lines
			}
			continue
		}
		embeddingInputs += int64(req.EmbeddingInputs)
		if embeddingInputs > MaxEmbeddingInputs {
			v.Errors = append(v.Errors, newBatchError(CodeTooManyEmbeddingInputs,
				fmt.Sprintf("The batch has more than the maximum of %d embedding inputs.", MaxEmbeddingInputs), "body.input", lineNo))
			break lines
		}
		v.PromptTokens += inputTokens(rules.endpoint, req.Body)
		q, _ := json.Marshal(req.CustomID)
		_, _ = ids.Write(append(q, '\n'))
	}
	if v.Total == 0 && len(v.Errors) == 0 {
		v.Errors = append(v.Errors, newBatchError(CodeEmptyFile, "The batch input file is empty.", "input_file_id", 0))
	}
	if err := ids.Flush(); err != nil {
		return v, fmt.Errorf("write custom_id list: %w", err)
	}
	return v, nil
}

var errLineTooLong = errors.New("line longer than the file size limit")

// readLine appends the next line of br (without its newline or carriage return) to buf. It returns io.EOF with
// the last line when the file does not end with a newline, and errLineTooLong past max bytes, so that a huge line
// is an error rather than an allocation of its size.
func readLine(br *bufio.Reader, buf []byte, maxLen int64) ([]byte, error) {
	buf, _, err := readLineCounted(br, buf, maxLen)
	return buf, err
}

// readLineCounted is readLine that also returns how many bytes of br it consumed, newline included, so that a
// reader can come back to the next line later.
func readLineCounted(br *bufio.Reader, buf []byte, maxLen int64) ([]byte, int64, error) {
	var n int64
	for {
		frag, err := br.ReadSlice('\n')
		n += int64(len(frag))
		if int64(len(buf)+len(frag)) > maxLen+2 {
			return buf, n, errLineTooLong
		}
		buf = append(buf, frag...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		buf = bytes.TrimRight(buf, "\r\n")
		if err != nil && !errors.Is(err, io.EOF) {
			return buf, n, fmt.Errorf("read line: %w", err)
		}
		return buf, n, err
	}
}
