package emulator_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// testPhase keeps the whole suite fast while every phase still takes a visible moment.
const testPhase = 10 * time.Millisecond

type env struct {
	srv    *emulator.Server
	http   *httptest.Server
	client openai.Client
}

func newEnv(t *testing.T, opts emulator.Options, clientOpts ...option.RequestOption) *env {
	t.Helper()
	if opts.PhaseDelay == 0 {
		opts.PhaseDelay = testPhase
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = time.Millisecond
	}
	srv, err := emulator.New(opts)
	require.NoError(t, err)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		require.NoError(t, srv.Close())
	})
	base := []option.RequestOption{
		option.WithBaseURL(hs.URL + "/v1"), option.WithAPIKey("test"), option.WithMaxRetries(0),
	}
	return &env{srv: srv, http: hs, client: openai.NewClient(append(base, clientOpts...)...)}
}

// chatLines builds a chat-completions input file of n requests with custom_ids req-0..req-(n-1).
func chatLines(n int, model string) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"system","content":"Classify the review."},{"role":"user","content":"review number %d is great"}]}}`+"\n", i, model, i)
	}
	return b.Bytes()
}

func (e *env) upload(t *testing.T, data []byte) string {
	t.Helper()
	f, err := e.client.Files.New(t.Context(), openai.FileNewParams{
		File:    openai.File(bytes.NewReader(data), "input.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch,
	})
	require.NoError(t, err)
	return f.ID
}

func (e *env) create(t *testing.T, fileID string, endpoint openai.BatchNewParamsEndpoint) *openai.Batch {
	t.Helper()
	b, err := e.client.Batches.New(t.Context(), openai.BatchNewParams{
		InputFileID: fileID, Endpoint: endpoint, CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
	})
	require.NoError(t, err)
	return b
}

// wait polls a batch until it reaches one of the statuses.
func (e *env) wait(t *testing.T, id string, statuses ...openai.BatchStatus) *openai.Batch {
	t.Helper()
	// Generous: under -race on a busy 2-core machine a 20 000-line batch takes about 9 s to validate and answer.
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := e.client.Batches.Get(t.Context(), id)
		require.NoError(t, err)
		if slices.Contains(statuses, b.Status) {
			return b
		}
		require.True(t, time.Now().Before(deadline), "batch %s stuck in %s", id, b.Status)
		time.Sleep(2 * time.Millisecond)
	}
}

func (e *env) submit(t *testing.T, data []byte) *openai.Batch {
	t.Helper()
	return e.create(t, e.upload(t, data), openai.BatchNewParamsEndpointV1ChatCompletions)
}

// outputLine is the line shape of output and error files.
type outputLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (e *env) download(t *testing.T, fileID string) []outputLine {
	t.Helper()
	if fileID == "" {
		return nil
	}
	resp, err := e.client.Files.Content(t.Context(), fileID)
	require.NoError(t, err)
	defer resp.Body.Close()
	var lines []outputLine
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 64<<20) // an image answer is megabytes on one line
	for sc.Scan() {
		var l outputLine
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), sc.Text())
		lines = append(lines, l)
	}
	require.NoError(t, sc.Err())
	return lines
}

func customIDs(lines []outputLine) []string {
	ids := make([]string, len(lines))
	for i, l := range lines {
		ids[i] = l.CustomID
	}
	return ids
}

func rawCall(t *testing.T, method, url, key string, body io.Reader) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
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
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return resp, m
}

// requireErrorShape checks OpenAI's error object: message, type, param and code, all present.
func requireErrorShape(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	require.Len(t, m, 1)
	e, ok := m["error"].(map[string]any)
	require.True(t, ok, "no error object in %v", m)
	require.ElementsMatch(t, []string{"message", "type", "param", "code"}, keys(e))
	require.IsType(t, "", e["message"])
	require.IsType(t, "", e["type"])
	return e
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		optKey   string
		key      string
		wantCode any
		ok       bool
	}{
		{name: "missing key", key: "", wantCode: nil},
		{name: "any key accepted", key: "whatever", ok: true},
		{name: "wrong key", optKey: "sk-right-key-123", key: "sk-wrong-key-456", wantCode: "invalid_api_key"},
		{name: "right key", optKey: "sk-right-key-123", key: "sk-right-key-123", ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, emulator.Options{APIKey: tt.optKey})
			resp, m := rawCall(t, http.MethodGet, e.http.URL+"/v1/batches", tt.key, nil)
			if tt.ok {
				require.Equal(t, http.StatusOK, resp.StatusCode)
				return
			}
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			er := requireErrorShape(t, m)
			require.Equal(t, "invalid_request_error", er["type"])
			require.Equal(t, tt.wantCode, er["code"])
			require.Equal(t, 1, e.srv.Stats().Unauthorized)
		})
	}

	t.Run("sdk sees 401", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, emulator.Options{APIKey: "sk-right"}, option.WithAPIKey("sk-wrong"))
		_, err := e.client.Batches.Get(t.Context(), "batch_x")
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)
		require.Equal(t, "invalid_api_key", apiErr.Code)
	})
}

func TestFiles(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	ctx := t.Context()
	data := chatLines(3, "gpt-4o-mini")

	f, err := e.client.Files.New(ctx, openai.FileNewParams{
		File:         openai.File(bytes.NewReader(data), "reviews.jsonl", "application/jsonl"),
		Purpose:      openai.FilePurposeBatch,
		ExpiresAfter: openai.FileNewParamsExpiresAfter{Seconds: 7200},
	})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(f.ID, "file-"), f.ID)
	require.Equal(t, int64(len(data)), f.Bytes)
	require.Equal(t, "reviews.jsonl", f.Filename)
	require.Equal(t, openai.FileObjectPurposeBatch, f.Purpose)
	require.Equal(t, openai.FileObjectStatusProcessed, f.Status)
	require.Equal(t, f.CreatedAt+7200, f.ExpiresAt)
	requireFileShape(t, f.RawJSON())

	got, err := e.client.Files.Get(ctx, f.ID)
	require.NoError(t, err)
	require.Equal(t, f.ID, got.ID)

	resp, err := e.client.Files.Content(ctx, f.ID)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, data, body)

	// A second file, user_data, so that list filtering and order show.
	f2, err := e.client.Files.New(ctx, openai.FileNewParams{
		File: openai.File(strings.NewReader("notes"), "notes.txt", "text/plain"), Purpose: openai.FilePurposeUserData,
	})
	require.NoError(t, err)
	require.False(t, f2.JSON.ExpiresAt.Valid(), "user_data files do not expire by default")

	page, err := e.client.Files.List(ctx, openai.FileListParams{})
	require.NoError(t, err)
	require.Equal(t, []string{f2.ID, f.ID}, []string{page.Data[0].ID, page.Data[1].ID}, "newest first")
	requireListShape(t, page.RawJSON(), requireFileShape)

	page, err = e.client.Files.List(ctx, openai.FileListParams{Purpose: openai.String("batch")})
	require.NoError(t, err)
	require.Len(t, page.Data, 1)

	page, err = e.client.Files.List(ctx, openai.FileListParams{Limit: openai.Int(1), Order: openai.FileListParamsOrderAsc})
	require.NoError(t, err)
	require.Equal(t, f.ID, page.Data[0].ID)
	require.True(t, page.HasMore)
	page, err = page.GetNextPage()
	require.NoError(t, err)
	require.Equal(t, f2.ID, page.Data[0].ID)

	del, err := e.client.Files.Delete(ctx, f.ID)
	require.NoError(t, err)
	require.True(t, del.Deleted)
	require.Equal(t, f.ID, del.ID)
	require.ElementsMatch(t, []string{"id", "object", "deleted"}, rawKeys(t, del.RawJSON()))

	_, err = e.client.Files.Get(ctx, f.ID)
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusNotFound, apiErr.StatusCode)
	_, err = e.client.Files.Content(ctx, f.ID)
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusNotFound, apiErr.StatusCode)

	recs := e.srv.Files()
	require.Len(t, recs, 2)
	require.True(t, recs[0].Deleted)
	require.Empty(t, recs[0].Path)
	st := e.srv.Stats()
	require.Equal(t, 2, st.FileUploads)
	require.Equal(t, 2, st.ContentDownloads)
	require.Equal(t, 1, st.FileDeletes)
}

func TestUploadRejects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{MaxUploadBytes: 100})
	tests := []struct {
		name     string
		params   openai.FileNewParams
		status   int
		wantText string
	}{
		{"not jsonl", openai.FileNewParams{File: openai.File(strings.NewReader("{}"), "in.json", "application/json"), Purpose: openai.FilePurposeBatch}, 400, ".jsonl"},
		{"bad purpose", openai.FileNewParams{File: openai.File(strings.NewReader("{}"), "in.jsonl", "text/plain"), Purpose: "nonsense"}, 400, "purpose"},
		{"too large", openai.FileNewParams{File: openai.File(strings.NewReader(strings.Repeat("x", 101)), "in.jsonl", "text/plain"), Purpose: openai.FilePurposeBatch}, 413, "too large"},
		{"bad expiry", openai.FileNewParams{File: openai.File(strings.NewReader("{}"), "in.jsonl", "text/plain"), Purpose: openai.FilePurposeBatch,
			ExpiresAfter: openai.FileNewParamsExpiresAfter{Seconds: 10}}, 400, "expires_after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.client.Files.New(t.Context(), tt.params)
			var apiErr *openai.Error
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, tt.status, apiErr.StatusCode)
			require.Contains(t, apiErr.Message, tt.wantText)
		})
	}
	require.Empty(t, e.srv.Files())
}

func TestUnknownRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	resp, m := rawCall(t, http.MethodGet, e.http.URL+"/v1/nothing", "k", nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	requireErrorShape(t, m)
}

// Spec field sets (openai-openapi.yaml: OpenAIFile, Batch, ListFilesResponse, ListBatchesResponse).
var (
	fileFields     = []string{"id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status", "status_details"}
	fileRequired   = []string{"id", "object", "bytes", "created_at", "filename", "purpose", "status"}
	batchFields    = []string{"id", "object", "endpoint", "model", "errors", "input_file_id", "completion_window", "status", "output_file_id", "error_file_id", "created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at", "request_counts", "usage", "metadata"}
	batchRequired  = []string{"id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at"}
	batchTimes     = []string{"created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at"}
	listFields     = []string{"object", "data", "first_id", "last_id", "has_more"}
	usageFields    = []string{"input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details", "total_tokens"}
	countFields    = []string{"total", "completed", "failed"}
	batchErrFields = []string{"code", "message", "param", "line"}
)

func rawMap(t *testing.T, raw string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(raw), &m), raw)
	return m
}

func rawKeys(t *testing.T, raw string) []string { return keys(rawMap(t, raw)) }

func requireFields(t *testing.T, m map[string]any, allowed, required []string) {
	t.Helper()
	for k := range m {
		require.Contains(t, allowed, k, "field %q is not in the spec", k)
	}
	for _, k := range required {
		require.Contains(t, m, k, "required field %q missing", k)
	}
}

func requireFileShape(t *testing.T, raw string) {
	t.Helper()
	requireFileMap(t, rawMap(t, raw))
}

func requireFileMap(t *testing.T, m map[string]any) {
	t.Helper()
	requireFields(t, m, fileFields, fileRequired)
	require.Equal(t, "file", m["object"])
	for _, k := range []string{"bytes", "created_at"} {
		require.IsType(t, float64(0), m[k], k)
	}
	if v, ok := m["expires_at"]; ok {
		require.IsType(t, float64(0), v)
	}
}

func requireBatchShape(t *testing.T, raw string) {
	t.Helper()
	requireBatchMap(t, rawMap(t, raw))
}

func requireBatchMap(t *testing.T, m map[string]any) {
	t.Helper()
	requireFields(t, m, batchFields, batchRequired)
	require.Equal(t, "batch", m["object"])
	for _, k := range batchTimes {
		if m[k] != nil {
			require.IsType(t, float64(0), m[k], k)
		}
	}
	for _, k := range []string{"id", "endpoint", "input_file_id", "completion_window", "status"} {
		require.IsType(t, "", m[k], k)
	}
	for _, k := range []string{"output_file_id", "error_file_id", "model"} {
		if m[k] != nil {
			require.IsType(t, "", m[k], k)
		}
	}
	counts := m["request_counts"].(map[string]any)
	requireFields(t, counts, countFields, countFields)
	usage := m["usage"].(map[string]any)
	requireFields(t, usage, usageFields, usageFields)
	if m["errors"] != nil {
		errs := m["errors"].(map[string]any)
		require.Equal(t, "list", errs["object"])
		for _, d := range errs["data"].([]any) {
			requireFields(t, d.(map[string]any), batchErrFields, []string{"code", "message"})
		}
	}
	if m["metadata"] != nil {
		for _, v := range m["metadata"].(map[string]any) {
			require.IsType(t, "", v)
		}
	}
}

func requireListShape(t *testing.T, raw string, item func(*testing.T, string)) {
	t.Helper()
	m := rawMap(t, raw)
	requireFields(t, m, listFields, []string{"object", "data", "has_more"})
	require.Equal(t, "list", m["object"])
	require.IsType(t, true, m["has_more"])
	for _, d := range m["data"].([]any) {
		b, err := json.Marshal(d)
		require.NoError(t, err)
		item(t, string(b))
	}
}

// ctxTimeout is a short deadline for calls expected to fail fast.
func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}
