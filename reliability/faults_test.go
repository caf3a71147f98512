package reliability_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/provider"
)

// chaos is the fault mix of the API-fault runs: 20 % of every call answered 429, 20 % answered 500, 20 % cut after
// taking effect, 20 % of downloads truncated, 10 % of request lines failed, some batches expired.
var chaos = emulator.Faults{
	HTTP429Rate: 0.2, HTTP500Rate: 0.2, ResetRate: 0.2, TruncateDownloadRate: 0.2, RetryAfter: 10 * time.Millisecond,
	RequestFailRate: 0.1, ExpireRate: 0.2, ExpireCompletedShare: 0.5,
}

// testAPIFaults runs the whole pipeline, submit then poll, against an API that fails as chaos says from start to
// end, for each API: every record is in exactly one batch and the results table equals the emulator's answers.
// Short: one run of 3 batches against each API; full: 5 runs of 8 batches against each, with different seeds. The
// APIs' runs go at once: they spend their time in backoff.
func testAPIFaults(t *testing.T, tl *tally) {
	var wg sync.WaitGroup
	for _, a := range apis {
		wg.Go(func() {
			for i := range runsOf(1, 5) {
				seed := faultSeeds[a.name] + int64(i)
				t.Run(fmt.Sprintf("%s/seed%d", a.name, seed), func(t *testing.T) { apiFaultRun(t, tl, a, seed) })
			}
		})
	}
	wg.Wait()
}

// faultSeeds is each API's first seed. The emulator draws failed lines and expiries from its seed, and the short
// run of an API has only three batches: Anthropic's at seed 1 draw neither, at seed 3 an expired batch (its failed
// lines come in PollKills).
var faultSeeds = map[string]int64{provider.OpenAI: 1, provider.Azure: 1, provider.Anthropic: 3}

func apiFaultRun(t *testing.T, tl *tally, a api, seed int64) {
	opts := emulator.Options{Seed: seed, PhaseDelay: 50 * time.Millisecond}
	e := newAPIEnv(t, a, opts).withDB(t)
	e.emu.SetFaults(chaos)
	start := time.Now()
	// Every failed call costs the client a backoff of about a second, so the short form submits fewer batches.
	records, per := runsOf(150, 400), 50
	_, ids := writeRecords(t, e.dir, "records.jsonl", "f", records, 200)
	args := e.submitArgs("records.jsonl", per)
	// submit retries 429, 5xx and cut connections itself (exponential backoff, up to 15 minutes), so one run is
	// expected to succeed; it may be rerun if it gives up, as a user would.
	attempts := 0
	for {
		attempts++
		p := e.run(t, tl, args...)
		if p.code == exitOK {
			break
		}
		require.Less(t, attempts, 5, "submit under API faults keeps failing; stderr:\n%s", tail(p.stderr.String(), 4000))
		t.Logf("submit attempt %d exited %d: %s", attempts, p.code, tail(p.stderr.String(), 300))
	}
	submitted := time.Since(start)
	checkSubmitted(t, tl, e, ids, records/per)

	polled := pollUntilDone(t, tl, e)
	rows := checkResults(t, tl, e)
	s := e.emu.Stats()
	tl.faults.Add(injected(s))
	t.Logf("submit in %d attempt(s), %s; poll %s; %d result rows exact; injected: %d×429, %d×500, %d resets, %d truncated "+
		"downloads, %d failed lines, %d expired batches; %d uploads, %d create calls for %d batches",
		attempts, submitted.Round(time.Millisecond), polled.Round(time.Millisecond), rows, s.Injected429, s.Injected500,
		s.InjectedResets, s.TruncatedDownloads, s.FailedRequests+s.Anthropic.ErroredRequests,
		s.ExpiredBatches+s.Anthropic.ExpiredBatches, e.uploads(), e.createCalls(), records/per)
}
