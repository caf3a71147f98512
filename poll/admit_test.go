package poll_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/poll"
	"github.com/batchctl/batchctl/store"
)

// enqueueUpload uploads n requests of size bytes of text for model and queues the file as intent, with an estimate
// of twice the emulator's count. It returns the emulator's count.
func (e *env) enqueueUpload(t *testing.T, intent, model string, n, size int) int64 {
	t.Helper()
	ctx := context.Background()
	var buf bytes.Buffer
	var tokens int64
	for i := range n {
		text := fmt.Sprintf("%s %d ", intent, i) + strings.Repeat("y", size)
		tokens += emulator.EstimateTokens(text)
		fmt.Fprintf(&buf, `{"custom_id":"%s-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":%q}]}}`+"\n",
			intent, i, model, text)
	}
	f, err := e.api.Files.New(ctx, openai.FileNewParams{File: openai.File(&buf, intent+".jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	require.NoError(t, err)
	_, err = e.store.Enqueue(ctx, store.QueuedBatch{Intent: intent, Model: model, Endpoint: "/v1/chat/completions",
		InputFileID: f.ID, Source: intent + ".jsonl", SpoolSHA256: "sha-" + intent, Requests: n, EstimatedTokens: 2 * tokens})
	require.NoError(t, err)
	return tokens
}

// TestPollerAdmitsTheQueueWithinTheQuota: a poller started with an empty batch table and a queue four times the
// quota does not exit (--exit-when-done) while batches wait; its periodic and after-load admission passes create
// them all, once each and none past the limit, and it exits once every one is loaded. The loads calibrate the
// estimate, and the metrics show the quota.
func TestPollerAdmitsTheQueueWithinTheQuota(t *testing.T) {
	t.Parallel()
	const limit = 1000
	e := newEnv(t, emulator.Options{TokenLimitPerModel: map[string]int64{"gpt-4o-mini": limit}})
	ctx := context.Background()
	require.NoError(t, e.store.SetQuota(ctx, "gpt-4o-mini", limit))
	var sum int64
	for i := range 8 {
		sum += e.enqueueUpload(t, fmt.Sprintf("intent-%d", i), "gpt-4o-mini", 5, 360)
	}
	require.Greater(t, sum, int64(3*limit))

	cfg := e.config(t)
	reg := prometheus.NewRegistry()
	cfg.Metrics = poll.NewMetrics(reg, e.store, cfg.Logger)
	runUntilDone(t, cfg, 2*time.Minute)

	require.Zero(t, e.emu.Stats().TokenLimitFailures)
	perIntent := map[string]int{}
	for _, b := range e.emu.Batches() {
		perIntent[b.Metadata["batchctl_intent"]]++
	}
	require.Len(t, perIntent, 8)
	for i := range 8 {
		intent := fmt.Sprintf("intent-%d", i)
		require.Equal(t, 1, perIntent[intent], intent)
		q, err := e.store.QueuedBatch(ctx, intent)
		require.NoError(t, err)
		require.Equal(t, store.QueueCreated, q.State)
		b, err := e.store.GetBatch(ctx, q.BatchID)
		require.NoError(t, err)
		require.NotNil(t, b.ResultsLoadedAt, "loaded before the poller exited")
		require.Equal(t, store.StatusCompleted, b.Status)
	}

	report, err := e.store.QuotaReport(ctx)
	require.NoError(t, err)
	require.Len(t, report, 1)
	ratio, ok := report[0].Calibration.Ratio()
	require.True(t, ok)
	require.InDelta(t, 0.5, ratio, 0.01, "the estimate was twice the real count")
	require.Zero(t, report[0].QueuedBatches)
	require.Zero(t, report[0].InflightTokens)

	families, err := reg.Gather()
	require.NoError(t, err)
	seen := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if m.GetGauge() == nil {
				continue // counters by model too (batchctl_cost_usd_total): the gauges are what this test checks
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" && l.GetValue() == "gpt-4o-mini" {
					seen[f.GetName()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	require.Equal(t, map[string]float64{"batchctl_quota_tokens": limit, "batchctl_queued_batches": 0,
		"batchctl_queued_tokens": 0, "batchctl_inflight_estimated_tokens": 0}, seen)
}

// syncBuffer is a bytes.Buffer safe for the daemon's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTokenLimitFailureWithoutQuotaSuggestsOne: a batch the API failed with token_limit_exceeded, for a model that
// has no quota, is loaded with a warning naming the command that would have made it wait instead.
func TestTokenLimitFailureWithoutQuotaSuggestsOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{TokenLimitPerModel: map[string]int64{"gpt-4o-mini": 5}})
	body, _ := requestFile("big", "gpt-4o-mini", 10)
	batchID := e.submit(t, body)

	var logs syncBuffer
	cfg := e.config(t)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	runUntilDone(t, cfg, time.Minute)

	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, b.Status)
	require.Contains(t, string(b.Errors), "token_limit_exceeded")
	require.Contains(t, logs.String(), "batch failed token_limit_exceeded and its model has no quota")
	require.Contains(t, logs.String(), "batchctl quota set gpt-4o-mini TOKENS")
}
