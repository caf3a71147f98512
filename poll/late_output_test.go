package poll_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/poll"
)

// TestCompletedWithoutOutputWaitsForIt: a batch reported completed before its output_file_id appears is not loaded
// empty: its load reads the batch again until the file is there, and poll --exit-when-done waits for it.
func TestCompletedWithoutOutputWaitsForIt(t *testing.T) {
	t.Parallel()
	const late = 2 * time.Second
	e := newEnv(t, emulator.Options{LateOutputFile: late})
	body, ids := requestFile("late", "gpt-4o-mini", 30)
	batchID := e.submit(t, body)

	start := time.Now()
	runUntilDone(t, e.config(t), time.Minute)
	requireExactResults(t, e, batchID, ids)
	require.Greater(t, time.Since(start), late, "the daemon waited for the output file")
	require.Equal(t, 1, e.emu.Stats().LateOutputFiles)
	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.NotEmpty(t, b.OutputFileID, "the row has the file ID the API gave later")
}

// TestCompletedWithoutOutputLoadsAfterGrace: once OutputGrace has passed since the batch ended, the load stops
// waiting and loads what there is, counted in batchctl_loads_without_output_total.
func TestCompletedWithoutOutputLoadsAfterGrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{LateOutputFile: time.Hour})
	body, _ := requestFile("never", "gpt-4o-mini", 10)
	batchID := e.submit(t, body)

	cfg := e.config(t)
	cfg.OutputGrace = time.Second
	reg := prometheus.NewRegistry()
	cfg.Metrics = poll.NewMetrics(reg, e.store, cfg.Logger)
	runUntilDone(t, cfg, time.Minute)

	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.NotNil(t, b.ResultsLoadedAt)
	require.Empty(t, b.OutputFileID)
	require.Empty(t, e.results(t, batchID))
	families, err := reg.Gather()
	require.NoError(t, err)
	counted := -1.0
	for _, f := range families {
		if f.GetName() == "batchctl_loads_without_output_total" {
			counted = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	require.EqualValues(t, 1, counted)
	require.Greater(t, b.ResultsLoadedAt.Sub(*b.EndedAt), cfg.OutputGrace-100*time.Millisecond, "loaded only after the grace")
}
