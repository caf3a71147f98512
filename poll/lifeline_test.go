package poll_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/poll"
	"github.com/batchctl/batchctl/store"
)

// TestLifelineResumesADeadPollersLoad: a load left running by a poller whose session is gone (its row in pollers, its
// lock free, as after kill -9) is done by a starting daemon at once, with River's rescue left at its default of hours;
// a load running in a live poller (lock held) is left alone for as long as it runs, and the live poller keeps its row.
func TestLifelineResumesADeadPollersLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, emulator.Options{})
	dead, deadIDs, deadJob := e.endedBatch(t, "dead", 20)
	live, _, liveJob := e.endedBatch(t, "live", 10)

	_, err := e.store.Pool().Exec(ctx, `insert into `+e.store.Schema()+`.pollers (client_id, hostname, pid) values ('killed-poller', 'h', 1)`)
	require.NoError(t, err)
	e.markRunning(t, deadJob, "killed-poller")
	lifeline, err := e.store.Register(ctx, store.Poller{ClientID: "live-poller", Hostname: "h", PID: 2})
	require.NoError(t, err)
	defer lifeline.Close(ctx)
	e.markRunning(t, liveJob, "live-poller")

	cfg := e.config(t)
	cfg.ExitWhenDone = false
	cfg.LifelineInterval = 100 * time.Millisecond
	d, err := poll.New(cfg)
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- d.Run(runCtx) }()

	require.Eventually(t, func() bool {
		b, err := e.store.GetBatch(ctx, dead)
		require.NoError(t, err)
		return b.ResultsLoadedAt != nil
	}, 20*time.Second, 10*time.Millisecond)
	t.Logf("the dead poller's load was done %s after the daemon started", time.Since(start).Round(time.Millisecond))
	requireExactResults(t, e, dead, deadIDs)

	// Many lifeline rounds later, the live poller's load is still its own.
	time.Sleep(time.Second)
	cancel()
	require.NoError(t, <-done)
	var state string
	require.NoError(t, e.store.Pool().QueryRow(ctx, `select state from `+e.store.Schema()+`.river_job where id = $1`, liveJob).Scan(&state))
	require.Equal(t, "running", state)
	b, err := e.store.GetBatch(ctx, live)
	require.NoError(t, err)
	require.Nil(t, b.ResultsLoadedAt)
	ps, err := e.store.Pollers(ctx)
	require.NoError(t, err)
	require.Len(t, ps, 1, "the dead poller's row is gone, the stopped daemon unregistered")
	require.Equal(t, "live-poller", ps[0].ClientID)
}

// TestExitWhenDoneLeavesNothingRunningInADeadPollersName: a poller that dies while another finishes the work (here a
// sweep job it was running) must not leave that job running when the survivor exits with --exit-when-done, even when
// no lifeline round came between the death and the exit.
func TestExitWhenDoneLeavesNothingRunningInADeadPollersName(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, emulator.Options{PhaseDelay: 200 * time.Millisecond})
	body, ids := requestFile("exit", "gpt-4o-mini", 5)
	batchID := e.submit(t, body)

	// The dying poller's lifeline, by hand: its row, and its lock held by a session of its own (see store.Lifeline).
	dying, err := pgx.ConnectConfig(ctx, e.store.Pool().Config().ConnConfig.Copy())
	require.NoError(t, err)
	_, err = dying.Exec(ctx, `select pg_advisory_lock(hashtextextended($1, 0))`, "batchctl:"+e.store.Schema()+":dying-poller")
	require.NoError(t, err)
	_, err = dying.Exec(ctx, `insert into `+e.store.Schema()+`.pollers (client_id, hostname, pid) values ('dying-poller', 'h', 3)`)
	require.NoError(t, err)
	var jobID int64
	require.NoError(t, e.store.Pool().QueryRow(ctx, `insert into `+e.store.Schema()+`.river_job
		(args, kind, max_attempts, queue, state, attempt, attempted_at, attempted_by)
		values ('{}', 'batchctl_sweep', 5, 'default', 'running', 1, now(), array['dying-poller']) returning id`).Scan(&jobID))

	cfg := e.config(t)
	cfg.LifelineInterval = time.Hour // no lifeline round between the death and the exit
	done, runCtx := startDaemon(t, cfg, time.Minute)
	time.Sleep(100 * time.Millisecond)   // the daemon has looked for dead pollers at its start: this one was alive
	require.NoError(t, dying.Close(ctx)) // killed: the session ends, the row stays
	require.NoError(t, <-done)
	require.NoError(t, runCtx.Err(), "the daemon did not finish")

	requireExactResults(t, e, batchID, ids)
	var state string
	require.NoError(t, e.store.Pool().QueryRow(ctx, `select state from `+e.store.Schema()+`.river_job where id = $1`, jobID).Scan(&state))
	require.NotEqual(t, "running", state, "the dead poller's job was handed back before the exit")
}
