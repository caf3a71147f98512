package emulator_test

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(fds)
}

// TestManyBatchesInFlightBounded puts 1 500 batches in flight at once: the emulator's goroutines and open files stay
// bounded by its workers, not by the batches (a goroutine per batch holding its 33 files open across every pause ran
// out of descriptors at a few hundred batches, and reported the batches it could not write completed), and every
// batch completes with all its answers. Not parallel: it counts the whole process's goroutines and descriptors.
func TestManyBatchesInFlightBounded(t *testing.T) {
	const (
		batches  = 1500
		requests = 20
		workers  = 4
	)
	e := newEnv(t, emulator.Options{PhaseDelay: 300 * time.Millisecond, MaxBatchCreatesPerHour: -1, Workers: workers})
	fileID := e.upload(t, chatLines(requests, "gpt-4o-mini"))
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)

	var peakG, peakFD int
	sample := func() {
		peakG, peakFD = max(peakG, runtime.NumGoroutine()), max(peakFD, openFDs(t))
	}
	ids := make([]string, 0, batches)
	for i := range batches {
		ids = append(ids, e.create(t, fileID, openai.BatchNewParamsEndpointV1ChatCompletions).ID)
		if i%50 == 0 {
			sample()
		}
	}
	created := time.Now()
	deadline := created.Add(2 * time.Minute)
	for done := 0; done < batches; {
		sample()
		for ; done < batches; done++ {
			if b, _ := e.srv.Batch(ids[done]); b.Status != emulator.StatusCompleted && b.Status != emulator.StatusFailed {
				break
			}
		}
		require.True(t, time.Now().Before(deadline), "%d of %d batches ended", done, batches)
		time.Sleep(10 * time.Millisecond)
	}
	ended := time.Since(created)

	// A worker holds at most the input file and the 2×16 buckets of one batch; the HTTP connections and the test's own
	// sampling take a few more.
	require.LessOrEqual(t, peakFD-baseFD, workers*(2*16+1)+20, "open files grew with the batches in flight")
	require.LessOrEqual(t, peakG-baseG, 20, "goroutines grew with the batches in flight")
	st := e.srv.Stats()
	require.Zero(t, st.InternalFailures)
	for _, id := range []string{ids[0], ids[batches/2], ids[batches-1]} {
		b := e.wait(t, id, openai.BatchStatusCompleted)
		require.Equal(t, int64(requests), b.RequestCounts.Completed)
		require.Len(t, e.download(t, b.OutputFileID), requests)
	}
	for _, id := range ids {
		b, _ := e.srv.Batch(id)
		require.Equal(t, emulator.StatusCompleted, b.Status, id)
		require.NotEmpty(t, b.OutputFileID, id)
		require.Equal(t, int64(requests), b.Completed, id)
	}
	t.Logf("%d batches: peak %d goroutines (%d at rest), %d open files (%d at rest); all ended %v after the last was created",
		batches, peakG, baseG, peakFD, baseFD, ended.Round(time.Millisecond))
}

// TestInternalFailureEndsFailed breaks the emulator's own disk in the ways it can break (the scratch directory, the
// result files, an injected full disk): the batch ends failed with a server_error, never completed without output.
func TestInternalFailureEndsFailed(t *testing.T) {
	t.Parallel()
	// replaceWithFile puts a regular file where a directory of the emulator's was: creating anything under it fails
	// with ENOTDIR, whoever runs the test (root ignores a read-only mode, not this).
	replaceWithFile := func(t *testing.T, dir string) {
		t.Helper()
		require.NoError(t, os.Rename(dir, dir+".away"))
		require.NoError(t, os.WriteFile(dir, []byte("not a directory"), 0o600))
	}
	for _, tc := range []struct {
		name    string
		opts    emulator.Options
		breakIt func(t *testing.T, e *env, id string)
	}{
		{name: "scratch directory unusable", breakIt: func(t *testing.T, e *env, _ string) {
			replaceWithFile(t, filepath.Join(e.srv.DataDir(), "tmp"))
		}},
		{name: "result files unwritable", breakIt: func(t *testing.T, e *env, id string) {
			e.wait(t, id, openai.BatchStatusFinalizing)
			replaceWithFile(t, filepath.Join(e.srv.DataDir(), "files"))
		}},
		{name: "disk full injected", opts: emulator.Options{DiskFailRate: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.opts.PhaseDelay = 300 * time.Millisecond
			e := newEnv(t, tc.opts)
			b := e.submit(t, chatLines(50, "gpt-4o-mini"))
			if tc.breakIt != nil {
				tc.breakIt(t, e, b.ID)
			}
			got := e.wait(t, b.ID, openai.BatchStatusCompleted, openai.BatchStatusFailed)
			require.Equal(t, openai.BatchStatusFailed, got.Status)
			require.Len(t, got.Errors.Data, 1)
			require.Equal(t, emulator.CodeServerError, got.Errors.Data[0].Code)
			require.Contains(t, got.Errors.Data[0].Message, "internal error")
			require.Empty(t, got.OutputFileID)
			require.Empty(t, got.ErrorFileID)
			require.Equal(t, 1, e.srv.Stats().InternalFailures)
			requireBatchShape(t, got.RawJSON())
		})
	}
}
