package poll_test

import (
	"context"
	"testing"
	"time"

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
