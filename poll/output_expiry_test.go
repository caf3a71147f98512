package poll_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/poll"
	"github.com/batchctl/batchctl/store"
)

// endedExpiring creates a batch of n requests whose output files expire after (the API's default when 0), tracks it
// as submit does (with the output_expires_after it asked for), waits for the emulator to complete it and records
// its end, which queues its load. It returns the batch ID and the request IDs.
func (e *env) endedExpiring(t *testing.T, prefix string, n int, after time.Duration) (string, []string) {
	t.Helper()
	ctx := context.Background()
	body, ids := requestFile(prefix, "gpt-4o-mini", n)
	f, err := e.api.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(body), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	require.NoError(t, err)
	params := openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h}
	if after > 0 {
		params.OutputExpiresAfter = openai.BatchNewParamsOutputExpiresAfter{Seconds: int64(after / time.Second)}
	}
	b, err := e.api.Batches.New(ctx, params)
	require.NoError(t, err)
	_, err = e.store.TrackBatch(ctx, store.Batch{BatchID: b.ID, Status: store.StatusValidating, Endpoint: "/v1/chat/completions",
		InputFileID: f.ID, Source: "test", OutputExpiresAfter: after})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		rec, _ := e.emu.Batch(b.ID)
		return rec.Status == emulator.StatusCompleted
	}, 30*time.Second, 5*time.Millisecond)
	b, err = e.api.Batches.Get(ctx, b.ID)
	require.NoError(t, err)
	_, err = e.store.UpsertBatch(ctx, batchapi.Row(b))
	require.NoError(t, err)
	return b.ID, ids
}

// counterValue reads a counter (through a registry of its own: the metrics under test may be unregistered).
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c))
	families, err := reg.Gather()
	require.NoError(t, err)
	require.Len(t, families, 1)
	return families[0].GetMetric()[0].GetCounter().GetValue()
}

// loadJob is the state and attempts of batchID's load job.
func (e *env) loadJob(t *testing.T, batchID string) (state string, attempt int) {
	t.Helper()
	require.NoError(t, e.store.Pool().QueryRow(context.Background(), `select state, attempt from `+e.store.Schema()+`.river_job
		where kind = $1 and args->>'batch_id' = $2`, store.LoadResultsArgs{}.Kind(), batchID).Scan(&state, &attempt))
	return state, attempt
}

// A batch whose output expires before any poller runs: the load finds its file gone (404) past the expiry it can
// prove (the batch's end plus the output_expires_after submit asked for), marks the batch's results lost, counts it,
// and stops: one attempt, nothing loaded, and poll --exit-when-done does not wait for it.
func TestOutputExpiredBeforeTheLoad(t *testing.T) {
	t.Parallel()
	// The emulator's clock runs two hours behind while the batch runs, so its output (expiring an hour after it is
	// written) is an hour past its expiry when the clock catches up, before the poller starts.
	var behind atomic.Int64
	behind.Store(int64(2 * time.Hour))
	e := newEnv(t, emulator.Options{Now: func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) }})
	batchID, _ := e.endedExpiring(t, "gone", 20, time.Hour)
	kept, keptIDs := e.endedExpiring(t, "kept", 10, 0)
	behind.Store(0)
	rec, _ := e.emu.Batch(batchID)
	_, err := e.api.Files.Content(context.Background(), rec.OutputFileID)
	require.Error(t, err, "the emulator has expired the output file")

	cfg := e.config(t)
	cfg.Metrics = poll.NewMetrics(nil, e.store, cfg.Logger)
	runUntilDone(t, cfg, 30*time.Second)

	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.NotNil(t, b.ResultsLostAt, "marked: output expired before it was loaded")
	require.Nil(t, b.ResultsLoadedAt, "not marked loaded without its rows")
	require.Nil(t, b.ResultsCount)
	require.Empty(t, e.results(t, batchID))
	require.NotNil(t, b.OutputExpiresAt)
	require.WithinDuration(t, b.EndedAt.Add(time.Hour), *b.OutputExpiresAt, time.Second,
		"the file is gone: the latest it can have expired, its batch's end plus output_expires_after")
	require.EqualValues(t, 1, counterValue(t, cfg.Metrics.OutputExpired))
	state, attempt := e.loadJob(t, batchID)
	require.Equal(t, "cancelled", state, "no retries into 404s")
	require.Equal(t, 1, attempt)

	// The batch beside it, whose files are alive, loads, and records their own expiry: the API's default.
	requireExactResults(t, e, kept, keptIDs)
	k, err := e.store.GetBatch(context.Background(), kept)
	require.NoError(t, err)
	require.Nil(t, k.ResultsLostAt)
	require.NotNil(t, k.OutputExpiresAt)
	keptRec, _ := e.emu.Batch(kept)
	out, ok := e.emu.File(keptRec.OutputFileID)
	require.True(t, ok)
	require.Equal(t, out.ExpiresAt, k.OutputExpiresAt.Unix(), "the file object's expires_at, exactly")
}

// A file that answers 404 before its expiry is not declared expired: it may have been deleted by someone, or not be
// visible yet. The load keeps its old behaviour (loud, retried later) and marks nothing.
func TestOutputGoneBeforeItsExpiryIsNotLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	batchID, _ := e.endedExpiring(t, "deleted", 5, 2*time.Hour)
	rec, _ := e.emu.Batch(batchID)
	_, err := e.api.Files.Delete(context.Background(), rec.OutputFileID)
	require.NoError(t, err)

	cfg := e.config(t)
	cfg.Metrics = poll.NewMetrics(nil, e.store, cfg.Logger)
	cfg.ExitWhenDone = false
	stop := runDaemon(t, cfg)
	notFound := cfg.Metrics.PollErrors.WithLabelValues("download", "not_found")
	require.Eventually(t, func() bool { return counterValue(t, notFound) >= 3 }, 30*time.Second, 20*time.Millisecond,
		"the load waits and tries again")
	require.NoError(t, stop())

	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.Nil(t, b.ResultsLostAt)
	require.Nil(t, b.ResultsLoadedAt)
	require.NotNil(t, b.OutputExpiresAt)
	require.WithinDuration(t, b.EndedAt.Add(2*time.Hour), *b.OutputExpiresAt, time.Second)
	require.Zero(t, counterValue(t, cfg.Metrics.OutputExpired))
}

// Of two loads waiting for one worker, the batch whose output expires soonest is loaded first, though its load was
// queued last.
func TestLoadsSoonestExpiryFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	later, laterIDs := e.endedExpiring(t, "later", 30, 0) // the API's default: 30 days
	soon, soonIDs := e.endedExpiring(t, "soon", 30, time.Hour)

	cfg := e.config(t)
	cfg.Workers = 1
	runUntilDone(t, cfg, time.Minute)

	requireExactResults(t, e, later, laterIDs)
	requireExactResults(t, e, soon, soonIDs)
	l, err := e.store.GetBatch(context.Background(), later)
	require.NoError(t, err)
	s, err := e.store.GetBatch(context.Background(), soon)
	require.NoError(t, err)
	require.True(t, s.ResultsLoadedAt.Before(*l.ResultsLoadedAt), "the batch expiring in an hour went first: loaded %s, the other %s",
		s.ResultsLoadedAt.Format(time.StampMicro), l.ResultsLoadedAt.Format(time.StampMicro))
	rec, _ := e.emu.Batch(soon)
	out, ok := e.emu.File(rec.OutputFileID)
	require.True(t, ok)
	require.Equal(t, out.ExpiresAt, s.OutputExpiresAt.Unix(), "the exact expiry, from the file object")
}
