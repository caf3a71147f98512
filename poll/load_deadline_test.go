package poll_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// TestLoadLongerThanLoadTimeoutFinishes: a load whose download takes several times --load-timeout completes in one
// attempt, its deadline extended from the files' Content-Length at the minimum rate (before, River's fixed timeout
// cut it and every retry started the download again).
func TestLoadLongerThanLoadTimeoutFinishes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	batchID, ids, _ := e.endedBatch(t, "slow", 200)
	e.emu.SetFaults(emulator.Faults{DownloadBytesPerSec: 40_000})
	cfg := e.config(t)
	cfg.LoadTimeout = 500 * time.Millisecond
	cfg.MinLoadRate = 10_000
	start := time.Now()
	runUntilDone(t, cfg, time.Minute)
	took := time.Since(start)
	requireExactResults(t, e, batchID, ids)
	require.Greater(t, took, 4*cfg.LoadTimeout, "the download was slower than --load-timeout")
	require.Equal(t, 2, e.emu.Stats().ContentDownloads, "one attempt: input and output downloaded once each")
	t.Logf("a load of %s with --load-timeout %s finished in one attempt", took.Round(time.Millisecond), cfg.LoadTimeout)
}

// TestStalledLoadHitsItsDeadline: a download slower than the minimum rate is cut at the deadline and retried as a
// job error that says so; once downloads are fast again the load completes.
func TestStalledLoadHitsItsDeadline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, emulator.Options{})
	batchID, ids, jobID := e.endedBatch(t, "stall", 50)
	e.emu.SetFaults(emulator.Faults{DownloadBytesPerSec: 1_000})
	cfg := e.config(t)
	cfg.LoadTimeout = 300 * time.Millisecond
	done, runCtx := startDaemon(t, cfg, time.Minute)

	require.Eventually(t, func() bool {
		var errs []string
		require.NoError(t, e.store.Pool().QueryRow(ctx, `select coalesce(array_agg(e->>'error'), '{}') from `+e.store.Schema()+`.river_job j,
			unnest(j.errors) e where j.id = $1`, jobID).Scan(&errs))
		return len(errs) > 0 && strings.Contains(errs[0], "ran past its deadline")
	}, 20*time.Second, 10*time.Millisecond)
	e.emu.SetFaults(emulator.Faults{})
	require.NoError(t, <-done)
	require.NoError(t, runCtx.Err(), "the daemon finished the load once downloads were fast")
	requireExactResults(t, e, batchID, ids)
}
