// Package reliability_test tries hard to break batchctl's two promises, money is never spent twice and no answer is
// lost: it kills `batchctl submit` and `batchctl poll` with SIGKILL at chosen and random moments, injects API faults,
// restarts Postgres under a running poller, feeds a corpus of bad input, and looks for the API key everywhere.
//
// The kill and fault parts (SubmitKills, APIFaults, PollKills) run against each API the emulator serves: OpenAI,
// Azure OpenAI and Anthropic's Message Batches. Every check compares what batchctl did with the emulator's own
// record of what it received and answered, never with batchctl's account of itself. The short form runs inside `make test`; BATCHCTL_RELIABILITY=full (`make
// reliability`) runs at least 20 crash runs of each kind and prints a summary.
package reliability_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// full is true for `make reliability`: many runs of each kind instead of a few.
var full = os.Getenv("BATCHCTL_RELIABILITY") == "full"

// runsOf picks the number of runs of a part for the short or the full form.
func runsOf(short, long int) int {
	if full {
		return long
	}
	return short
}

// tally counts what the suite did and found, for the summary; parts run at once, so every field is atomic.
type tally struct {
	runs       atomic.Int64 // batchctl processes started
	kills      atomic.Int64 // of them killed with SIGKILL
	faults     atomic.Int64 // faults the emulator injected (429, 500, resets, truncated downloads, failed lines, expiries)
	restarts   atomic.Int64 // Postgres restarts
	records    atomic.Int64 // records (submit) and result rows (poll) compared with the emulator's record
	badInputs  atomic.Int64 // bad-input kinds checked
	lost       atomic.Int64 // records or results missing
	duplicated atomic.Int64 // records submitted twice, batches created twice, result rows twice or unexpected
}

// partTally is one part's line of the summary.
type partTally struct {
	name    string
	tally   tally
	elapsed time.Duration
	ran     bool // not filtered out by -run, not skipped
}

var (
	// binary is the batchctl executable the tests start, built once by TestReliability.
	binary string

	partsMu sync.Mutex
	parts   []*partTally
)

// TestReliability builds batchctl, runs every part of the suite at once (they share nothing but the database server,
// each with its own schema and emulator), and prints the summary when all are done. Run one part with
// -run 'TestReliability/SubmitKills'.
func TestReliability(t *testing.T) {
	start := time.Now()
	binary = buildBinary(t)
	all := []struct {
		name string
		fn   func(*testing.T, *tally)
	}{
		{"SubmitKills", testSubmitKills},
		{"StreamStops", testStreamStops},
		{"ManySubmitters", testManySubmitters},
		{"PollKills", testPollKills},
		{"Lifeline", testLifeline},
		{"APIFaults", testAPIFaults},
		{"PostgresRestart", testPostgresRestart},
		{"BadInput", testBadInput},
		{"Secrets", testSecrets},
	}
	// Not t.Parallel: the parts spend most of their time waiting on subprocesses, and -parallel (GOMAXPROCS, two
	// on a small CI machine) would run them two at a time.
	var wg sync.WaitGroup
	for _, p := range all {
		pt := &partTally{name: p.name}
		partsMu.Lock()
		parts = append(parts, pt)
		partsMu.Unlock()
		wg.Go(func() {
			began := time.Now()
			t.Run(p.name, func(t *testing.T) {
				defer func() { pt.ran = !t.Skipped() }()
				p.fn(t, &pt.tally)
			})
			pt.elapsed = time.Since(began)
		})
	}
	wg.Wait()
	printSummary(os.Stdout, time.Since(start))
}

// printSummary writes one line per part that ran and a total line.
func printSummary(w io.Writer, elapsed time.Duration) {
	partsMu.Lock()
	defer partsMu.Unlock()
	form := "short"
	if full {
		form = "full"
	}
	fmt.Fprintf(w, "\nbatchctl reliability summary (%s form, %s)\n", form, elapsed.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "part\truns\tkills\tfaults\tpg restarts\tbad inputs\trecords checked\tlost\tduplicated\ttime\t")
	var sum [8]int64
	for _, p := range parts {
		if !p.ran {
			continue
		}
		v := [8]int64{p.tally.runs.Load(), p.tally.kills.Load(), p.tally.faults.Load(), p.tally.restarts.Load(),
			p.tally.badInputs.Load(), p.tally.records.Load(), p.tally.lost.Load(), p.tally.duplicated.Load()}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", p.name, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
			p.elapsed.Round(100*time.Millisecond))
		for i := range v {
			sum[i] += v[i]
		}
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", sum[0], sum[1], sum[2], sum[3], sum[4], sum[5], sum[6], sum[7],
		elapsed.Round(100*time.Millisecond))
	_ = tw.Flush()
}

// buildBinary compiles batchctl (without -race: the subprocesses are what is tested, not what is measured).
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "batchctl")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/batchctl")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}
