package reliability_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// pollFlags make a poller quick enough for tests: River looks for due jobs every 50 ms, batches are refreshed
// every 50 ms to 500 ms, lost jobs swept every 200 ms. The rescue of a killed poller's jobs keeps its defaults: a
// restarted poller's lifeline finds the dead one as it starts, a poller already running within 10 s.
var pollFlags = []string{"poll", "--poll-interval", "50ms,500ms", "--fetch-interval", "50ms", "--sweep-interval", "200ms"}

// pollUntilDone runs `batchctl poll --exit-when-done` and requires it to finish with exit 0.
func pollUntilDone(t *testing.T, tl *tally, e *env, extra ...string) time.Duration {
	t.Helper()
	start := time.Now()
	p := e.run(t, tl, append(append(append([]string{}, pollFlags...), "--exit-when-done"), extra...)...)
	require.Equal(t, exitOK, p.code, "poll --exit-when-done; stderr:\n%s", tail(p.stderr.String(), 6000))
	return time.Since(start)
}

// submitWave submits n records in batches of per through `batchctl submit` with the database configured, so the
// batches are tracked as they are created. pad makes the records, and so the output files, larger. The records'
// IDs hold the name, so a dot in it makes Anthropic's batches carry r<line> IDs in their stead.
func submitWave(t *testing.T, tl *tally, e *env, name string, n, per, pad int) []string {
	t.Helper()
	_, ids := writeRecords(t, e.dir, name, name, n, pad)
	p := e.run(t, tl, e.submitArgs(name, per)...)
	require.Equal(t, exitOK, p.code, "submit; stderr:\n%s", tail(p.stderr.String(), 4000))
	return ids
}

// testPollKills kills pollers with SIGKILL during status updates and during result loads, restarts them, and
// finally lets one run until everything is loaded, for each API: the results table must equal the emulator's
// answers exactly. Batches come in waves (a second half way, another whenever everything is loaded), so status
// updates and loads go on throughout; some requests fail and some batches expire, so error files, partial outputs
// and errored and expired results are loaded too. Two pollers finish the work side by side. Short: one scenario of
// 3 kills against each API; full: 3 scenarios of 5 kills against each.
func testPollKills(t *testing.T, tl *tally) {
	scenarios, kills := runsOf(1, 3), runsOf(3, 5)
	base := uint64(time.Now().UnixNano())
	if !full {
		base = 1
	} else if s, err := strconv.ParseUint(os.Getenv("BATCHCTL_RELIABILITY_SEED"), 10, 64); err == nil {
		base = s
	}
	t.Logf("seed %d", base)
	// Scenarios run at once, up to 4: each spends much of its time waiting on slow downloads and the emulator's
	// phases.
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i := range scenarios {
		for _, a := range apis {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				t.Run(fmt.Sprintf("%s/scenario%d", a.name, i+1), func(t *testing.T) { pollKillScenario(t, tl, a, base+uint64(i), kills) })
			})
		}
	}
	wg.Wait()
}

// waitUntil polls cond every 5 ms for up to d and reports whether it came true.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func pollKillScenario(t *testing.T, tl *tally, a api, seed uint64, kills int) {
	rng := rand.New(rand.NewPCG(seed, 0x9011))
	e := newAPIEnv(t, a, emulator.Options{Seed: int64(seed), PhaseDelay: 400 * time.Millisecond,
		RequestFailRate: 0.1, ExpireRate: 0.2, ExpireCompletedShare: 0.5}).withDB(t)
	start := time.Now()
	submitWave(t, tl, e, "wave1.jsonl", 240, 60, 300)
	// Loads of about 30 kB of output at 40 kB/s: a kill during a load lands mid-stream.
	slow := emulator.Faults{RequestFailRate: 0.1, ExpireRate: 0.2, ExpireCompletedShare: 0.5, DownloadBytesPerSec: 40_000}
	fast := slow
	fast.DownloadBytesPerSec = 0

	// Short: a kill mid-load by the first poller (the leader from the start); a kill during the status updates of
	// the second wave's new poll jobs, which a poller runs before it is leader; a kill at a random moment while
	// the third poller takes over from the dead one. Full: kinds at random, each waiting as long as it takes.
	kinds := []string{"load", "status", "random"}
	if full {
		kinds = kinds[:0]
		for k := range kills {
			kinds = append(kinds, []string{"load", "status", "load", "status", "random"}[(k+rng.IntN(2))%5])
		}
	}
	var log []string
	waves := 1
	for k, kind := range kinds {
		// A kill needs something to interrupt: a new wave when every batch so far is loaded.
		if k == len(kinds)/2 || kind != "random" && e.count(t, `select count(*) from $schema.batches where results_loaded_at is null`) == 0 {
			waves++
			name := fmt.Sprintf("wave%d.jsonl", waves)
			submitWave(t, tl, e, name, 120, 60, 300)
		}
		if kind == "load" {
			e.emu.SetFaults(slow)
		}
		statusBefore, downloadsBefore := e.statusCalls(), e.downloads()
		p := e.start(t, tl, pollFlags...)
		what := kind
		switch kind {
		case "load":
			// Wait for a download to start, then kill within its first 600 ms.
			if !waitUntil(time.Minute, func() bool { return e.downloads() > downloadsBefore || p.exited() }) {
				what = "idle (no load came)"
			}
			time.Sleep(time.Duration(rng.IntN(600)) * time.Millisecond)
		case "status":
			if !waitUntil(time.Minute, func() bool { return e.statusCalls() > statusBefore || p.exited() }) {
				what = "idle (no status update came)"
			}
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		default:
			time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		}
		require.False(t, p.exited(), "a poller without --exit-when-done runs until killed; stderr:\n%s", tail(p.stderr.String(), 4000))
		require.True(t, p.kill(tl))
		e.emu.SetFaults(fast)
		loaded := e.count(t, `select count(*) from $schema.batches where results_loaded_at is not null`)
		log = append(log, fmt.Sprintf("kill %d during %s: %d status calls, %d downloads by this poller; %d batches loaded so far",
			k+1, what, e.statusCalls()-statusBefore, e.downloads()-downloadsBefore, loaded))
	}
	waitFor(t, "every batch ended at the API", e.allEnded)
	// Two pollers finish the work side by side, as several daemons share a database.
	begin := time.Now()
	drain := []*proc{e.start(t, tl, append(append([]string{}, pollFlags...), "--exit-when-done")...),
		e.start(t, tl, append(append([]string{}, pollFlags...), "--exit-when-done")...)}
	for _, p := range drain {
		require.Equal(t, exitOK, p.wait(t, commandTimeout), "poll --exit-when-done; stderr:\n%s", tail(p.stderr.String(), 6000))
	}
	final := time.Since(begin)
	rows := checkResults(t, tl, e)
	tl.faults.Add(injected(e.emu.Stats()))
	for _, l := range log {
		t.Log(l)
	}
	t.Logf("%d result rows of %d batches exact; the last pollers finished in %s; scenario %s",
		rows, e.made(), final.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
