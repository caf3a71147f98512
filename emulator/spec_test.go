package emulator_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/specschema"
)

// specFixture is the committed extract of the OpenAPI document's schemas (go generate ./emulator).
const specFixture = "testdata/spec_schemas.json"

// outputLineSchema is a line of a batch's output or error file, as the Batch API reference describes it ("The
// request output object"); the OpenAPI document has no schema for it. The body is checked apart, against the
// endpoint's response schema or the error object.
const outputLineSchema = `{
  "type": "object",
  "required": ["id", "custom_id", "response", "error"],
  "additionalProperties": false,
  "properties": {
    "id": {"type": "string"},
    "custom_id": {"type": "string"},
    "response": {"anyOf": [{"type": "null"}, {
      "type": "object",
      "required": ["status_code", "request_id", "body"],
      "additionalProperties": false,
      "properties": {"status_code": {"type": "integer"}, "request_id": {"type": "string"}, "body": {"type": "object"}}
    }]},
    "error": {"anyOf": [{"type": "null"}, {
      "type": "object",
      "required": ["code", "message"],
      "additionalProperties": false,
      "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
    }]}
  }
}`

// endpointSchemas names the response body schema of each batch endpoint.
var endpointSchemas = map[string]string{
	"/v1/chat/completions": "CreateChatCompletionResponse", "/v1/completions": "CreateCompletionResponse",
	"/v1/responses": "Response", "/v1/embeddings": "CreateEmbeddingResponse", "/v1/moderations": "CreateModerationResponse",
	"/v1/images/generations": "ImagesResponse", "/v1/images/edits": "ImagesResponse",
}

// specSchemas are the compiled schemas of the fixture, by component name, and the output line's.
type specSchemas map[string]*jsonschema.Schema

func loadSpecSchemas(t *testing.T) specSchemas {
	t.Helper()
	f, err := os.Open(specFixture)
	require.NoError(t, err)
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	require.NoError(t, err)
	line, err := jsonschema.UnmarshalJSON(strings.NewReader(outputLineSchema))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	require.NoError(t, c.AddResource("file:///spec_schemas.json", doc))
	require.NoError(t, c.AddResource("file:///output_line.json", line))
	out := specSchemas{}
	for _, name := range specschema.Roots {
		out[name], err = c.Compile("file:///spec_schemas.json#/$defs/" + name)
		require.NoError(t, err, name)
	}
	out["output line"], err = c.Compile("file:///output_line.json")
	require.NoError(t, err)
	return out
}

// check validates a JSON document against a schema and reports every violation, naming the sample.
func (s specSchemas) check(t *testing.T, sample, schema string, raw []byte) {
	t.Helper()
	sch, ok := s[schema]
	require.True(t, ok, "no schema %s", schema)
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	require.NoError(t, err, "%s: %.300s", sample, raw)
	if err := sch.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			t.Errorf("%s is not a %s:\n%s\n%.600s", sample, schema, leafErrors(ve.BasicOutput()), raw)
			return
		}
		t.Errorf("%s: %v", sample, err)
	}
}

// leafErrors lists a validation's failures, one a line, at the instance location where they are.
func leafErrors(out *jsonschema.OutputUnit) string {
	var b strings.Builder
	for _, e := range out.Errors {
		if e.Error != nil && len(e.Errors) == 0 {
			fmt.Fprintf(&b, "  at %q: %s (%s)\n", e.InstanceLocation, e.Error, e.KeywordLocation)
		}
	}
	if b.Len() == 0 && out.Error != nil {
		fmt.Fprintf(&b, "  %s\n", out.Error)
	}
	return b.String()
}

// TestSpecFixtureIsCurrent extracts the schemas again from the OpenAPI document, when it is at hand, and requires
// the committed fixture to be what the extraction writes.
func TestSpecFixtureIsCurrent(t *testing.T) {
	t.Parallel()
	path := os.Getenv(specschema.EnvSpec)
	if path == "" {
		path = filepath.Join("..", specschema.DefaultSpecPath)
	}
	doc, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("the OpenAPI document is not at %s (set %s to its path): the emulator's objects are checked against the committed %s only",
			path, specschema.EnvSpec, specFixture)
	}
	require.NoError(t, err)
	f, err := specschema.Extract(doc, specschema.Roots, specschema.LiveNulls)
	require.NoError(t, err)
	want, err := f.Marshal()
	require.NoError(t, err)
	got, err := os.ReadFile(specFixture)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "%s is not what %s %s gives: run go generate ./emulator", specFixture, f.SpecTitle, f.SpecVersion)
}

