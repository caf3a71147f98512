package emulator_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

func TestBatchLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{PhaseDelay: 30 * time.Millisecond})
	ctx := t.Context()
	const n = 200
	fileID := e.upload(t, chatLines(n, "gpt-4o-mini"))

	b, err := e.client.Batches.New(ctx, openai.BatchNewParams{
		InputFileID: fileID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
		Metadata:         shared.Metadata{"job": "nightly"},
	})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(b.ID, "batch_"), b.ID)
	require.Equal(t, openai.BatchStatusValidating, b.Status)
	require.Equal(t, b.CreatedAt+24*3600, b.ExpiresAt)
	require.Equal(t, "nightly", b.Metadata["job"])
	require.False(t, b.JSON.OutputFileID.Valid(), "output_file_id is null while validating")
	requireBatchShape(t, b.RawJSON())

	// Watch every status on the way, and request_counts growing during in_progress.
	seen := map[openai.BatchStatus]bool{}
	var counts []int64
	for {
		got, err := e.client.Batches.Get(ctx, b.ID)
		require.NoError(t, err)
		requireBatchShape(t, got.RawJSON())
		seen[got.Status] = true
		if got.Status == openai.BatchStatusInProgress {
			counts = append(counts, got.RequestCounts.Completed)
		}
		if got.Status == openai.BatchStatusCompleted {
			b = got
			break
		}
		time.Sleep(time.Millisecond)
	}
	require.True(t, seen[openai.BatchStatusInProgress] && seen[openai.BatchStatusFinalizing], "saw %v", seen)
	require.True(t, slices.IsSorted(counts))
	require.Greater(t, len(slices.Compact(counts)), 2, "request_counts advance during in_progress: %v", counts)

	require.Equal(t, "gpt-4o-mini", b.Model)
	require.Equal(t, int64(n), b.RequestCounts.Total)
	require.Equal(t, int64(n), b.RequestCounts.Completed)
	require.Zero(t, b.RequestCounts.Failed)
	for _, ts := range []int64{b.InProgressAt, b.FinalizingAt, b.CompletedAt} {
		require.GreaterOrEqual(t, ts, b.CreatedAt)
	}
	require.False(t, b.JSON.FailedAt.Valid())
	require.True(t, b.JSON.OutputFileID.Valid())
	require.False(t, b.JSON.ErrorFileID.Valid(), "no error file when nothing failed")
	require.Positive(t, b.Usage.InputTokens)
	require.Positive(t, b.Usage.OutputTokens)
	require.Equal(t, b.Usage.InputTokens+b.Usage.OutputTokens, b.Usage.TotalTokens)

	out, err := e.client.Files.Get(ctx, b.OutputFileID)
	require.NoError(t, err)
	require.Equal(t, openai.FileObjectPurposeBatchOutput, out.Purpose)

	lines := e.download(t, b.OutputFileID)
	ids := customIDs(lines)
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("req-%d", i)
	}
	require.ElementsMatch(t, want, ids, "every request answered exactly once")
	require.NotEqual(t, want, ids, "output order must not follow input order")

	var inTok, outTok int64
	for _, l := range lines {
		require.True(t, strings.HasPrefix(l.ID, "batch_req_"), l.ID)
		require.Nil(t, l.Error)
		require.Equal(t, http.StatusOK, l.Response.StatusCode)
		require.NotEmpty(t, l.Response.RequestID)
		var cc openai.ChatCompletion
		require.NoError(t, json.Unmarshal(l.Response.Body, &cc))
		require.Equal(t, "chat.completion", string(cc.Object))
		require.Equal(t, "gpt-4o-mini", cc.Model)
		i := strings.TrimPrefix(l.CustomID, "req-")
		require.Equal(t, emulator.AnswerText("review number "+i+" is great"), cc.Choices[0].Message.Content)
		require.Positive(t, cc.Usage.PromptTokens)
		require.Equal(t, cc.Usage.PromptTokens+cc.Usage.CompletionTokens, cc.Usage.TotalTokens)
		inTok += cc.Usage.PromptTokens
		outTok += cc.Usage.CompletionTokens
	}
	require.Equal(t, b.Usage.InputTokens, inTok)
	require.Equal(t, b.Usage.OutputTokens, outTok)

	recs := e.srv.Batches()
	require.Len(t, recs, 1)
	require.Equal(t, want, recs[0].CustomIDs, "records keep the input order")
	require.Equal(t, emulator.StatusCompleted, recs[0].Status)
	require.Equal(t, map[string]string{"job": "nightly"}, recs[0].Metadata)
}

func TestEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	tests := []struct {
		endpoint openai.BatchNewParamsEndpoint
		body     string
		check    func(t *testing.T, body json.RawMessage)
	}{
		{openai.BatchNewParamsEndpointV1Embeddings, `{"model":"text-embedding-3-small","input":["a","b"]}`, func(t *testing.T, body json.RawMessage) {
			var r openai.CreateEmbeddingResponse
			require.NoError(t, json.Unmarshal(body, &r))
			require.Len(t, r.Data, 2)
			require.Len(t, r.Data[0].Embedding, emulator.EmbeddingDimensions)
			require.Equal(t, emulator.FakeEmbedding("b"), r.Data[1].Embedding)
		}},
		{openai.BatchNewParamsEndpointV1Responses, `{"model":"gpt-4.1-mini","input":"hello there"}`, func(t *testing.T, body json.RawMessage) {
			var r struct {
				Object string `json:"object"`
				Output []struct {
					Content []struct{ Text string } `json:"content"`
				} `json:"output"`
				Usage struct {
					InputTokens int64 `json:"input_tokens"`
				} `json:"usage"`
			}
			require.NoError(t, json.Unmarshal(body, &r))
			require.Equal(t, "response", r.Object)
			require.Equal(t, emulator.AnswerText("hello there"), r.Output[0].Content[0].Text)
			require.Equal(t, emulator.EstimateTokens("hello there"), r.Usage.InputTokens)
		}},
		{openai.BatchNewParamsEndpointV1Completions, `{"model":"gpt-3.5-turbo-instruct","prompt":"say hi"}`, func(t *testing.T, body json.RawMessage) {
			var r openai.Completion
			require.NoError(t, json.Unmarshal(body, &r))
			require.Equal(t, emulator.AnswerText("say hi"), r.Choices[0].Text)
		}},
		{openai.BatchNewParamsEndpointV1Moderations, `{"model":"omni-moderation-latest","input":["nice day","I will kill it"]}`, func(t *testing.T, body json.RawMessage) {
			var r openai.ModerationNewResponse
			require.NoError(t, json.Unmarshal(body, &r))
			require.Len(t, r.Results, 2)
			require.False(t, r.Results[0].Flagged)
			require.True(t, r.Results[1].Flagged)
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.endpoint), func(t *testing.T) {
			t.Parallel()
			line := fmt.Sprintf(`{"custom_id":"one","method":"POST","url":%q,"body":%s}`+"\n", tt.endpoint, tt.body)
			b := e.create(t, e.upload(t, []byte(line)), tt.endpoint)
			b = e.wait(t, b.ID, openai.BatchStatusCompleted, openai.BatchStatusFailed)
			require.Equal(t, openai.BatchStatusCompleted, b.Status, b.RawJSON())
			lines := e.download(t, b.OutputFileID)
			require.Len(t, lines, 1)
			require.Equal(t, http.StatusOK, lines[0].Response.StatusCode)
			tt.check(t, lines[0].Response.Body)
		})
	}
}

