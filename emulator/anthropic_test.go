package emulator_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

const testAnthropicKey = "sk-ant-emulator-test"

type anthropicEnv struct {
	srv    *emulator.Server
	url    string // the emulator's root, where the SDK's base URL points
	client anthropic.Client
}

func newAnthropicEnv(t *testing.T, opts emulator.Options) *anthropicEnv {
	t.Helper()
	if opts.PhaseDelay == 0 {
		opts.PhaseDelay = testPhase
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = time.Millisecond
	}
	opts.APIKey = testAnthropicKey
	srv, err := emulator.New(opts)
	require.NoError(t, err)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		require.NoError(t, srv.Close())
	})
	return &anthropicEnv{srv: srv, url: hs.URL, client: anthropic.NewClient(
		option.WithBaseURL(hs.URL), option.WithAPIKey(testAnthropicKey), option.WithMaxRetries(0),
	)}
}

// reviewPrompt is the user message of request i.
func reviewPrompt(i int) string { return fmt.Sprintf("review number %d is great", i) }

// messageRequests builds n requests with custom_ids req-0..req-(n-1).
func messageRequests(n int) []anthropic.MessageBatchNewParamsRequest {
	reqs := make([]anthropic.MessageBatchNewParamsRequest, n)
	for i := range reqs {
		reqs[i] = anthropic.MessageBatchNewParamsRequest{
			CustomID: fmt.Sprintf("req-%d", i),
			Params: anthropic.MessageBatchNewParamsRequestParams{
				Model: "claude-haiku-4-5", MaxTokens: 256,
				System:   []anthropic.TextBlockParam{{Text: "Classify the review."}},
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(reviewPrompt(i)))},
			},
		}
	}
	return reqs
}

func (e *anthropicEnv) create(t *testing.T, reqs []anthropic.MessageBatchNewParamsRequest) *anthropic.MessageBatch {
	t.Helper()
	b, err := e.client.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: reqs})
	require.NoError(t, err)
	return b
}

// waitEnded polls a batch until its processing ended.
func (e *anthropicEnv) waitEnded(t *testing.T, id string) *anthropic.MessageBatch {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := e.client.Messages.Batches.Get(t.Context(), id, anthropic.MessageBatchGetParams{})
		require.NoError(t, err)
		if b.ProcessingStatus == anthropic.MessageBatchProcessingStatusEnded {
			return b
		}
		require.True(t, time.Now().Before(deadline), "message batch %s stuck in %s", id, b.ProcessingStatus)
		time.Sleep(2 * time.Millisecond)
	}
}

// results reads a batch's results with the SDK's streaming reader, in the order they come.
func (e *anthropicEnv) results(t *testing.T, id string) []anthropic.MessageBatchIndividualResponse {
	t.Helper()
	stream := e.client.Messages.Batches.ResultsStreaming(t.Context(), id, anthropic.MessageBatchResultsParams{})
	defer stream.Close()
	var out []anthropic.MessageBatchIndividualResponse
	for stream.Next() {
		out = append(out, stream.Current())
	}
	require.NoError(t, stream.Err())
	return out
}

// call makes a raw HTTP call with Anthropic's headers; headers maps a header to "" to leave it out.
func (e *anthropicEnv) call(t *testing.T, method, path string, body io.Reader, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.url+path, body)
	require.NoError(t, err)
	req.Header.Set("x-api-key", testAnthropicKey)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, data
}

// anthropicErrorBody is Anthropic's error shape.
type anthropicErrorBody struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

// requireAnthropicError checks a raw answer is Anthropic's error shape with the status and type, and returns its
// message.
func requireAnthropicError(t *testing.T, resp *http.Response, body []byte, status int, typ string) string {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, "%s", body)
	var e anthropicErrorBody
	require.NoError(t, json.Unmarshal(body, &e), "%s", body)
	require.Equal(t, "error", e.Type)
	require.Equal(t, typ, e.Error.Type)
	require.NotEmpty(t, e.Error.Message)
	require.True(t, strings.HasPrefix(e.RequestID, "req_"), "request_id %q", e.RequestID)
	require.Equal(t, resp.Header.Get("request-id"), e.RequestID)
	return e.Error.Message
}

