package emulator_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// Files expire as the API's do: at expires_after when given, after 30 days by default (batch input and output
// alike). An expired file is 404 on retrieve, content and delete, gone from the list, and no batch can use it.
func TestFilesExpire(t *testing.T) {
	t.Parallel()
	start := time.Now()
	var elapsed atomic.Int64
	at := func(d time.Duration) { elapsed.Store(int64(d)) }
	e := newEnv(t, emulator.Options{Now: func() time.Time { return start.Add(time.Duration(elapsed.Load())) }})
	ctx := t.Context()

	short, err := e.client.Files.New(ctx, openai.FileNewParams{
		File: openai.File(bytes.NewReader(chatLines(1, "m")), "short.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch,
		ExpiresAfter: openai.FileNewParamsExpiresAfter{Seconds: 3600},
	})
	require.NoError(t, err)
	require.Equal(t, start.Unix()+3600, short.ExpiresAt)
	long := e.upload(t, chatLines(1, "m"))

	gone := func(id string) {
		t.Helper()
		var apiErr *openai.Error
		_, err := e.client.Files.Get(ctx, id)
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusNotFound, apiErr.StatusCode)
		_, err = e.client.Files.Content(ctx, id)
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusNotFound, apiErr.StatusCode)
		_, err = e.client.Batches.New(ctx, openai.BatchNewParams{InputFileID: id, CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
			Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions})
		require.Error(t, err, "no batch from an expired file")
		page, err := e.client.Files.List(ctx, openai.FileListParams{})
		require.NoError(t, err)
		for _, f := range page.Data {
			require.NotEqual(t, id, f.ID, "an expired file is not listed")
		}
	}
	at(3599 * time.Second)
	_, err = e.client.Files.Get(ctx, short.ID)
	require.NoError(t, err, "alive until its expires_at")
	at(3600 * time.Second)
	gone(short.ID)
	_, err = e.client.Files.Get(ctx, long)
	require.NoError(t, err)
	at(30*24*time.Hour + time.Second)
	gone(long)
}

// A batch's output_expires_after sets when its output and error files expire.
func TestOutputFilesExpire(t *testing.T) {
	t.Parallel()
	start := time.Now()
	var elapsed atomic.Int64
	e := newEnv(t, emulator.Options{Now: func() time.Time { return start.Add(time.Duration(elapsed.Load())) }})
	b, err := e.client.Batches.New(t.Context(), openai.BatchNewParams{InputFileID: e.upload(t, chatLines(3, "m")),
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		OutputExpiresAfter: openai.BatchNewParamsOutputExpiresAfter{Seconds: 7200}})
	require.NoError(t, err)
	b = e.wait(t, b.ID, openai.BatchStatusCompleted)
	out, err := e.client.Files.Get(t.Context(), b.OutputFileID)
	require.NoError(t, err)
	require.InDelta(t, start.Unix()+7200, out.ExpiresAt, 2)
	elapsed.Store(int64(7300 * time.Second))
	_, err = e.client.Files.Content(t.Context(), b.OutputFileID)
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusNotFound, apiErr.StatusCode)
}

// A download that was cut resumes with Range: bytes=N-: 206, Content-Range, and the rest of the body.
func TestContentHonoursRange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	data := chatLines(20, "m")
	id := e.upload(t, data)
	tests := []struct {
		name, rangeHdr string
		status         int
		want           []byte
	}{
		{"rest from an offset", "bytes=100-", http.StatusPartialContent, data[100:]},
		{"the last byte", "bytes=" + strconv.Itoa(len(data)-1) + "-", http.StatusPartialContent, data[len(data)-1:]},
		{"past the end: whole", "bytes=" + strconv.Itoa(len(data)) + "-", http.StatusOK, data},
		{"a range it does not serve: whole", "bytes=0-9", http.StatusOK, data},
		{"no range", "", http.StatusOK, data},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []option.RequestOption
			if tt.rangeHdr != "" {
				opts = append(opts, option.WithHeader("Range", tt.rangeHdr))
			}
			resp, err := e.client.Files.Content(t.Context(), id, opts...)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, tt.status, resp.StatusCode)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, tt.want, body)
			require.EqualValues(t, len(tt.want), resp.ContentLength)
			if tt.status == http.StatusPartialContent {
				require.Equal(t, "bytes "+strconv.Itoa(len(data)-len(tt.want))+"-"+strconv.Itoa(len(data)-1)+"/"+strconv.Itoa(len(data)), resp.Header.Get("Content-Range"))
			}
			require.Equal(t, "bytes", resp.Header.Get("Accept-Ranges"))
		})
	}
	require.Equal(t, 2, e.srv.Stats().RangeDownloads)
}

// An answer never passes the request's output limit: it is cut, with finish_reason "length" (chat, completions) or
// status "incomplete" (responses), and its usage counts only what was sent.
func TestAnswersKeepToTheOutputLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	lines := `{"custom_id":"chat","method":"POST","url":"/v1/chat/completions","body":{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"a review that is long enough to answer at length"}]}}
{"custom_id":"free","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"a review that is long enough to answer at length"}]}}
`
	b := e.submit(t, []byte(lines))
	b = e.wait(t, b.ID, openai.BatchStatusCompleted)
	got := map[string]struct {
		finish string
		out    float64
	}{}
	for _, l := range e.download(t, b.OutputFileID) {
		var body struct {
			Choices []struct {
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage struct {
				CompletionTokens float64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		require.NoError(t, json.Unmarshal(l.Response.Body, &body))
		got[l.CustomID] = struct {
			finish string
			out    float64
		}{body.Choices[0].FinishReason, body.Usage.CompletionTokens}
	}
	require.Equal(t, "length", got["chat"].finish)
	require.EqualValues(t, 2, got["chat"].out)
	require.Equal(t, "stop", got["free"].finish)
	require.Greater(t, got["free"].out, 2.0)
}