func TestBatchList(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{PhaseDelay: time.Hour})
	fileID := e.upload(t, chatLines(1, "m"))
	var ids []string
	for range 7 {
		ids = append(ids, e.create(t, fileID, openai.BatchNewParamsEndpointV1ChatCompletions).ID)
	}
	slices.Reverse(ids) // newest first

	page, err := e.client.Batches.List(t.Context(), openai.BatchListParams{Limit: openai.Int(3)})
	require.NoError(t, err)
	requireListShape(t, page.RawJSON(), requireBatchShape)
	var got []string
	var pages int
	for page != nil && len(page.Data) > 0 {
		pages++
		m := rawMap(t, page.RawJSON())
		require.Equal(t, page.Data[0].ID, m["first_id"])
		require.Equal(t, page.Data[len(page.Data)-1].ID, m["last_id"])
		require.Equal(t, pages < 3, page.HasMore)
		for _, b := range page.Data {
			got = append(got, b.ID)
		}
		page, err = page.GetNextPage()
		require.NoError(t, err)
	}
	require.Equal(t, ids, got)
	require.Equal(t, 3, pages)

	page, err = e.client.Batches.List(t.Context(), openai.BatchListParams{After: openai.String(ids[5])})
	require.NoError(t, err)
	require.Len(t, page.Data, 1)
	require.Equal(t, ids[6], page.Data[0].ID)
	require.False(t, page.HasMore)

	for _, limit := range []int64{0, 101} {
		_, err = e.client.Batches.List(t.Context(), openai.BatchListParams{Limit: openai.Int(limit)})
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
		require.Equal(t, "limit", apiErr.Param)
	}
	require.Equal(t, 3+1+2, e.srv.Stats().BatchLists)

	page, err = e.client.Batches.List(t.Context(), openai.BatchListParams{After: openai.String(ids[6])})
	require.NoError(t, err)
	require.Empty(t, page.Data)
	require.Nil(t, rawMap(t, page.RawJSON())["first_id"])
}

func TestCreateRejects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{PhaseDelay: time.Hour})
	fileID := e.upload(t, chatLines(1, "m"))
	userFile, err := e.client.Files.New(t.Context(), openai.FileNewParams{
		File: openai.File(strings.NewReader("x"), "x.txt", "text/plain"), Purpose: openai.FilePurposeUserData,
	})
	require.NoError(t, err)
	tooMany := shared.Metadata{}
	for i := range 17 {
		tooMany[fmt.Sprint("k", i)] = "v"
	}
	tests := []struct {
		name   string
		params openai.BatchNewParams
		status int
		param  string
	}{
		{"unknown file", openai.BatchNewParams{InputFileID: "file-nope", Endpoint: "/v1/chat/completions", CompletionWindow: "24h"}, 404, "input_file_id"},
		{"wrong purpose", openai.BatchNewParams{InputFileID: userFile.ID, Endpoint: "/v1/chat/completions", CompletionWindow: "24h"}, 400, "input_file_id"},
		{"bad endpoint", openai.BatchNewParams{InputFileID: fileID, Endpoint: "/v1/nope", CompletionWindow: "24h"}, 400, "endpoint"},
		{"bad window", openai.BatchNewParams{InputFileID: fileID, Endpoint: "/v1/chat/completions", CompletionWindow: "1h"}, 400, "completion_window"},
		{"17 metadata pairs", openai.BatchNewParams{InputFileID: fileID, Endpoint: "/v1/chat/completions", CompletionWindow: "24h", Metadata: tooMany}, 400, "metadata"},
		{"long metadata key", openai.BatchNewParams{InputFileID: fileID, Endpoint: "/v1/chat/completions", CompletionWindow: "24h",
			Metadata: shared.Metadata{strings.Repeat("k", 65): "v"}}, 400, "metadata"},
		{"long metadata value", openai.BatchNewParams{InputFileID: fileID, Endpoint: "/v1/chat/completions", CompletionWindow: "24h",
			Metadata: shared.Metadata{"k": strings.Repeat("v", 513)}}, 400, "metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.client.Batches.New(t.Context(), tt.params)
			var apiErr *openai.Error
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, tt.status, apiErr.StatusCode)
			require.Equal(t, tt.param, apiErr.Param)
			require.Equal(t, "invalid_request_error", apiErr.Type)
		})
	}
	// The limits themselves are accepted.
	ok := shared.Metadata{strings.Repeat("k", 64): strings.Repeat("v", 512)}
	for i := range 15 {
		ok[fmt.Sprint("k", i)] = "v"
	}
	_, err = e.client.Batches.New(t.Context(), openai.BatchNewParams{InputFileID: fileID, Endpoint: "/v1/chat/completions", CompletionWindow: "24h", Metadata: ok})
	require.NoError(t, err)
	require.Len(t, e.srv.Batches(), 1)
}

func TestValidationFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{MaxRequestsPerFile: 3})
	line := func(id, url, model string) string {
		return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":%q,"body":{"model":%q,"messages":[]}}`, id, url, model)
	}
	const chat = "/v1/chat/completions"
	tests := []struct {
		name  string
		lines []string
		code  string
		line  int64
		param string
	}{
		{"bad json", []string{line("a", chat, "m"), `{"custom_id":`}, emulator.CodeInvalidJSONLine, 2, ""},
		{"duplicate custom_id", []string{line("a", chat, "m"), line("b", chat, "m"), line("a", chat, "m")}, emulator.CodeDuplicateCustomID, 3, "custom_id"},
		{"wrong url", []string{line("a", "/v1/embeddings", "m")}, emulator.CodeInvalidURL, 1, "url"},
		{"mixed models", []string{line("a", chat, "m1"), line("b", chat, "m2")}, emulator.CodeMismatchedModel, 2, "body.model"},
		{"too many lines", []string{line("a", chat, "m"), line("b", chat, "m"), line("c", chat, "m"), line("d", chat, "m")}, emulator.CodeTooManyRequests, 4, "input_file_id"},
		{"missing model", []string{`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}`}, emulator.CodeMissingRequiredParameter, 1, "body.model"},
		{"GET method", []string{`{"custom_id":"a","method":"GET","url":"/v1/chat/completions","body":{"model":"m"}}`}, emulator.CodeInvalidMethod, 1, "method"},
		{"missing custom_id", []string{`{"method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`}, emulator.CodeMissingRequiredParameter, 1, "custom_id"},
		{"empty file", []string{}, emulator.CodeEmptyFile, 0, "input_file_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data := strings.Join(tt.lines, "\n")
			if data == "" {
				data = "\n"
			}
			b := e.submit(t, []byte(data))
			b = e.wait(t, b.ID, openai.BatchStatusFailed, openai.BatchStatusCompleted)
			require.Equal(t, openai.BatchStatusFailed, b.Status)
			requireBatchShape(t, b.RawJSON())
			require.Positive(t, b.FailedAt)
			require.False(t, b.JSON.OutputFileID.Valid())
			require.False(t, b.JSON.InProgressAt.Valid())
			require.Equal(t, "list", b.Errors.Object)
			require.NotEmpty(t, b.Errors.Data)
			got := b.Errors.Data[0]
			require.Equal(t, tt.code, got.Code)
			require.NotEmpty(t, got.Message)
			require.Equal(t, tt.param, got.Param)
			if tt.line == 0 {
				require.False(t, got.JSON.Line.Valid(), "line is null")
			} else {
				require.Equal(t, tt.line, got.Line)
			}
		})
	}

	t.Run("each error names its own line", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, emulator.Options{})
		lines := []string{line("a", chat, "m"), `{"custom_id":`, line("c", chat, "m"), line("d", chat, "m"),
			`{"custom_id":"e","method":"POST","url":"/v1/chat/completions","body":{}}`, line("f", chat, "m")}
		b := e.submit(t, []byte(strings.Join(lines, "\n")+"\n"))
		b = e.wait(t, b.ID, openai.BatchStatusFailed, openai.BatchStatusCompleted)
		require.Equal(t, openai.BatchStatusFailed, b.Status)
		var got []int64
		for _, d := range b.Errors.Data {
			got = append(got, d.Line)
		}
		require.Equal(t, []int64{2, 5}, got, "not the file's last line for both")
		require.Equal(t, emulator.CodeInvalidJSONLine, b.Errors.Data[0].Code)
		require.Equal(t, emulator.CodeMissingRequiredParameter, b.Errors.Data[1].Code)
	})

	t.Run("file too large", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, emulator.Options{MaxFileBytes: 100})
		b := e.submit(t, chatLines(2, "m"))
		b = e.wait(t, b.ID, openai.BatchStatusFailed)
		require.Equal(t, emulator.CodeFileTooLarge, b.Errors.Data[0].Code)
	})
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{PhaseDelay: 200 * time.Millisecond})
	const n = 100
	b := e.submit(t, chatLines(n, "m"))
	// Wait until some requests are answered, then cancel.
	for {
		got, err := e.client.Batches.Get(t.Context(), b.ID)
		require.NoError(t, err)
		if got.RequestCounts.Completed > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c, err := e.client.Batches.Cancel(t.Context(), b.ID)
	require.NoError(t, err)
	require.Equal(t, openai.BatchStatusCancelling, c.Status)
	require.Positive(t, c.CancellingAt)
	requireBatchShape(t, c.RawJSON())

	b = e.wait(t, b.ID, openai.BatchStatusCancelled)
	require.Positive(t, b.CancelledAt)
	out := e.download(t, b.OutputFileID)
	errs := e.download(t, b.ErrorFileID)
	require.NotEmpty(t, out, "partial output")
	require.NotEmpty(t, errs, "the rest is reported")
	require.Len(t, append(customIDs(out), customIDs(errs)...), n)
	for _, l := range errs {
		require.Nil(t, l.Response)
		require.Equal(t, emulator.CodeBatchCancelled, l.Error.Code)
	}
	require.Equal(t, int64(len(out)), b.RequestCounts.Completed)

	// Cancelling again is harmless; cancelling a finished batch is refused.
	again, err := e.client.Batches.Cancel(t.Context(), b.ID)
	require.NoError(t, err)
	require.Equal(t, openai.BatchStatusCancelled, again.Status)

	done := e.submit(t, chatLines(1, "m"))
	_, err = e.client.Batches.Cancel(t.Context(), "batch_missing")
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusNotFound, apiErr.StatusCode)

	t.Run("while validating", func(t *testing.T) {
		c, err := e.client.Batches.Cancel(t.Context(), done.ID)
		require.NoError(t, err)
		require.Equal(t, openai.BatchStatusCancelling, c.Status)
		got := e.wait(t, done.ID, openai.BatchStatusCancelled)
		require.False(t, got.JSON.OutputFileID.Valid())
		require.False(t, got.JSON.ErrorFileID.Valid())
		_, err = e.client.Batches.Cancel(t.Context(), done.ID)
		require.NoError(t, err)
	})
}

func TestCancelCompletedRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	b := e.submit(t, chatLines(1, "m"))
	e.wait(t, b.ID, openai.BatchStatusCompleted)
	_, err := e.client.Batches.Cancel(t.Context(), b.ID)
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	const n = 40
	check := func(t *testing.T, e *env, id string, answered int) {
		t.Helper()
		b := e.wait(t, id, openai.BatchStatusExpired, openai.BatchStatusCompleted)
		require.Equal(t, openai.BatchStatusExpired, b.Status)
		requireBatchShape(t, b.RawJSON())
		require.Positive(t, b.ExpiredAt)
		require.False(t, b.JSON.CompletedAt.Valid())
		out := e.download(t, b.OutputFileID)
		errs := e.download(t, b.ErrorFileID)
		require.Len(t, out, answered)
		require.Len(t, errs, n-answered)
		for _, l := range errs {
			require.Equal(t, emulator.CodeBatchExpired, l.Error.Code)
			require.Nil(t, l.Response)
		}
		all := append(customIDs(out), customIDs(errs)...)
		slices.Sort(all)
		require.Len(t, slices.Compact(all), n)
	}

	t.Run("rate", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, emulator.Options{ExpireRate: 1, ExpireCompletedShare: 0.25})
		b := e.submit(t, chatLines(n, "m"))
		check(t, e, b.ID, 10)
		require.Equal(t, 1, e.srv.Stats().ExpiredBatches)
	})
	t.Run("ExpireBatch", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, emulator.Options{ExpireCompletedShare: 0.5, PhaseDelay: 50 * time.Millisecond})
		b := e.submit(t, chatLines(n, "m"))
		require.NoError(t, e.srv.ExpireBatch(b.ID))
		check(t, e, b.ID, 20)
		require.Error(t, e.srv.ExpireBatch(b.ID), "a finished batch cannot expire")
		require.Error(t, e.srv.ExpireBatch("batch_missing"))
	})
	t.Run("24h passed", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		var calls int
		clock := func() time.Time {
			calls++
			if calls > 3 { // creation and the moves to in_progress happen on day one
				return start.Add(25 * time.Hour)
			}
			return start
		}
		e := newEnv(t, emulator.Options{Now: syncClock(clock)})
		b := e.submit(t, chatLines(n, "m"))
		check(t, e, b.ID, 0)
	})
}

