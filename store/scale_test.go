package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/store"
)

// A refresh page is written by UpsertBatches with UpsertBatch's rules for each batch: the previous statuses come
// back in order, a stale status never resurrects an ended batch, and a batch that ends gets its one load job.
func TestUpsertBatchesPage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	ended := time.Now().Add(-time.Minute)
	for _, b := range []store.Batch{
		{BatchID: "batch_run", Status: store.StatusInProgress, Source: "in.jsonl"},
		{BatchID: "batch_done", Status: store.StatusCompleted, EndedAt: &ended, OutputFileID: "file-done"},
	} {
		_, err := s.TrackBatch(ctx, b)
		require.NoError(t, err)
	}
	prev, err := s.UpsertBatches(ctx, []store.Batch{
		{BatchID: "batch_run", Status: store.StatusCompleted, RequestTotal: 3, RequestCompleted: 3, OutputFileID: "file-run"},
		{BatchID: "batch_done", Status: store.StatusInProgress}, // a stale page
		{BatchID: "batch_new", Status: store.StatusValidating},
	})
	require.NoError(t, err)
	require.Equal(t, []string{store.StatusInProgress, store.StatusCompleted, ""}, prev)

	for id, want := range map[string]string{"batch_run": store.StatusCompleted, "batch_done": store.StatusCompleted, "batch_new": store.StatusValidating} {
		got, err := s.GetBatch(ctx, id)
		require.NoError(t, err)
		require.Equal(t, want, got.Status, id)
	}
	got, err := s.GetBatch(ctx, "batch_run")
	require.NoError(t, err)
	require.Equal(t, "in.jsonl", got.Source, "what the API does not know is kept")
	require.Equal(t, "file-run", got.OutputFileID)
	require.NotNil(t, got.EndedAt)
	require.Equal(t, 1, loadJobs(t, s, "batch_run"), "the batch that ended has its load")
	require.Equal(t, 1, loadJobs(t, s, "batch_done"), "tracked ended: one load, none more for the stale page")
	require.Zero(t, loadJobs(t, s, "batch_new"))

	prev, err = s.UpsertBatches(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, prev)
}

func loadJobs(t *testing.T, s *store.Store, batchID string) int {
	t.Helper()
	var n int
	require.NoError(t, s.Pool().QueryRow(context.Background(), `select count(*) from `+s.Schema()+`.river_job
		where kind = $1 and args->>'batch_id' = $2`, store.LoadResultsArgs{}.Kind(), batchID).Scan(&n))
	return n
}

// The per-batch jobs (polls, loads) come after the periodic jobs that serve every batch at once, so thousands of
// due polls never hold up a refresh.
func TestPerBatchJobsAfterControlJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	_, err := s.TrackBatch(ctx, store.Batch{BatchID: "batch_p", Status: store.StatusValidating})
	require.NoError(t, err)
	var p int
	require.NoError(t, s.Pool().QueryRow(ctx, `select priority from `+s.Schema()+`.river_job where kind = $1`,
		store.PollBatchArgs{}.Kind()).Scan(&p))
	require.Equal(t, store.PriorityBatch, p)
	require.Greater(t, store.PriorityBatch, store.PriorityControl)
	require.GreaterOrEqual(t, store.LoadPriority(nil, time.Now()), store.PriorityBatch)
	require.GreaterOrEqual(t, store.LoadPriority(new(time.Now()), time.Now()), store.PriorityBatch)
}

// The sweep's search for ended batches without a load job hashes the live jobs' batch IDs once (one pass over each
// table), not a scan of the jobs for every batch, whatever river_job's statistics say, and finds exactly the batches
// without one.
func TestStrandedLoadsHashAntiJoin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	const n = 3000
	ended := time.Now().Add(-time.Minute)
	for page := 0; page < n; page += 100 {
		var bs []store.Batch
		for i := page; i < page+100; i++ {
			bs = append(bs, store.Batch{BatchID: fmt.Sprintf("batch_%05d", i), Status: store.StatusCompleted, EndedAt: &ended, RequestTotal: 1})
		}
		_, err := s.UpsertBatches(ctx, bs)
		require.NoError(t, err)
	}
	_, err := s.Pool().Exec(ctx, `delete from `+s.Schema()+`.river_job where kind = $1 and args->>'batch_id' in ('batch_00007', 'batch_02999')`,
		store.LoadResultsArgs{}.Kind())
	require.NoError(t, err)
	// No analyze: the statistics of river_job are those of an empty table, as after a burst of inserts in production.
	plans, err := s.ExplainHot(ctx)
	require.NoError(t, err)
	var plan string
	for _, p := range plans {
		require.NotEmpty(t, p.Text, p.Name)
		if p.Name == "sweep: stranded loads" {
			plan = p.Text
		}
	}
	require.Contains(t, plan, "hashed SubPlan")
	require.False(t, strings.Contains(plan, "Nested Loop"), plan)

	ids, err := s.EnqueueStrandedLoads(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"batch_00007", "batch_02999"}, ids)
}

// The first page of an export in input order comes without sorting the whole results table: the root batches are
// sorted, then each lineage's rows. Through the final_results view it sorted every row first (67.8 s at 10 M rows).
// Completion order reads results_loaded_at_idx and sorts one load's rows at a time once the table is large enough
// for that to pay (make bench's scale stage measures it at 10 M rows); here a top-N sort of 100 000 rows is cheaper.
func TestExportFirstPageSortsNoWholeTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	_, err := s.Pool().Exec(ctx, `insert into `+s.Schema()+`.batches (batch_id, status, created_at, updated_at, ended_at, root_batch_id, attempt, metadata)
		select 'batch_' || i, 'completed', now() - i * interval '1 s', now(), now(), 'batch_' || i, 1, '{}' from generate_series(1, 500) i`)
	require.NoError(t, err)
	_, err = s.Pool().Exec(ctx, `insert into `+s.Schema()+`.results (batch_id, custom_id, input_line, status_code, loaded_at)
		select 'batch_' || b, 'req-' || k, k, 200, now() + b * interval '1 ms' from generate_series(1, 500) b, generate_series(1, 200) k`)
	require.NoError(t, err)
	for _, table := range []string{"batches", "results"} {
		_, err = s.Pool().Exec(ctx, `analyze `+s.Schema()+`.`+table)
		require.NoError(t, err)
	}
	plans, err := s.ExplainHot(ctx)
	require.NoError(t, err)
	seen := 0
	for _, p := range plans {
		if !strings.HasPrefix(p.Name, "results: first page") {
			continue
		}
		seen++
		require.Less(t, p.Millis, 1000.0, p.Name)
		if p.Name != "results: first page, input order" {
			continue
		}
		require.Contains(t, p.Text, "Incremental Sort", p.Name)
		require.NotContains(t, p.Text, "Seq Scan on results", p.Name)
	}
	require.Equal(t, 2, seen)
}