// A batch runs in_progress → ended with the real SDK; its results are full Messages with deterministic text and
// token counts, in another order than the requests.
func TestMessageBatchLifecycle(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{})
	const n = 40
	reqs := messageRequests(n)
	// The last request is cut by its output limit.
	reqs[n-1].Params.MaxTokens = 2

	created := e.create(t, reqs)
	require.True(t, strings.HasPrefix(created.ID, "msgbatch_"), created.ID)
	require.EqualValues(t, "message_batch", created.Type)
	require.Equal(t, anthropic.MessageBatchProcessingStatusInProgress, created.ProcessingStatus)
	require.EqualValues(t, n, created.RequestCounts.Processing)
	require.Zero(t, created.RequestCounts.Succeeded)
	require.Equal(t, 24*time.Hour, created.ExpiresAt.Sub(created.CreatedAt))
	require.WithinDuration(t, time.Now(), created.CreatedAt, time.Minute)
	for _, null := range []string{`"ended_at":null`, `"results_url":null`, `"archived_at":null`, `"cancel_initiated_at":null`} {
		require.Contains(t, created.RawJSON(), null)
	}
	resp, body := e.call(t, http.MethodGet, "/v1/messages/batches/"+created.ID+"/results", nil, nil)
	requireAnthropicError(t, resp, body, http.StatusBadRequest, "invalid_request_error")

	b := e.waitEnded(t, created.ID)
	require.EqualValues(t, n, b.RequestCounts.Succeeded)
	require.Zero(t, b.RequestCounts.Processing+b.RequestCounts.Errored+b.RequestCounts.Canceled+b.RequestCounts.Expired)
	require.Equal(t, e.url+"/v1/messages/batches/"+created.ID+"/results", b.ResultsURL)
	require.False(t, b.EndedAt.IsZero())
	require.True(t, b.CancelInitiatedAt.IsZero())

	results := e.results(t, created.ID)
	require.Len(t, results, n)
	var order []string
	for _, r := range results {
		order = append(order, r.CustomID)
		var i int
		_, err := fmt.Sscanf(r.CustomID, "req-%d", &i)
		require.NoError(t, err)
		require.Equal(t, "succeeded", r.Result.Type)
		m := r.Result.AsSucceeded().Message
		require.True(t, strings.HasPrefix(m.ID, "msg_"), m.ID)
		require.EqualValues(t, "message", m.Type)
		require.EqualValues(t, "assistant", m.Role)
		require.EqualValues(t, "claude-haiku-4-5", m.Model)
		require.Len(t, m.Content, 1)
		require.Equal(t, "text", m.Content[0].Type)
		require.Contains(t, r.RawJSON(), `"stop_sequence":null`)
		require.EqualValues(t, emulator.EstimateTokens("Classify the review.\n"+reviewPrompt(i)), m.Usage.InputTokens)
		require.Zero(t, m.Usage.CacheReadInputTokens)
		require.Zero(t, m.Usage.CacheCreationInputTokens)
		want := emulator.AnswerText(reviewPrompt(i))
		if i == n-1 {
			require.EqualValues(t, "max_tokens", m.StopReason)
			require.EqualValues(t, 2, m.Usage.OutputTokens)
			require.True(t, strings.HasPrefix(want, m.Content[0].Text), "a cut answer is a prefix of the whole one")
			require.Len(t, m.Content[0].Text, 8)
			continue
		}
		require.EqualValues(t, "end_turn", m.StopReason)
		require.Equal(t, want, m.Content[0].Text)
		require.EqualValues(t, emulator.EstimateTokens(want), m.Usage.OutputTokens)
	}
	inOrder := make([]string, n)
	for i := range inOrder {
		inOrder[i] = fmt.Sprintf("req-%d", i)
	}
	require.ElementsMatch(t, inOrder, order)
	require.NotEqual(t, inOrder, order, "results come in no particular order")

	rec, ok := e.srv.MessageBatch(created.ID)
	require.True(t, ok)
	require.Equal(t, inOrder, rec.CustomIDs)
	require.Equal(t, emulator.ProcessingEnded, rec.ProcessingStatus)
	require.EqualValues(t, n, rec.Succeeded)
	require.Positive(t, rec.InputTokens)
	st := e.srv.Stats().Anthropic
	require.Equal(t, 1, st.BatchCreates)
	require.Equal(t, 1, st.BatchesCreated)
	require.Positive(t, st.BatchGets)
	require.Equal(t, 2, st.ResultDownloads)
	require.Zero(t, e.srv.Stats().BatchCreates, "Anthropic calls are not counted as OpenAI ones")
}

