package emulator_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
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
