package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// lifelineBound is the promise under test: with default flags, a live poller resumes a dead one's work within 30 s
// of the death (the lifeline looks every 10 s; a killed process's session ends at once).
const lifelineBound = 30 * time.Second

// testLifeline kills pollers with SIGKILL while another runs beside them, with the default rescue settings: (a) the
// poller streaming a slow download, whose load the survivor must take over within lifelineBound and finish; (b) River's
// leader, whose periodic refresh and sweep the survivor must take over, and finish every batch. Short: one run of
// each; full: 3.
func testLifeline(t *testing.T, tl *tally) {
	// Runs go at once: each spends most of its time waiting for the survivor's next lifeline round.
	var wg sync.WaitGroup
	for i := range runsOf(1, 3) {
		wg.Go(func() { t.Run(fmt.Sprintf("load%d", i+1), func(t *testing.T) { lifelineLoadRun(t, tl, uint64(i+1)) }) })
		wg.Go(func() {
			t.Run(fmt.Sprintf("leader%d", i+1), func(t *testing.T) { lifelineLeaderRun(t, tl, uint64(i+1)) })
		})
	}
	wg.Wait()
}

// text runs a query returning one string (or "" for no row / NULL); $schema stands for the test's schema.
func (e *env) text(t *testing.T, query string, args ...any) string {
	t.Helper()
	var s *string
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	err := e.pool.QueryRow(ctx, strings.ReplaceAll(query, "$schema", e.schema), args...).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	require.NoError(t, err)
	if s == nil {
		return ""
	}
	return *s
}

// procOf finds, among procs, the poller registered as client in the pollers table.
func (e *env) procOf(t *testing.T, client string, procs ...*proc) *proc {
	t.Helper()
	pid := e.count(t, `select pid from $schema.pollers where client_id = $1`, client)
	for _, p := range procs {
		if p.cmd.Process.Pid == pid {
			return p
		}
	}
	t.Fatalf("no poller of ours has pid %d (client %s)", pid, client)
	return nil
}

// loadWorkerSQL finds the client working the load job of batchID ("" when none is running).
const loadWorkerSQL = `select attempted_by[array_length(attempted_by, 1)] from $schema.river_job
	where kind = 'batchctl_load_results' and args->>'batch_id' = $1 and state = 'running'`

func lifelineLoadRun(t *testing.T, tl *tally, seed uint64) {
	e := newEnv(t, emulator.Options{Seed: int64(seed), PhaseDelay: 50 * time.Millisecond}).withDB(t)
	// One batch of about 200 kB of input and output at 40 kB/s: a load of about 5 s.
	e.emu.SetFaults(emulator.Faults{DownloadBytesPerSec: 40_000})
	submitWave(t, tl, e, "load.jsonl", 120, 120, 600)
	batchID := e.text(t, `select batch_id from $schema.batches`)
	procs := []*proc{e.start(t, tl, pollFlags...), e.start(t, tl, pollFlags...)}

	var victim string
	waitFor(t, "a poller loading the batch", func() bool {
		victim = e.text(t, loadWorkerSQL, batchID)
		return victim != ""
	})
	time.Sleep(time.Second) // mid-download
	dead := e.procOf(t, victim, procs...)
	require.True(t, dead.kill(tl))
	killed := time.Now()
	require.Zero(t, e.count(t, `select count(*) from $schema.batches where results_loaded_at is not null`), "killed mid-load")

	var resumed time.Duration
	require.True(t, waitUntil(lifelineBound+5*time.Second, func() bool {
		w := e.text(t, loadWorkerSQL, batchID)
		return w != "" && w != victim
	}), "no poller resumed the dead one's load within %s; survivor's log:\n%s", lifelineBound, tail(survivor(procs, dead).stderr.String(), 4000))
	resumed = time.Since(killed)
	require.LessOrEqual(t, resumed, lifelineBound)
	require.True(t, waitUntil(lifelineBound+time.Minute, func() bool {
		return e.count(t, `select count(*) from $schema.batches where results_loaded_at is not null`) == 1
	}), "the resumed load did not finish")
	loaded := time.Since(killed)
	require.Contains(t, e.text(t, `select array_to_string(array_agg(e->>'error'), ' | ') from $schema.river_job j, unnest(j.errors) e
		where j.kind = 'batchctl_load_results'`), "poller "+victim+" died")
	require.Zero(t, e.count(t, `select count(*) from $schema.pollers where client_id = $1`, victim), "the dead poller is unregistered")
	require.False(t, survivor(procs, dead).exited())

	e.emu.SetFaults(emulator.Faults{})
	checkResults(t, tl, e)
	t.Logf("load: killed %s mid-download; the survivor resumed the load after %s and finished it after %s (River's rescue at its default)",
		victim, resumed.Round(10*time.Millisecond), loaded.Round(10*time.Millisecond))
}

func lifelineLeaderRun(t *testing.T, tl *tally, seed uint64) {
	e := newEnv(t, emulator.Options{Seed: int64(seed), PhaseDelay: 400 * time.Millisecond, RequestFailRate: 0.1}).withDB(t)
	submitWave(t, tl, e, "wave.jsonl", 240, 40, 100)
	exit := append(append([]string{}, pollFlags...), "--exit-when-done")
	procs := []*proc{e.start(t, tl, exit...), e.start(t, tl, exit...)}

	var leader string
	waitFor(t, "a leader", func() bool {
		leader = e.text(t, `select leader_id from $schema.river_leader`)
		return leader != ""
	})
	time.Sleep(300 * time.Millisecond)
	dead := e.procOf(t, leader, procs...)
	if !dead.kill(tl) {
		t.Skip("the leader finished everything before it could be killed")
	}
	killed := time.Now()
	live := survivor(procs, dead)

	require.True(t, waitUntil(lifelineBound+5*time.Second, func() bool {
		l := e.text(t, `select leader_id from $schema.river_leader`)
		return l != "" && l != leader || live.exited()
	}), "the survivor did not take over the leadership within %s", lifelineBound)
	takeover := time.Since(killed)
	require.Equal(t, exitOK, live.wait(t, commandTimeout), "survivor; stderr:\n%s", tail(live.stderr.String(), 6000))
	finished := time.Since(killed)
	require.Zero(t, e.count(t, `select count(*) from $schema.river_job where state = 'running'`), "nothing left running by the dead poller")
	checkResults(t, tl, e)
	t.Logf("leader: killed %s; the survivor led after %s and finished every batch after %s", leader,
		takeover.Round(10*time.Millisecond), finished.Round(10*time.Millisecond))
}

// survivor is the process of procs that is not dead.
func survivor(procs []*proc, dead *proc) *proc {
	for _, p := range procs {
		if p != dead {
			return p
		}
	}
	return nil
}
