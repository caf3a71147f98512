package poll_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/store"
)

// Every download is cut short (Content-Length announces more than is sent): each resumes from the byte it reached
// with a Range request, and the load finishes in its first attempt with every row exactly once.
func TestCutDownloadsResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{Seed: 3})
	batchID, ids, jobID := e.endedBatch(t, "cut", 300)
	e.emu.SetFaults(emulator.Faults{TruncateDownloadRate: 1})

	runUntilDone(t, e.config(t), time.Minute)

	requireExactResults(t, e, batchID, ids)
	st := e.emu.Stats()
	require.Positive(t, st.TruncatedDownloads)
	require.Positive(t, st.RangeDownloads, "cut downloads resumed with Range")
	var attempt int
	require.NoError(t, e.store.Pool().QueryRow(context.Background(), `select attempt from `+e.store.Schema()+`.river_job where id = $1`,
		jobID).Scan(&attempt))
	require.Equal(t, 1, attempt, "the load did not start over")
	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.Equal(t, store.StatusCompleted, b.Status)
}
