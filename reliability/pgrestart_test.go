package reliability_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/pgtest"
)

// testPostgresRestart runs `batchctl poll --exit-when-done` against a Postgres cluster of its own and restarts the
// cluster under it while batches are in flight and results load (downloads are slowed so a restart can land
// mid-load), the server staying down for up to 2 s: the poller must reconnect, exit 0, and leave exact results.
// Short: one run with one restart; full: 3 runs with 3 restarts each.
func testPostgresRestart(t *testing.T, tl *tally) {
	for i := range runsOf(1, 3) {
		t.Run(fmt.Sprintf("run%d", i+1), func(t *testing.T) { pgRestartRun(t, tl, uint64(i+1), runsOf(1, 3)) })
	}
}

func pgRestartRun(t *testing.T, tl *tally, seed uint64, restarts int) {
	rng := rand.New(rand.NewPCG(seed, 0x9a))
	ctx := context.Background()
	cluster, err := pgtest.Start(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, cluster.Stop()) })

	e := newEnv(t, emulator.Options{Seed: int64(seed), PhaseDelay: 300 * time.Millisecond, RequestFailRate: 0.1})
	const schema = "reliability"
	e.vars["DATABASE_URL"], e.vars["BATCHCTL_SCHEMA"] = cluster.URL(), schema
	p := e.run(t, tl, "migrate")
	require.Equal(t, exitOK, p.code, p.stderr.String())
	e.useDB(t, cluster.URL(), schema)

	start := time.Now()
	submitWave(t, tl, e, "wave1.jsonl", 300, 60, 300)
	e.emu.SetFaults(emulator.Faults{RequestFailRate: 0.1, DownloadBytesPerSec: 60_000})
	poller := e.start(t, tl, append(append([]string{}, pollFlags...), "--exit-when-done")...)

	var log []string
	for r := range restarts {
		// Wait for the poller to be busy (a status call or a download since the last restart), then a little more.
		before := e.emu.Stats()
		busy := waitUntil(time.Minute, func() bool {
			s := e.emu.Stats()
			return s.BatchGets+s.BatchLists+s.ContentDownloads > before.BatchGets+before.BatchLists+before.ContentDownloads ||
				poller.exited()
		})
		require.True(t, busy, "the poller works")
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		require.False(t, poller.exited(), "the poller has work left when Postgres restarts; stderr:\n%s", tail(poller.stderr.String(), 4000))
		down := time.Duration(200+rng.IntN(1800)) * time.Millisecond
		loadsBefore := e.emu.Stats().ContentDownloads
		require.NoError(t, cluster.StopServer(ctx))
		time.Sleep(down)
		require.NoError(t, cluster.StartServer(ctx))
		tl.restarts.Add(1)
		log = append(log, fmt.Sprintf("restart %d at %s, down %s, %d downloads started before",
			r+1, time.Since(start).Round(time.Millisecond), down.Round(time.Millisecond), loadsBefore))
		if r == 0 && restarts > 1 {
			submitWave(t, tl, e, "wave2.jsonl", 120, 60, 300)
		}
	}
	code := poller.wait(t, commandTimeout)
	require.Equal(t, exitOK, code, "the poller survives Postgres restarts; stderr:\n%s", tail(poller.stderr.String(), 6000))
	rows := checkResults(t, tl, e)
	tl.faults.Add(injected(e.emu.Stats()))
	for _, l := range log {
		t.Log(l)
	}
	t.Logf("%d result rows exact after %d restart(s); %s", rows, restarts, time.Since(start).Round(time.Millisecond))
}