// The results route honours Range: bytes=N- with 206 and the rest of the body, as the file content route does.
func TestMessageBatchResultsRange(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{})
	b := e.create(t, messageRequests(5))
	e.waitEnded(t, b.ID)
	path := "/v1/messages/batches/" + b.ID + "/results"
	resp, whole := e.call(t, http.MethodGet, path, nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "bytes", resp.Header.Get("Accept-Ranges"))
	require.Equal(t, 5, bytes.Count(whole, []byte("\n")))

	resp, rest := e.call(t, http.MethodGet, path, nil, map[string]string{"Range": "bytes=100-"})
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	require.Equal(t, fmt.Sprintf("bytes 100-%d/%d", len(whole)-1, len(whole)), resp.Header.Get("Content-Range"))
	require.Equal(t, whole[100:], rest)
	require.Equal(t, 1, e.srv.Stats().RangeDownloads)
}

// The list is newest first; after_id pages toward older batches and before_id toward newer ones, and the SDK's
// auto-pager walks them all.
func TestMessageBatchList(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{})
	ctx := t.Context()
	var ids []string
	for range 5 {
		ids = append(ids, e.create(t, messageRequests(1)).ID)
	}
	newest := slices.Clone(ids)
	slices.Reverse(newest)
	page, err := e.client.Messages.Batches.List(ctx, anthropic.MessageBatchListParams{Limit: anthropic.Int(2)})
	require.NoError(t, err)
	require.Equal(t, newest[:2], listIDs(page.Data))
	require.True(t, page.HasMore)
	require.Equal(t, newest[0], page.FirstID)
	require.Equal(t, newest[1], page.LastID)

	page, err = e.client.Messages.Batches.List(ctx, anthropic.MessageBatchListParams{Limit: anthropic.Int(2), AfterID: anthropic.String(newest[3])})
	require.NoError(t, err)
	require.Equal(t, newest[4:], listIDs(page.Data))
	require.False(t, page.HasMore)

	page, err = e.client.Messages.Batches.List(ctx, anthropic.MessageBatchListParams{Limit: anthropic.Int(2), BeforeID: anthropic.String(ids[1])})
	require.NoError(t, err)
	require.Equal(t, []string{ids[3], ids[2]}, listIDs(page.Data), "the page closest to the cursor, newest first")
	require.True(t, page.HasMore)

	var all []string
	pager := e.client.Messages.Batches.ListAutoPaging(ctx, anthropic.MessageBatchListParams{Limit: anthropic.Int(2)})
	for pager.Next() {
		all = append(all, pager.Current().ID)
	}
	require.NoError(t, pager.Err())
	require.Equal(t, newest, all)

	var back []string
	pager = e.client.Messages.Batches.ListAutoPaging(ctx, anthropic.MessageBatchListParams{Limit: anthropic.Int(2), BeforeID: anthropic.String(ids[0])})
	for pager.Next() {
		back = append(back, pager.Current().ID)
	}
	require.NoError(t, pager.Err())
	require.ElementsMatch(t, ids[1:], back)

	resp, body := e.call(t, http.MethodGet, "/v1/messages/batches?limit=1001", nil, nil)
	requireAnthropicError(t, resp, body, http.StatusBadRequest, "invalid_request_error")
	require.Equal(t, 9, e.srv.Stats().Anthropic.BatchLists, "every list call is counted, pages included")
}

