package emulator_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

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