// syncClock serialises a test clock: the emulator reads it from several goroutines.
func syncClock(f func() time.Time) func() time.Time {
	ch := make(chan struct{}, 1)
	ch <- struct{}{}
	return func() time.Time {
		<-ch
		defer func() { ch <- struct{}{} }()
		return f()
	}
}

func TestTokenLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{PhaseDelay: 100 * time.Millisecond, TokenLimitPerModel: map[string]int64{"gpt-4o-mini": 300}})
	data := chatLines(20, "gpt-4o-mini") // about 200 prompt tokens
	first := e.submit(t, data)
	e.wait(t, first.ID, openai.BatchStatusInProgress)
	second := e.submit(t, data)
	second = e.wait(t, second.ID, openai.BatchStatusFailed, openai.BatchStatusCompleted)
	require.Equal(t, openai.BatchStatusFailed, second.Status)
	require.Equal(t, emulator.CodeTokenLimitExceeded, second.Errors.Data[0].Code)
	requireBatchShape(t, second.RawJSON())

	// Once the first batch is done its tokens leave the queue.
	e.wait(t, first.ID, openai.BatchStatusCompleted)
	third := e.submit(t, data)
	third = e.wait(t, third.ID, openai.BatchStatusFailed, openai.BatchStatusCompleted)
	require.Equal(t, openai.BatchStatusCompleted, third.Status)

	other := e.submit(t, chatLines(100, "gpt-4o"))
	other = e.wait(t, other.ID, openai.BatchStatusFailed, openai.BatchStatusCompleted)
	require.Equal(t, openai.BatchStatusCompleted, other.Status, "other models are not limited")
	require.Equal(t, 1, e.srv.Stats().TokenLimitFailures)
}

func TestLargeFileStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 20 000-line file")
	}
	t.Parallel()
	e := newEnv(t, emulator.Options{PhaseDelay: time.Millisecond})
	const n = 20_000
	b := e.submit(t, chatLines(n, "m"))
	b = e.wait(t, b.ID, openai.BatchStatusCompleted)
	resp, err := e.client.Files.Content(t.Context(), b.OutputFileID)
	require.NoError(t, err)
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	require.NoError(t, err)
	require.Equal(t, n, bytes.Count(buf.Bytes(), []byte("\n")))
	rec, ok := e.srv.Batch(b.ID)
	require.True(t, ok)
	require.Len(t, rec.CustomIDs, n)
}

func TestBatchCreatesPerHourCap(t *testing.T) {
	t.Parallel()
	start := time.Now()
	var elapsed atomic.Int64 // the test clock: start plus this
	at := func(d time.Duration) { elapsed.Store(int64(d)) }
	e := newEnv(t, emulator.Options{PhaseDelay: time.Hour, MaxBatchCreatesPerHour: 2,
		Now: func() time.Time { return start.Add(time.Duration(elapsed.Load())) }})
	fileID := e.upload(t, chatLines(1, "m"))
	create := func() error {
		_, err := e.client.Batches.New(t.Context(), openai.BatchNewParams{InputFileID: fileID,
			Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
		return err
	}
	refused := func(wantWait time.Duration) {
		t.Helper()
		var apiErr *openai.Error
		require.ErrorAs(t, create(), &apiErr)
		require.Equal(t, http.StatusTooManyRequests, apiErr.StatusCode)
		require.Equal(t, "rate_limit_exceeded", apiErr.Code)
		require.Contains(t, apiErr.Message, "at most 2 batches an hour")
		require.Equal(t, strconv.FormatInt(wantWait.Milliseconds(), 10), apiErr.Response.Header.Get("Retry-After-Ms"))
	}

	require.NoError(t, create())
	at(10 * time.Minute)
	require.NoError(t, create())
	at(20 * time.Minute)
	refused(40 * time.Minute) // until the first creation is an hour old
	at(time.Hour + time.Second)
	require.NoError(t, create(), "the first creation has left the window")
	refused(10*time.Minute - time.Second)
	require.Equal(t, 2, e.srv.Stats().CreatesLimited)
	require.Len(t, e.srv.Batches(), 3)

	unlimited := newEnv(t, emulator.Options{MaxBatchCreatesPerHour: -1})
	for range 3 {
		unlimited.submit(t, chatLines(1, "m"))
	}
	require.Zero(t, unlimited.srv.Stats().CreatesLimited)
}