func listIDs(bs []anthropic.MessageBatch) []string {
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

// A cancel moves the batch to canceling; the requests not yet answered end canceled. Only an ended batch can be
// deleted, and then it is gone with its results.
func TestMessageBatchCancelAndDelete(t *testing.T) {
	t.Parallel()
	// A queue phase long enough that the cancel lands before any answer, even on a loaded machine.
	e := newAnthropicEnv(t, emulator.Options{PhaseDelay: 2 * time.Second})
	ctx := t.Context()
	const n = 30
	created := e.create(t, messageRequests(n))

	_, err := e.client.Messages.Batches.Delete(ctx, created.ID, anthropic.MessageBatchDeleteParams{})
	var apiErr *anthropic.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusBadRequest, apiErr.StatusCode, "a batch still processing cannot be deleted")
	require.EqualValues(t, "invalid_request_error", apiErr.Type())

	canceling, err := e.client.Messages.Batches.Cancel(ctx, created.ID, anthropic.MessageBatchCancelParams{})
	require.NoError(t, err)
	require.Equal(t, anthropic.MessageBatchProcessingStatusCanceling, canceling.ProcessingStatus)
	require.False(t, canceling.CancelInitiatedAt.IsZero())
	require.EqualValues(t, n, canceling.RequestCounts.Processing)
	again, err := e.client.Messages.Batches.Cancel(ctx, created.ID, anthropic.MessageBatchCancelParams{})
	require.NoError(t, err, "canceling twice is harmless")
	require.Equal(t, canceling.CancelInitiatedAt, again.CancelInitiatedAt)

	b := e.waitEnded(t, created.ID)
	require.EqualValues(t, n, b.RequestCounts.Canceled)
	require.Zero(t, b.RequestCounts.Succeeded+b.RequestCounts.Processing)
	require.Equal(t, canceling.CancelInitiatedAt, b.CancelInitiatedAt)
	results := e.results(t, created.ID)
	require.Len(t, results, n)
	for _, r := range results {
		require.Equal(t, "canceled", r.Result.Type)
		require.JSONEq(t, `{"type":"canceled"}`, r.Result.RawJSON())
	}
	_, err = e.client.Messages.Batches.Cancel(ctx, created.ID, anthropic.MessageBatchCancelParams{})
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusBadRequest, apiErr.StatusCode, "an ended batch cannot be canceled")

	rec, ok := e.srv.MessageBatch(created.ID)
	require.True(t, ok)
	deleted, err := e.client.Messages.Batches.Delete(ctx, created.ID, anthropic.MessageBatchDeleteParams{})
	require.NoError(t, err)
	require.Equal(t, created.ID, deleted.ID)
	require.EqualValues(t, "message_batch_deleted", deleted.Type)
	_, err = e.client.Messages.Batches.Get(ctx, created.ID, anthropic.MessageBatchGetParams{})
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusNotFound, apiErr.StatusCode)
	require.EqualValues(t, "not_found_error", apiErr.Type())
	resp, body := e.call(t, http.MethodGet, "/v1/messages/batches/"+created.ID+"/results", nil, nil)
	requireAnthropicError(t, resp, body, http.StatusNotFound, "not_found_error")
	require.NoFileExists(t, rec.RequestsPath)
	require.NoFileExists(t, rec.ResultsPath)
	require.Empty(t, e.srv.MessageBatches())
	require.Equal(t, 1, e.srv.Stats().Anthropic.BatchesCreated, "a deleted batch still counts as created")
}

// RequestFailRate answers a share of the requests with errored results carrying the API's error object.
func TestMessageBatchErroredResults(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{RequestFailRate: 0.5, Seed: 7})
	const n = 60
	b := e.waitEnded(t, e.create(t, messageRequests(n)).ID)
	require.Positive(t, b.RequestCounts.Errored)
	require.Positive(t, b.RequestCounts.Succeeded)
	require.EqualValues(t, n, b.RequestCounts.Errored+b.RequestCounts.Succeeded)

	var errored int64
	for _, r := range e.results(t, b.ID) {
		if r.Result.Type != "errored" {
			require.Equal(t, "succeeded", r.Result.Type)
			continue
		}
		errored++
		er := r.Result.AsErrored().Error
		require.EqualValues(t, "error", er.Type)
		require.Contains(t, []string{"invalid_request_error", "api_error"}, er.Error.Type)
		require.NotEmpty(t, er.Error.Message)
		require.True(t, strings.HasPrefix(er.RequestID, "req_"), er.RequestID)
	}
	require.Equal(t, b.RequestCounts.Errored, errored)
	require.EqualValues(t, errored, e.srv.Stats().Anthropic.ErroredRequests)
}

