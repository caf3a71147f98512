package emulator_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// responseLog records the status and Retry-After of every response the client received, retries included.
type responseLog struct {
	mu         sync.Mutex
	statuses   []int
	retryAfter []string
}

func (l *responseLog) middleware(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	resp, err := next(req)
	if resp != nil {
		l.mu.Lock()
		l.statuses = append(l.statuses, resp.StatusCode)
		l.retryAfter = append(l.retryAfter, resp.Header.Get("Retry-After"))
		l.mu.Unlock()
	}
	return resp, err
}

func TestFault429(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{HTTP429Rate: 1})
	_, err := e.client.Batches.List(t.Context(), openai.BatchListParams{})
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusTooManyRequests, apiErr.StatusCode)
	require.Equal(t, "rate_limit_exceeded", apiErr.Code)
	require.Equal(t, "1", apiErr.Response.Header.Get("Retry-After"))
	require.Equal(t, "1", apiErr.Response.Header.Get("Retry-After-Ms"))

	// Half the calls refused: the SDK's retries, honouring Retry-After, get every call through.
	var log responseLog
	e.srv.SetFaults(emulator.Faults{HTTP429Rate: 0.5, RetryAfter: time.Millisecond})
	client := openai.NewClient(option.WithBaseURL(e.http.URL+"/v1"), option.WithAPIKey("k"),
		option.WithMaxRetries(20), option.WithMiddleware(log.middleware))
	for range 20 {
		_, err := client.Batches.List(t.Context(), openai.BatchListParams{})
		require.NoError(t, err)
	}
	st := e.srv.Stats()
	require.Greater(t, st.Injected429, 1)
	require.Equal(t, 20+st.Injected429, st.BatchLists, "every attempt is counted")
	require.Contains(t, log.statuses, http.StatusTooManyRequests)
	for i, s := range log.statuses {
		if s == http.StatusTooManyRequests {
			require.Equal(t, "1", log.retryAfter[i])
		}
	}
}

func TestFault500(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{HTTP500Rate: 1})
	_, err := e.client.Files.New(t.Context(), openai.FileNewParams{
		File: openai.File(bytes.NewReader(chatLines(1, "m")), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch,
	})
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusInternalServerError, apiErr.StatusCode)
	require.Equal(t, "server_error", apiErr.Type)
	require.Empty(t, e.srv.Files(), "a 500 has no side effect")
	require.Equal(t, 1, e.srv.Stats().Injected500)
}

func TestFaultReset(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	fileID := e.upload(t, chatLines(2, "m"))

	e.srv.SetFaults(emulator.Faults{ResetRate: 1})
	_, err := e.client.Batches.New(t.Context(), openai.BatchNewParams{
		InputFileID: fileID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: "24h",
	})
	require.Error(t, err)
	var apiErr *openai.Error
	require.False(t, errors.As(err, &apiErr), "a cut connection is not an API error: %v", err)
	require.Len(t, e.srv.Batches(), 1, "the call took effect before the connection was cut")

	_, err = e.client.Files.Content(t.Context(), fileID)
	require.Error(t, err)
	require.Equal(t, 2, e.srv.Stats().InjectedResets)

	// Faults off: the pipeline goes on.
	e.srv.SetFaults(emulator.Faults{})
	b := e.create(t, fileID, openai.BatchNewParamsEndpointV1ChatCompletions)
	e.wait(t, b.ID, openai.BatchStatusCompleted)
	require.Len(t, e.srv.Batches(), 2)
}

func TestFaultTruncatedDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{TruncateDownloadRate: 1})
	data := chatLines(50, "m")
	fileID := e.upload(t, data)
	resp, err := e.client.Files.Content(t.Context(), fileID)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, int64(len(data)), resp.ContentLength, "Content-Length announces the full size")
	body, err := io.ReadAll(resp.Body)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.Less(t, len(body), len(data))
	require.Equal(t, data[:len(body)], body)
	require.Equal(t, 1, e.srv.Stats().TruncatedDownloads)
}

func TestFaultSlowDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{DownloadBytesPerSec: 40_000})
	data := chatLines(40, "m") // about 8 kB: 0.2 s at 40 kB/s
	fileID := e.upload(t, data)
	start := time.Now()
	resp, err := e.client.Files.Content(t.Context(), fileID)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, data, body)
	require.Greater(t, time.Since(start), 120*time.Millisecond)
	require.Equal(t, 1, e.srv.Stats().ThrottledDownloads)
}

func TestFaultRequestFailures(t *testing.T) {
	t.Parallel()
	const n = 400
	run := func(t *testing.T, seed int64) (failedIDs []string, b *openai.Batch, out, errs []outputLine) {
		e := newEnv(t, emulator.Options{Seed: seed, RequestFailRate: 0.3})
		b = e.submit(t, chatLines(n, "m"))
		b = e.wait(t, b.ID, openai.BatchStatusCompleted)
		out, errs = e.download(t, b.OutputFileID), e.download(t, b.ErrorFileID)
		for _, l := range append(append([]outputLine{}, out...), errs...) {
			if l.Response == nil || l.Response.StatusCode != http.StatusOK {
				failedIDs = append(failedIDs, l.CustomID)
			}
		}
		require.Equal(t, int64(len(failedIDs)), int64(e.srv.Stats().FailedRequests))
		return failedIDs, b, out, errs
	}
	failed, b, out, errs := run(t, 7)
	require.Len(t, append(customIDs(out), customIDs(errs)...), n)
	require.InDelta(t, 0.3*n, len(failed), 0.1*n)
	require.Equal(t, int64(len(failed)), b.RequestCounts.Failed)
	require.Equal(t, int64(n-len(failed)), b.RequestCounts.Completed)

	var nonOKInOutput, nullResponse, nonOKInErrors int
	for _, l := range out {
		if l.Response.StatusCode != http.StatusOK {
			nonOKInOutput++
			require.Nil(t, l.Error)
		}
	}
	for _, l := range errs {
		switch {
		case l.Response == nil:
			nullResponse++
			require.Equal(t, "server_error", l.Error.Code)
		default:
			nonOKInErrors++
			require.NotEqual(t, http.StatusOK, l.Response.StatusCode)
			require.Contains(t, string(l.Response.Body), `"error"`)
		}
	}
	require.Positive(t, nonOKInOutput, "some non-200 answers land in the output file")
	require.Positive(t, nullResponse, "some failures carry only an error object")
	require.Positive(t, nonOKInErrors, "some non-200 answers land in the error file")

	again, _, _, _ := run(t, 7)
	require.ElementsMatch(t, failed, again, "the seed decides which requests fail")
}

// TestFaultLateOutputFile: a completed batch first reports a null output_file_id, then, LateOutputFile later, the
// file it had all along.
func TestFaultLateOutputFile(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{LateOutputFile: 500 * time.Millisecond})
	b := e.submit(t, chatLines(5, "m"))
	b = e.wait(t, b.ID, openai.BatchStatusCompleted)
	require.Empty(t, b.OutputFileID, "completed, and no output file yet")
	require.EqualValues(t, 5, b.RequestCounts.Completed)
	require.Eventually(t, func() bool {
		got, err := e.client.Batches.Get(t.Context(), b.ID)
		require.NoError(t, err)
		return got.OutputFileID != ""
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, e.srv.Stats().LateOutputFiles)
}
