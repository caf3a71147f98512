package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/store"
)

// loadWithUsage tracks an ended batch and commits a load of n rows with the usage given.
func loadWithUsage(t *testing.T, s *store.Store, b store.Batch, n int, u store.Usage) {
	t.Helper()
	ctx := context.Background()
	b.Status = store.StatusCompleted
	_, err := s.TrackBatch(ctx, b)
	require.NoError(t, err)
	l, err := s.BeginLoad(ctx, b.BatchID, false)
	require.NoError(t, err)
	_, err = l.CopyResults(ctx, newSliceSource(results(b.BatchID, n)))
	require.NoError(t, err)
	require.NoError(t, l.MarkLoaded(ctx, u))
}

func i64(v int64) *int64   { return &v }
func str(v string) *string { return &v }

// TestMarkLoadedStoresCost: cached and reasoning tokens and the cost are stored with the load, exactly (numeric, 12
// decimals), and read back; a reload sets them again rather than adding.
func TestMarkLoadedStoresCost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	u := store.Usage{PromptTokens: i64(3000), CompletionTokens: i64(40), TotalTokens: i64(3040), CachedTokens: i64(1024),
		ReasoningTokens: i64(7), CostUSD: str("0.000156480000")}
	loadWithUsage(t, s, store.Batch{BatchID: "batch_c", Model: "gpt-4o-mini"}, 2, u)
	for range 2 { // reloads
		l, err := s.BeginLoad(ctx, "batch_c", true)
		require.NoError(t, err)
		require.NoError(t, l.MarkLoaded(ctx, u))
	}
	got, err := s.GetBatch(ctx, "batch_c")
	require.NoError(t, err)
	require.Equal(t, int64(1024), *got.Usage.CachedTokens)
	require.Equal(t, int64(7), *got.Usage.ReasoningTokens)
	require.Equal(t, "0.000156480000", *got.Usage.CostUSD)

	loadWithUsage(t, s, store.Batch{BatchID: "batch_unpriced", Model: "mystery"}, 1,
		store.Usage{PromptTokens: i64(5), CompletionTokens: i64(1), TotalTokens: i64(6), CachedTokens: i64(0), ReasoningTokens: i64(0)})
	got, err = s.GetBatch(ctx, "batch_unpriced")
	require.NoError(t, err)
	require.Nil(t, got.Usage.CostUSD, "unknown cost stays null, never 0")
}

// TestCostReport: groups sum tokens and cost exactly; a group with an unpriced batch has no cost (never a partial
// sum); a batch loaded without usage costs 0; unloaded batches and those before --since are left out.
func TestCostReport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	day1 := time.Date(2026, 3, 1, 23, 30, 0, 0, time.UTC)
	day2 := day1.Add(2 * time.Hour)
	usage := func(in, cached, out int64, cost *string) store.Usage {
		return store.Usage{PromptTokens: &in, CompletionTokens: &out, TotalTokens: i64(in + out), CachedTokens: &cached,
			ReasoningTokens: i64(0), CostUSD: cost}
	}
	loadWithUsage(t, s, store.Batch{BatchID: "b1", Model: "gpt-4o-mini", Source: "a.jsonl", CreatedAt: day1}, 3,
		usage(100, 0, 10, str("0.000000000001")))
	loadWithUsage(t, s, store.Batch{BatchID: "b2", Model: "gpt-4o-mini", Source: "b.jsonl", CreatedAt: day2}, 2,
		usage(200, 128, 20, str("0.100000000002")))
	loadWithUsage(t, s, store.Batch{BatchID: "b3", Model: "mystery", Source: "a.jsonl", CreatedAt: day2}, 1,
		usage(5, 0, 1, nil))
	loadWithUsage(t, s, store.Batch{BatchID: "b4", Model: "gpt-4o", Source: "b.jsonl", CreatedAt: day2}, 4, store.Usage{})
	_, err := s.TrackBatch(ctx, store.Batch{BatchID: "b5", Status: store.StatusInProgress, Model: "gpt-4o-mini", CreatedAt: day2})
	require.NoError(t, err)

	byModel, err := s.CostReport(ctx, store.CostByModel, time.Time{})
	require.NoError(t, err)
	require.Equal(t, []store.CostGroup{
		{Key: "gpt-4o", Batches: 1, Requests: 4, CostUSD: str("0")},
		{Key: "gpt-4o-mini", Batches: 2, Requests: 5, InputTokens: 300, CachedTokens: 128, OutputTokens: 30, CostUSD: str("0.100000000003")},
		{Key: "mystery", Batches: 1, Requests: 1, InputTokens: 5, OutputTokens: 1, Unpriced: 1},
	}, byModel)

	byDay, err := s.CostReport(ctx, store.CostByDay, time.Time{})
	require.NoError(t, err)
	require.Len(t, byDay, 2)
	require.Equal(t, "2026-03-01", byDay[0].Key)
	require.Equal(t, "0.000000000001", *byDay[0].CostUSD)
	require.Equal(t, "2026-03-02", byDay[1].Key)
	require.Nil(t, byDay[1].CostUSD, "b3 has no price: the day's cost is unknown")

	bySource, err := s.CostReport(ctx, store.CostBySource, day2)
	require.NoError(t, err)
	require.Equal(t, []string{"a.jsonl", "b.jsonl"}, []string{bySource[0].Key, bySource[1].Key})
	require.Nil(t, bySource[0].CostUSD)
	require.Equal(t, "0.100000000002", *bySource[1].CostUSD)
	require.EqualValues(t, 2, bySource[1].Batches)

	byBatch, err := s.CostReport(ctx, store.CostByBatch, time.Time{})
	require.NoError(t, err)
	require.Len(t, byBatch, 4)

	_, err = s.CostReport(ctx, "week", time.Time{})
	require.ErrorContains(t, err, "week")
}
