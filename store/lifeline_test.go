package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/store"
)

// runningJob inserts a load job in state running whose attempts were made by attemptedBy (the last one latest),
// attempted ago.
func runningJob(t *testing.T, s *store.Store, batchID string, ago time.Duration, attemptedBy ...string) int64 {
	t.Helper()
	var id int64
	require.NoError(t, s.Pool().QueryRow(context.Background(), `insert into `+s.Schema()+`.river_job
		(kind, args, queue, max_attempts, state, attempt, attempted_at, attempted_by)
		values ($1, jsonb_build_object('batch_id', $2::text), $3, 25, 'running', $4, now() - $5::interval, $6) returning id`,
		store.LoadResultsArgs{}.Kind(), batchID, store.QueueBatches, len(attemptedBy), ago, attemptedBy).Scan(&id))
	return id
}

// jobState reads a job's state and the errors River would show for it.
func jobState(t *testing.T, s *store.Store, id int64) (state string, errs []map[string]any) {
	t.Helper()
	var raw [][]byte
	require.NoError(t, s.Pool().QueryRow(context.Background(), `select state, coalesce(errors, '{}') from `+s.Schema()+`.river_job where id = $1`, id).
		Scan(&state, &raw))
	for _, r := range raw {
		var e map[string]any
		require.NoError(t, json.Unmarshal(r, &e))
		errs = append(errs, e)
	}
	return state, errs
}

func pollerIDs(t *testing.T, s *store.Store) []string {
	t.Helper()
	ps, err := s.Pollers(context.Background())
	require.NoError(t, err)
	ids := []string{}
	for _, p := range ps {
		ids = append(ids, p.ClientID)
	}
	return ids
}

// TestRescueDeadPollersTakesOnlyTheDeadOnesJobs: a poller registered without a live session (its row is there, its
// lock free) loses its running jobs and its row; a live poller keeps its jobs, however long they have run; a job
// whose latest attempt is the live poller's stays even when an earlier attempt was the dead one's.
func TestRescueDeadPollersTakesOnlyTheDeadOnesJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)

	live, err := s.Register(ctx, store.Poller{ClientID: "live-1", Hostname: "h1", PID: 11})
	require.NoError(t, err)
	t.Cleanup(func() { _ = live.Close(context.Background()) })
	// The dead poller: its row, and no session holding its lock (as after kill -9).
	_, err = s.Pool().Exec(ctx, `insert into `+s.Schema()+`.pollers (client_id, hostname, pid) values ('dead-1', 'h2', 22)`)
	require.NoError(t, err)
	_, err = s.Pool().Exec(ctx, `insert into `+s.Schema()+`.river_leader (leader_id, elected_at, expires_at) values ('dead-1', now(), now() + interval '15 seconds')`)
	require.NoError(t, err)

	deadJob := runningJob(t, s, "b-dead", time.Second, "live-1", "dead-1")
	liveJob := runningJob(t, s, "b-live", 3*time.Hour, "dead-1", "live-1")
	orphan := runningJob(t, s, "b-orphan", 2*time.Hour, "old-batchctl")
	youngOrphan := runningJob(t, s, "b-young", time.Minute, "old-batchctl")

	res, err := s.RescueDeadPollers(ctx, "checker", time.Hour)
	require.NoError(t, err)
	require.Equal(t, []string{"dead-1"}, res.DeadPollers)
	require.EqualValues(t, 1, res.Jobs)
	require.EqualValues(t, 1, res.OrphanJobs)

	state, errs := jobState(t, s, deadJob)
	require.Equal(t, "available", state)
	require.Len(t, errs, 1)
	require.Contains(t, errs[0]["error"], "poller dead-1 died")
	require.EqualValues(t, 2, errs[0]["attempt"])
	_, err = time.Parse(time.RFC3339Nano, errs[0]["at"].(string))
	require.NoError(t, err, "River reads the time of the entry")

	state, errs = jobState(t, s, liveJob)
	require.Equal(t, "running", state, "a live poller's job is never taken, however long it runs")
	require.Empty(t, errs)
	state, _ = jobState(t, s, orphan)
	require.Equal(t, "available", state, "a job of a client without a lifeline is rescued after orphanAfter")
	state, _ = jobState(t, s, youngOrphan)
	require.Equal(t, "running", state)

	require.Equal(t, []string{"live-1"}, pollerIDs(t, s))
	var leaders int
	require.NoError(t, s.Pool().QueryRow(ctx, `select count(*) from `+s.Schema()+`.river_leader`).Scan(&leaders))
	require.Zero(t, leaders, "the dead poller's leadership is released")

	res, err = s.RescueDeadPollers(ctx, "checker", time.Hour)
	require.NoError(t, err)
	require.Empty(t, res.DeadPollers, "nothing more to do")

	require.NoError(t, live.Close(ctx))
	require.Empty(t, pollerIDs(t, s), "a graceful stop unregisters")
}

// TestLifelineComesBackAfterItsSessionDies: a lifeline session ended by the server (a Postgres restart, an
// administrator) makes its poller look dead, and a rescue may take its row; the poller's next Check opens a new
// session, takes the lock and registers again, after which it is alive to everyone.
func TestLifelineComesBackAfterItsSessionDies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	l, err := s.Register(ctx, store.Poller{ClientID: "comeback-" + s.Schema(), Hostname: "h", PID: 1})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close(context.Background()) })

	reconnected, err := l.Check(ctx)
	require.NoError(t, err)
	require.False(t, reconnected)

	_, err = s.Pool().Exec(ctx, `select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1`,
		"batchctl poller comeback-"+s.Schema())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		res, err := s.RescueDeadPollers(ctx, "checker", 0)
		require.NoError(t, err)
		return len(res.DeadPollers) == 1
	}, 10*time.Second, 20*time.Millisecond)
	require.Empty(t, pollerIDs(t, s))

	reconnected, err = l.Check(ctx)
	require.NoError(t, err)
	require.True(t, reconnected)
	require.Equal(t, []string{"comeback-" + s.Schema()}, pollerIDs(t, s))
	res, err := s.RescueDeadPollers(ctx, "checker", 0)
	require.NoError(t, err)
	require.Empty(t, res.DeadPollers, "alive again")
}
