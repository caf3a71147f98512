package reliability_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/submit"
)

// streamRecords and streamPerBatch shape a stream run: records fed through a pipe, cut into batches of 50.
const (
	streamRecords  = 300
	streamPerBatch = 50
)

// testStreamStops feeds records to `batchctl submit -` through a pipe, waits past the write-through interval, and
// stops the process: with SIGKILL (then `submit --resume` must submit every record read), or with SIGTERM (the
// process itself must submit them before it exits 0). A second run then streams the rest of the records. Every
// record must be in exactly one batch: nothing read is lost, nothing is sent twice. Short: one kill, one term;
// full: 10 of each.
func testStreamStops(t *testing.T, tl *tally) {
	runs := runsOf(1, 10)
	for i := range runs {
		for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
			t.Run(fmt.Sprintf("%s-%d", strings.ToLower(sig.String()[:4]), i+1), func(t *testing.T) {
				streamStopRun(t, tl, uint64(i+1), sig)
			})
		}
	}
}

func streamStopRun(t *testing.T, tl *tally, seed uint64, sig syscall.Signal) {
	rng := rand.New(rand.NewPCG(seed, uint64(sig)))
	e := newEnv(t, emulator.Options{Seed: int64(seed)})
	_, ids := writeRecords(t, e.dir, "records.jsonl", fmt.Sprintf("st%d", seed), streamRecords, 40)
	lines, err := os.ReadFile(e.dir + "/records.jsonl")
	require.NoError(t, err)
	all := strings.SplitAfter(strings.TrimSuffix(string(lines), "\n"), "\n")
	require.Len(t, all, streamRecords)
	args := []string{"submit", "--model", "gpt-4o-mini", "--id-field", "id", "--max-requests", strconv.Itoa(streamPerBatch),
		"--flush-interval", "10m", "-"}

	// The first run reads k records, then is stopped with the records of its open part not yet cut.
	k := 1 + rng.IntN(streamRecords-streamPerBatch)
	if k%streamPerBatch == 0 {
		k++ // leave an open part
	}
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	e.stdinPipe = pr
	p := e.start(t, tl, args...)
	require.NoError(t, pr.Close())
	_, err = pw.WriteString(strings.Join(all[:k], ""))
	require.NoError(t, err)
	waitFor(t, "the full parts created", func() bool { return len(e.emu.Batches()) >= k/streamPerBatch })
	time.Sleep(submit.WriteThroughInterval + time.Second)
	require.NoError(t, p.cmd.Process.Signal(sig))
	code := p.wait(t, commandTimeout)
	if sig == syscall.SIGKILL {
		tl.kills.Add(1)
		resume := e.run(t, tl, "submit", "--resume")
		require.Equal(t, exitOK, resume.code, "submit --resume after a kill; stderr:\n%s", tail(resume.stderr.String(), 4000))
	} else {
		require.Equal(t, exitOK, code, "SIGTERM submits what was read and exits 0; stderr:\n%s", tail(p.stderr.String(), 4000))
	}
	_ = pw.Close()
	checkSubmitted(t, tl, e, ids[:k], (k+streamPerBatch-1)/streamPerBatch)

	// The stream goes on in a new run: the rest, each once, in parts numbered after the first run's.
	pr, pw, err = os.Pipe()
	require.NoError(t, err)
	e.stdinPipe = pr
	p = e.start(t, tl, args...)
	require.NoError(t, pr.Close())
	_, err = pw.WriteString(strings.Join(all[k:], ""))
	require.NoError(t, err)
	require.NoError(t, pw.Close())
	require.Equal(t, exitOK, p.wait(t, commandTimeout), "stderr:\n%s", tail(p.stderr.String(), 4000))
	rest := streamRecords - k
	batches := checkSubmitted(t, tl, e, ids, (k+streamPerBatch-1)/streamPerBatch+(rest+streamPerBatch-1)/streamPerBatch)
	parts := map[string]bool{}
	for _, b := range batches {
		require.False(t, parts[b.metadata[submit.MetaPart]], "part %s twice", b.metadata[submit.MetaPart])
		parts[b.metadata[submit.MetaPart]] = true
	}
	t.Logf("%s after %d of %d records: every record in exactly one of %d batches", sig, k, streamRecords, len(batches))
}