// A bad request refuses the whole batch with 400 invalid_request_error, and nothing is created: no batch, no
// file left behind.
func TestMessageBatchRejects(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{MaxMessageBatchRequests: 3})
	ok := func(id string) string {
		return fmt.Sprintf(`{"custom_id":%q,"params":{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}}`, id)
	}
	withParams := func(params string) string {
		return `{"requests":[` + ok("a") + `,{"custom_id":"b","params":` + params + `}]}`
	}
	tests := []struct{ name, body, field string }{
		{"custom_id with a space", `{"requests":[` + ok("a b") + `]}`, "requests.0.custom_id"},
		{"custom_id too long", `{"requests":[` + ok(strings.Repeat("x", 65)) + `]}`, "requests.0.custom_id"},
		{"custom_id empty", `{"requests":[` + ok("") + `]}`, "requests.0.custom_id"},
		{"custom_id missing", `{"requests":[{"params":{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]}}]}`, "requests.0.custom_id"},
		{"custom_id repeated", `{"requests":[` + ok("a") + `,` + ok("b") + `,` + ok("a") + `]}`, "requests.2.custom_id"},
		{"params missing", `{"requests":[{"custom_id":"a"}]}`, "requests.0.params"},
		{"model missing", withParams(`{"max_tokens":1,"messages":[{"role":"user","content":"x"}]}`), "requests.1.params.model"},
		{"max_tokens missing", withParams(`{"model":"m","messages":[{"role":"user","content":"x"}]}`), "requests.1.params.max_tokens"},
		{"max_tokens zero", withParams(`{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`), "requests.1.params.max_tokens"},
		{"max_tokens not an integer", withParams(`{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"x"}]}`), "requests.1.params.max_tokens"},
		{"messages missing", withParams(`{"model":"m","max_tokens":1}`), "requests.1.params.messages"},
		{"messages empty", withParams(`{"model":"m","max_tokens":1,"messages":[]}`), "requests.1.params.messages"},
		{"bad role", withParams(`{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}`), "requests.1.params.messages.0.role"},
		{"no requests", `{"requests":[]}`, "requests"},
		{"requests missing", `{}`, "requests"},
		{"unknown field", `{"requests":[` + ok("a") + `],"extra":1}`, "extra"},
		{"too many requests", `{"requests":[` + ok("a") + `,` + ok("b") + `,` + ok("c") + `,` + ok("d") + `]}`, "requests"},
		{"not JSON", `{"requests":[` + ok("a"), "format"},
		{"not an object", `[]`, "dictionary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.call(t, http.MethodPost, "/v1/messages/batches", strings.NewReader(tt.body), nil)
			msg := requireAnthropicError(t, resp, body, http.StatusBadRequest, "invalid_request_error")
			require.Contains(t, msg, tt.field)
		})
	}

	// The SDK sees the same refusal.
	_, err := e.client.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		messageRequests(1)[0], {CustomID: "not/valid", Params: messageRequests(1)[0].Params},
	}})
	var apiErr *anthropic.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
	require.EqualValues(t, "invalid_request_error", apiErr.Type())
	require.Contains(t, apiErr.Message, "requests.1.custom_id")

	require.Empty(t, e.srv.MessageBatches())
	st := e.srv.Stats().Anthropic
	require.Zero(t, st.BatchesCreated)
	require.Equal(t, len(tests)+1, st.RefusedCreates)
	requireNoBatchFiles(t, e.srv.DataDir())
	page, err := e.client.Messages.Batches.List(t.Context(), anthropic.MessageBatchListParams{})
	require.NoError(t, err)
	require.Empty(t, page.Data)
}

