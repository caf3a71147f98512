package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/store"
)

func TestLoadPriority(t *testing.T) {
	t.Parallel()
	now := time.Now()
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	tests := []struct {
		name    string
		expires *time.Time
		want    int
	}{
		{"expired already", at(-time.Minute), 2},
		{"within the hour", at(59 * time.Minute), 2},
		{"within a day", at(23 * time.Hour), 2},
		{"within a week", at(6 * 24 * time.Hour), 3},
		{"the default 30 days", at(30 * 24 * time.Hour), 4},
		{"never, or not known", nil, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, store.LoadPriority(tt.expires, now))
		})
	}
}

// loadPriority is the priority of batchID's load job; it fails the test when there is none.
func loadPriority(t *testing.T, s *store.Store, batchID string) int {
	t.Helper()
	var p int
	require.NoError(t, s.Pool().QueryRow(context.Background(), `select priority from `+s.Schema()+`.river_job
		where kind = $1 and args->>'batch_id' = $2`, store.LoadResultsArgs{}.Kind(), batchID).Scan(&p))
	return p
}

// The load queued when a batch ends takes the priority of its files' expiry: by what submit asked
// (output_expires_after, kept across the API's upserts, which do not carry it) until a load records the files' own.
func TestLoadQueuedAtTheExpiryPriority(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	ended := time.Now().Add(-time.Minute)
	for id, after := range map[string]time.Duration{"batch_hour": time.Hour, "batch_default": 0} {
		_, err := s.TrackBatch(ctx, store.Batch{BatchID: id, Status: store.StatusValidating, OutputExpiresAfter: after})
		require.NoError(t, err)
		_, err = s.UpsertBatch(ctx, store.Batch{BatchID: id, Status: store.StatusCompleted, EndedAt: &ended, OutputFileID: "file-" + id})
		require.NoError(t, err)
	}
	require.Equal(t, 2, loadPriority(t, s, "batch_hour"), "an hour left: first")
	require.Equal(t, 4, loadPriority(t, s, "batch_default"), "the API's default: after")

	got, err := s.GetBatch(ctx, "batch_hour")
	require.NoError(t, err)
	require.Equal(t, time.Hour, got.OutputExpiresAfter, "the upsert kept what submit recorded")
	require.Nil(t, got.OutputExpiresAt)

	// The files' own expiry, once recorded, orders a load queued again (the sweep), and is never moved.
	exact := time.Now().Add(3 * 24 * time.Hour).Truncate(time.Second)
	require.NoError(t, s.SetOutputExpiry(ctx, "batch_default", exact))
	require.NoError(t, s.SetOutputExpiry(ctx, "batch_default", exact.Add(time.Hour)))
	got, err = s.GetBatch(ctx, "batch_default")
	require.NoError(t, err)
	require.NotNil(t, got.OutputExpiresAt)
	require.True(t, exact.Equal(*got.OutputExpiresAt))
	_, err = s.Pool().Exec(ctx, `delete from `+s.Schema()+`.river_job where kind = $1`, store.LoadResultsArgs{}.Kind())
	require.NoError(t, err)
	ids, err := s.EnqueueStrandedLoads(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"batch_hour", "batch_default"}, ids)
	require.Equal(t, 2, loadPriority(t, s, "batch_hour"))
	require.Equal(t, 3, loadPriority(t, s, "batch_default"), "three days left")
}

// A batch whose results are lost is marked once, is not waiting for a load any more (no sweep re-queues one, and
// Pending does not count it), and keeps results_loaded_at null.
func TestMarkResultsLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	ended := time.Now().Add(-2 * time.Hour)
	_, err := s.TrackBatch(ctx, store.Batch{BatchID: "batch_lost", Status: store.StatusCompleted, EndedAt: &ended, RequestTotal: 5})
	require.NoError(t, err)
	require.Equal(t, 1, unloaded(t, s))

	marked, err := s.MarkResultsLost(ctx, "batch_lost")
	require.NoError(t, err)
	require.True(t, marked)
	marked, err = s.MarkResultsLost(ctx, "batch_lost")
	require.NoError(t, err)
	require.False(t, marked, "marked once")

	got, err := s.GetBatch(ctx, "batch_lost")
	require.NoError(t, err)
	require.NotNil(t, got.ResultsLostAt)
	require.Nil(t, got.ResultsLoadedAt)
	require.Zero(t, unloaded(t, s))
	_, err = s.Pool().Exec(ctx, `delete from `+s.Schema()+`.river_job where kind = $1`, store.LoadResultsArgs{}.Kind())
	require.NoError(t, err)
	ids, err := s.EnqueueStrandedLoads(ctx)
	require.NoError(t, err)
	require.Empty(t, ids)
}

// unloaded is Pending's count of ended batches waiting for their load.
func unloaded(t *testing.T, s *store.Store) int {
	t.Helper()
	_, n, _, _, err := s.Pending(context.Background(), 0)
	require.NoError(t, err)
	return n
}

func TestExpectedRows(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		b    store.Batch
		want int
	}{
		{"completed", store.Batch{Status: store.StatusCompleted, RequestTotal: 10, RequestCompleted: 8, RequestFailed: 2}, 10},
		{"expired: the rest as batch_expired lines", store.Batch{Status: store.StatusExpired, RequestTotal: 10, RequestCompleted: 4}, 10},
		{"cancelled: what it answered at least", store.Batch{Status: store.StatusCancelled, RequestTotal: 10, RequestCompleted: 3, RequestFailed: 1}, 4},
		{"failed at validation", store.Batch{Status: store.StatusFailed}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, tt.b.ExpectedRows())
		})
	}
}
