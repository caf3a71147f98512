package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/store"
)

// TestDashboardPagesUseTheirIndexes: with 10 000 batches, a page of either list is a range scan of the index it is
// sorted by (migration 011), with no sort of the table, from the first page to a deep one, filtered or not.
func TestDashboardPagesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	_, err := s.Pool().Exec(ctx, `insert into `+s.Schema()+`.batches (batch_id, status, source, created_at, ended_at)
		select 'batch_' || i, case when i % 10 = 0 then 'in_progress' else 'completed' end, 'src' || (i % 7) || '.jsonl',
			now() - i * interval '1 minute', case when i % 10 <> 0 then now() - i * interval '30 seconds' end
		from generate_series(1, 10000) i;
		analyze `+s.Schema()+`.batches`)
	require.NoError(t, err)
	inFlight, ended := s.DashboardSQL()
	deep := time.Now().Add(-3 * time.Hour)
	for _, tt := range []struct {
		sql, index     string
		source, status string
		after          time.Time
		afterID        string
	}{
		{inFlight, "batches_in_flight_idx", "", "", time.Time{}, ""},
		{inFlight, "batches_in_flight_idx", "src3.jsonl", "in_progress", deep, "batch_200"},
		{ended, "batches_ended_idx", "", "", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), ""},
		{ended, "batches_ended_idx", "", "completed", deep, "batch_300"},
	} {
		var plan strings.Builder
		rows, err := s.Pool().Query(ctx, "explain (costs off) "+tt.sql, tt.source, tt.status, tt.after, tt.afterID, 51)
		require.NoError(t, err)
		for rows.Next() {
			var line string
			require.NoError(t, rows.Scan(&line))
			plan.WriteString(line + "\n")
		}
		require.NoError(t, rows.Err())
		require.Contains(t, plan.String(), tt.index, plan.String())
		require.NotContains(t, plan.String(), "Sort", plan.String())
		require.NotContains(t, plan.String(), "Seq Scan", plan.String())
	}

	start := time.Now()
	d, err := s.Dashboard(ctx, store.DashboardQuery{MaxSources: 200,
		InFlight: &store.Page{Limit: 50}, Ended: &store.Page{Limit: 50}})
	require.NoError(t, err)
	t.Logf("dashboard over 10 000 batches read in %v", time.Since(start))
	require.Len(t, d.InFlight, 51)
	require.Len(t, d.Ended, 51)
	require.Len(t, d.Sources, 7)
	require.Equal(t, "batch_10000", d.InFlight[0].BatchID, "oldest first")
	require.Equal(t, "batch_1", d.Ended[0].BatchID, "latest ended first")
}