// requireNoBatchFiles checks the data directory holds no request or results file and no scratch file.
func requireNoBatchFiles(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{"batches", "tmp"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		require.NoError(t, err)
		require.Empty(t, entries, "%s/%s", dir, sub)
	}
}

// A body past the size limit is 413 request_too_large, announced or not, whatever it holds.
func TestMessageBatchTooLarge(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{MaxMessageBatchBytes: 4 << 10})
	var body bytes.Buffer
	body.WriteString(`{"requests":[`)
	for i := range 60 {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"custom_id":"r%d","params":{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hello"}]}}`, i)
	}
	body.WriteString(`]}`)
	require.Greater(t, body.Len(), 4<<10)

	resp, data := e.call(t, http.MethodPost, "/v1/messages/batches", bytes.NewReader(body.Bytes()), nil)
	requireAnthropicError(t, resp, data, http.StatusRequestEntityTooLarge, "request_too_large")
	// Without a Content-Length the emulator finds out while reading.
	resp, data = e.call(t, http.MethodPost, "/v1/messages/batches", io.MultiReader(bytes.NewReader(body.Bytes())), nil)
	requireAnthropicError(t, resp, data, http.StatusRequestEntityTooLarge, "request_too_large")
	// A bad request early in a body too large is still 413: the size is checked first.
	bad := bytes.Replace(body.Bytes(), []byte(`"r0"`), []byte(`"r 0"`), 1)
	resp, data = e.call(t, http.MethodPost, "/v1/messages/batches", io.MultiReader(bytes.NewReader(bad)), nil)
	requireAnthropicError(t, resp, data, http.StatusRequestEntityTooLarge, "request_too_large")

	require.Empty(t, e.srv.MessageBatches())
	require.Equal(t, 3, e.srv.Stats().Anthropic.RefusedCreates)
	requireNoBatchFiles(t, e.srv.DataDir())
}

// Calls need the API key (x-api-key, or a bearer token as the SDK sends it) and an anthropic-version header.
func TestMessageBatchAuth(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{})
	const path = "/v1/messages/batches"

	resp, body := e.call(t, http.MethodGet, path, nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)

	resp, body = e.call(t, http.MethodGet, path, nil, map[string]string{"x-api-key": ""})
	requireAnthropicError(t, resp, body, http.StatusUnauthorized, "authentication_error")
	resp, body = e.call(t, http.MethodGet, path, nil, map[string]string{"x-api-key": "sk-ant-wrong"})
	requireAnthropicError(t, resp, body, http.StatusUnauthorized, "authentication_error")
	require.NotContains(t, string(body), "sk-ant-wrong", "a key is never echoed")
	resp, body = e.call(t, http.MethodGet, path, nil, map[string]string{"x-api-key": "", "Authorization": "Bearer " + testAnthropicKey})
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)

	resp, body = e.call(t, http.MethodGet, path, nil, map[string]string{"anthropic-version": ""})
	msg := requireAnthropicError(t, resp, body, http.StatusBadRequest, "invalid_request_error")
	require.Contains(t, msg, "anthropic-version")

	bad := anthropic.NewClient(option.WithBaseURL(e.url), option.WithAPIKey("sk-ant-wrong"), option.WithMaxRetries(0))
	_, err := bad.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: messageRequests(1)})
	var apiErr *anthropic.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)
	require.EqualValues(t, "authentication_error", apiErr.Type())

	require.Equal(t, 3, e.srv.Stats().Unauthorized)
	require.Zero(t, e.srv.Stats().Anthropic.BatchesCreated)
}