// rawGet calls the emulator over HTTP and returns the status and the body as sent.
func (e *env) raw(t *testing.T, method, path, key string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.http.URL+"/v1"+path, body)
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// batchInStatus reads a batch until it is in status and returns it as sent.
func (e *env) batchInStatus(t *testing.T, id string, status openai.BatchStatus) []byte {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		code, b := e.raw(t, http.MethodGet, "/batches/"+id, "test", nil)
		require.Equal(t, http.StatusOK, code, string(b))
		var st struct{ Status openai.BatchStatus }
		require.NoError(t, json.Unmarshal(b, &st))
		if st.Status == status {
			return b
		}
		require.True(t, time.Now().Before(deadline), "batch %s stuck in %s, waiting for %s", id, st.Status, status)
		time.Sleep(time.Millisecond)
	}
}

// TestObjectsMatchTheSpec holds every object the emulator sends to the schemas of the OpenAPI document (through
// the committed fixture): the Batch in every status, failed with errors, with output_expires_after, with usage and
// model; the OpenAIFile, the list and delete responses, the error object; and every line of the output and error
// files of a batch of each endpoint, each response body against its endpoint's schema (an error body against the
// error object).
func TestObjectsMatchTheSpec(t *testing.T) {
	t.Parallel()
	s := loadSpecSchemas(t)
	e := newEnv(t, emulator.Options{PhaseDelay: 40 * time.Millisecond, TokenLimitPerModel: map[string]int64{"gpt-4o": 10}})
	ctx := t.Context()
	get := func(path string) []byte {
		t.Helper()
		code, b := e.raw(t, http.MethodGet, path, "test", nil)
		require.Equal(t, http.StatusOK, code, "%s: %s", path, b)
		return b
	}

	// Files.
	up, err := e.client.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(chatLines(3, "gpt-4o-mini")), "in.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch, ExpiresAfter: openai.FileNewParamsExpiresAfter{Seconds: 7200}})
	require.NoError(t, err)
	s.check(t, "an uploaded file", "OpenAIFile", []byte(up.RawJSON()))
	s.check(t, "a file", "OpenAIFile", get("/files/"+up.ID))
	s.check(t, "the file list", "ListFilesResponse", get("/files"))
	s.check(t, "an empty file list", "ListFilesResponse", get("/files?purpose=fine-tune"))
	gone := e.upload(t, chatLines(1, "gpt-4o-mini"))
	code, b := e.raw(t, http.MethodDelete, "/files/"+gone, "test", nil)
	require.Equal(t, http.StatusOK, code)
	s.check(t, "a deleted file", "DeleteFileResponse", b)

	// The error object.
	for _, c := range []struct{ name, method, path, key, body string }{
		{"404 file", http.MethodGet, "/files/file-nope", "test", ""},
		{"404 batch", http.MethodGet, "/batches/batch_nope", "test", ""},
		{"401", http.MethodGet, "/batches", "", ""},
		{"400 create", http.MethodPost, "/batches", "test", `{"input_file_id":"` + up.ID + `","endpoint":"/v1/chat","completion_window":"24h"}`},
		{"400 videos", http.MethodPost, "/batches", "test", `{"input_file_id":"` + up.ID + `","endpoint":"/v1/videos","completion_window":"24h"}`},
		{"404 route", http.MethodGet, "/nothing", "test", ""},
	} {
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		code, b := e.raw(t, c.method, c.path, c.key, body)
		require.GreaterOrEqual(t, code, 400, c.name)
		s.check(t, "the error of a "+c.name, "ErrorResponse", b)
	}

	// A batch through every status of a good run, created with output_expires_after.
	created, err := e.client.Batches.New(ctx, openai.BatchNewParams{InputFileID: up.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h, Metadata: map[string]string{"job": "spec"},
		OutputExpiresAfter: openai.BatchNewParamsOutputExpiresAfter{Seconds: 3600}})
	require.NoError(t, err)
	s.check(t, "a created batch", "Batch", []byte(created.RawJSON()))
	for _, st := range []openai.BatchStatus{openai.BatchStatusInProgress, openai.BatchStatusFinalizing, openai.BatchStatusCompleted} {
		s.check(t, "a batch "+string(st), "Batch", e.batchInStatus(t, created.ID, st))
	}
	done := e.wait(t, created.ID, openai.BatchStatusCompleted)
	require.Equal(t, "gpt-4o-mini", done.Model)
	require.Positive(t, done.Usage.TotalTokens)
	s.check(t, "a batch output file", "OpenAIFile", get("/files/"+done.OutputFileID))

	// Failed with validation errors; failed on the enqueued-token limit; expired; cancelling and cancelled.
	bad := e.create(t, e.upload(t, []byte("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"m\"}}\nnot json\n"+
		"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"m\"}}\n")), openai.BatchNewParamsEndpointV1ChatCompletions)
	s.check(t, "a batch failed on its input", "Batch", e.batchInStatus(t, bad.ID, openai.BatchStatusFailed))
	limited := e.create(t, e.upload(t, chatLines(2, "gpt-4o")), openai.BatchNewParamsEndpointV1ChatCompletions)
	s.check(t, "a batch failed on the token limit", "Batch", e.batchInStatus(t, limited.ID, openai.BatchStatusFailed))
	expiring := e.create(t, e.upload(t, chatLines(20, "gpt-4o-mini")), openai.BatchNewParamsEndpointV1ChatCompletions)
	require.NoError(t, e.srv.ExpireBatch(expiring.ID))
	s.check(t, "an expired batch", "Batch", e.batchInStatus(t, expiring.ID, openai.BatchStatusExpired))
	cancelled := e.create(t, e.upload(t, chatLines(20, "gpt-4o-mini")), openai.BatchNewParamsEndpointV1ChatCompletions)
	code, b = e.raw(t, http.MethodPost, "/batches/"+cancelled.ID+"/cancel", "test", nil)
	require.Equal(t, http.StatusOK, code)
	s.check(t, "a batch cancelling", "Batch", b)
	s.check(t, "a batch cancelled", "Batch", e.batchInStatus(t, cancelled.ID, openai.BatchStatusCancelled))
	s.check(t, "the batch list", "ListBatchesResponse", get("/batches?limit=2"))
	s.check(t, "an empty batch list", "ListBatchesResponse", get("/batches?after=batch_nope"))

	// The lines of each endpoint's output, and of a chat batch whose every line fails (in each of the failure's
	// shapes: 500 and 400 answers in the error file, an error object, 503 answers in the output file).
	var failed int
	for _, c := range []struct {
		endpoint, body string
		failRate       float64
	}{
		{"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello %d"}],"max_completion_tokens":%d}`, 0},
		{"/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"hello %d","max_tokens":%d}`, 0},
		{"/v1/responses", `{"model":"gpt-4o-mini","input":"hello %d","max_output_tokens":%d}`, 0},
		{"/v1/embeddings", `{"model":"text-embedding-3-small","input":["hello %d","x%d"]}`, 0},
		{"/v1/moderations", `{"model":"omni-moderation-latest","input":"I will kill %d, %d"}`, 0},
		{"/v1/images/generations", `{"model":"gpt-image-1","prompt":"a fox %d","n":%d,"quality":"low"}`, 0},
		{"/v1/images/edits", `{"model":"gpt-image-1","prompt":"add a hat %d","images":[{"image_url":"https://example.com/fox.png"}],"n":%d,"quality":"low"}`, 0},
		{"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"fail %d"}],"max_completion_tokens":%d}`, 1},
	} {
		endpoint, body := c.endpoint, c.body
		var in bytes.Buffer
		for i := range 12 {
			fmt.Fprintf(&in, `{"custom_id":"r-%d","method":"POST","url":%q,"body":%s}`+"\n", i, endpoint, fmt.Sprintf(body, i, 1+i%2))
		}
		if strings.HasPrefix(endpoint, "/v1/images") {
			fmt.Fprintf(&in, `{"custom_id":"bad","method":"POST","url":%q,"body":{"model":"gpt-image-1","n":11}}`+"\n", endpoint)
		}
		e.srv.SetFaults(emulator.Faults{RequestFailRate: c.failRate})
		b := e.create(t, e.upload(t, in.Bytes()), openai.BatchNewParamsEndpoint(endpoint))
		b = e.wait(t, b.ID, openai.BatchStatusCompleted)
		e.srv.SetFaults(emulator.Faults{})
		s.check(t, "a completed "+endpoint+" batch", "Batch", get("/batches/"+b.ID))
		var answered int
		for _, fileID := range []string{b.OutputFileID, b.ErrorFileID} {
			if fileID == "" {
				continue
			}
			resp, err := e.client.Files.Content(ctx, fileID)
			require.NoError(t, err)
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(nil, 64<<20)
			for sc.Scan() {
				line := sc.Bytes()
				var l outputLine
				require.NoError(t, json.Unmarshal(line, &l))
				sample := fmt.Sprintf("%s line %s", endpoint, l.CustomID)
				s.check(t, sample, "output line", line)
				switch {
				case l.Response != nil && l.Response.StatusCode == http.StatusOK:
					answered++
					s.check(t, sample+" (its body)", endpointSchemas[endpoint], l.Response.Body)
				case l.Response != nil:
					failed++
					s.check(t, sample+" (its error)", "ErrorResponse", l.Response.Body)
				}
			}
			require.NoError(t, sc.Err())
			resp.Body.Close()
		}
		if c.failRate == 0 {
			require.Positive(t, answered, endpoint)
		}
	}
	require.Positive(t, failed, "some lines were answered with an error")
}