// Batches expire three ways: ExpireRate at creation, ExpireMessageBatch, and the 24-hour clock. The requests not
// answered by then end expired.
func TestMessageBatchExpiry(t *testing.T) {
	t.Parallel()
	t.Run("ExpireRate", func(t *testing.T) {
		t.Parallel()
		e := newAnthropicEnv(t, emulator.Options{ExpireRate: 1, ExpireCompletedShare: 0.5})
		b := e.waitEnded(t, e.create(t, messageRequests(20)).ID)
		require.EqualValues(t, 10, b.RequestCounts.Succeeded)
		require.EqualValues(t, 10, b.RequestCounts.Expired)
		counts := map[string]int{}
		for _, r := range e.results(t, b.ID) {
			counts[r.Result.Type]++
			if r.Result.Type == "expired" {
				require.JSONEq(t, `{"type":"expired"}`, r.Result.RawJSON())
			}
		}
		require.Equal(t, map[string]int{"succeeded": 10, "expired": 10}, counts)
		require.Equal(t, 1, e.srv.Stats().Anthropic.ExpiredBatches)
	})
	t.Run("ExpireMessageBatch", func(t *testing.T) {
		t.Parallel()
		e := newAnthropicEnv(t, emulator.Options{PhaseDelay: time.Second})
		id := e.create(t, messageRequests(8)).ID
		require.NoError(t, e.srv.ExpireMessageBatch(id))
		b := e.waitEnded(t, id)
		require.EqualValues(t, 8, b.RequestCounts.Expired)
		require.Error(t, e.srv.ExpireMessageBatch(id), "an ended batch cannot expire")
		require.Error(t, e.srv.ExpireMessageBatch("msgbatch_unknown"))
	})
	t.Run("clock", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		var elapsed atomic.Int64
		e := newAnthropicEnv(t, emulator.Options{
			PhaseDelay: 200 * time.Millisecond,
			Now:        func() time.Time { return start.Add(time.Duration(elapsed.Load())) },
		})
		created := e.create(t, messageRequests(5))
		require.Equal(t, start.Add(24*time.Hour).UTC(), created.ExpiresAt.UTC())
		elapsed.Store(int64(24 * time.Hour))
		b := e.waitEnded(t, created.ID)
		require.EqualValues(t, 5, b.RequestCounts.Expired)
		require.Equal(t, start.Add(24*time.Hour).UTC(), b.EndedAt.UTC())
	})
}

// The fault injection of the OpenAI routes applies to the Anthropic ones, in Anthropic's error shape.
func TestMessageBatchFaults(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{})
	const path = "/v1/messages/batches"

	e.srv.SetFaults(emulator.Faults{HTTP429Rate: 1, RetryAfter: 1500 * time.Millisecond})
	resp, body := e.call(t, http.MethodGet, path, nil, nil)
	requireAnthropicError(t, resp, body, http.StatusTooManyRequests, "rate_limit_error")
	require.Equal(t, "2", resp.Header.Get("Retry-After"))

	e.srv.SetFaults(emulator.Faults{HTTP500Rate: 1})
	seen := map[int]bool{}
	for range 20 {
		resp, body = e.call(t, http.MethodGet, path, nil, nil)
		switch resp.StatusCode {
		case http.StatusInternalServerError:
			requireAnthropicError(t, resp, body, resp.StatusCode, "api_error")
		default:
			requireAnthropicError(t, resp, body, 529, "overloaded_error")
		}
		seen[resp.StatusCode] = true
	}
	require.Len(t, seen, 2, "both 500 api_error and 529 overloaded_error")

	// A cut answer on create: the batch exists although the client saw an error, and the SDK does not resend a
	// create it cannot prove unprocessed.
	e.srv.SetFaults(emulator.Faults{ResetRate: 1})
	retrying := anthropic.NewClient(option.WithBaseURL(e.url), option.WithAPIKey(testAnthropicKey), option.WithMaxRetries(2))
	_, err := retrying.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: messageRequests(3)})
	require.Error(t, err)
	e.srv.SetFaults(emulator.Faults{})
	page, err := e.client.Messages.Batches.List(t.Context(), anthropic.MessageBatchListParams{})
	require.NoError(t, err)
	require.Len(t, page.Data, 1, "the lost answer's batch was created")
	st := e.srv.Stats()
	require.Equal(t, 1, st.Anthropic.BatchesCreated)
	require.Equal(t, 1, st.Anthropic.BatchCreates, "the SDK did not resend the create")
	require.Equal(t, 1, st.InjectedResets)
	require.Equal(t, 1, st.Injected429)
	require.Equal(t, 20, st.Injected500)

	// Downloads: cut short, or slowed down.
	id := page.Data[0].ID
	e.waitEnded(t, id)
	e.srv.SetFaults(emulator.Faults{TruncateDownloadRate: 1})
	stream := e.client.Messages.Batches.ResultsStreaming(t.Context(), id, anthropic.MessageBatchResultsParams{})
	for stream.Next() {
	}
	require.Error(t, stream.Err(), "a truncated download is an error, not a short file")
	require.NoError(t, stream.Close())
	e.srv.SetFaults(emulator.Faults{DownloadBytesPerSec: 1 << 20})
	require.Len(t, e.results(t, id), 3)
	st = e.srv.Stats()
	require.Equal(t, 1, st.TruncatedDownloads)
	require.Equal(t, 1, st.ThrottledDownloads)
}

// Prompt caching as Anthropic reports it: with a cache_control breakpoint, the first request writes its prompt
// prefix (cache_creation_input_tokens) and later ones sharing it read it (cache_read_input_tokens); input_tokens
// counts the rest. Without a breakpoint nothing is cached.
func TestMessageBatchPromptCache(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{})
	system := strings.Repeat("You classify reviews. ", 300)[:6000] // 1 500 tokens of shared instructions
	// system + "\n" + "review number N is great" shares 6 001+ bytes, whose last whole 512-byte step is 5 632 bytes:
	// 1 408 tokens.
	const shared = 1408
	reqs := messageRequests(4)
	for i := range reqs {
		reqs[i].Params.System = []anthropic.TextBlockParam{{Text: system, CacheControl: anthropic.NewCacheControlEphemeralParam()}}
	}
	reqs[3].Params.System = []anthropic.TextBlockParam{{Text: system}} // no breakpoint
	b := e.waitEnded(t, e.create(t, reqs).ID)
	type usage struct{ in, written, read int64 }
	got := map[string]usage{}
	for _, r := range e.results(t, b.ID) {
		u := r.Result.AsSucceeded().Message.Usage
		got[r.CustomID] = usage{u.InputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens}
		require.Equal(t, u.CacheCreationInputTokens, u.CacheCreation.Ephemeral5mInputTokens)
		require.EqualValues(t, "batch", u.ServiceTier)
	}
	whole := func(i int) int64 { return emulator.EstimateTokens(system + "\n" + reviewPrompt(i)) }
	require.Equal(t, map[string]usage{
		"req-0": {whole(0) - shared, shared, 0},
		"req-1": {whole(1) - shared, 0, shared},
		"req-2": {whole(2) - shared, 0, shared},
		"req-3": {whole(3), 0, 0},
	}, got)
}

// A batch of 20 000 requests goes through disk, not memory: its body is streamed in without a Content-Length,
// answered and downloaded whole.
func TestMessageBatchLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("sends a 20 000-request batch")
	}
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{PhaseDelay: time.Millisecond})
	const n = 20_000
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriter(pw)
		bw.WriteString(`{"requests":[`)
		for i := range n {
			if i > 0 {
				bw.WriteByte(',')
			}
			fmt.Fprintf(bw, `{"custom_id":"req-%d","params":{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{"role":"user","content":%q}]}}`, i, reviewPrompt(i))
		}
		bw.WriteString(`]}`)
		pw.CloseWithError(bw.Flush())
	}()
	resp, body := e.call(t, http.MethodPost, "/v1/messages/batches", pr, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var created anthropic.MessageBatch
	require.NoError(t, json.Unmarshal(body, &created))
	require.EqualValues(t, n, created.RequestCounts.Processing)

	b := e.waitEnded(t, created.ID)
	require.EqualValues(t, n, b.RequestCounts.Succeeded)
	seen := make(map[string]bool, n)
	stream := e.client.Messages.Batches.ResultsStreaming(t.Context(), b.ID, anthropic.MessageBatchResultsParams{})
	defer stream.Close()
	for stream.Next() {
		seen[stream.Current().CustomID] = true
	}
	require.NoError(t, stream.Err())
	require.Len(t, seen, n)
	rec, ok := e.srv.MessageBatch(b.ID)
	require.True(t, ok)
	require.Len(t, rec.CustomIDs, n)
}
