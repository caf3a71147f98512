package files_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/files"
	"github.com/batchctl/batchctl/store"
)

// TestListShowsEachFilesState: every file of the tracked batches, with the API's size and expiry, and its state:
// needed (in flight; the input of an expired batch that may be resubmitted), prunable, deleted (by a prune), gone
// (deleted outside batchctl). Asking file by file and reading the whole file list give the same answer.
func TestListShowsEachFilesState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, emulator.Options{ExpireRate: 1, ExpireCompletedShare: 0.5})
	expired := e.submit(t, "x", 6)
	e.waitEnded(t, expired)
	e.emu.SetFaults(emulator.Faults{})
	done := e.submit(t, "d", 4)
	e.poll(t, e.config(t))
	flying := e.submit(t, "f", 2)
	x, d, f := e.batch(t, expired), e.batch(t, done), e.batch(t, flying)

	_, err := e.pruner(t).Prune(ctx, files.PruneOptions{RootBatchID: done}, nil)
	require.NoError(t, err)
	_, err = e.api.Files.Delete(ctx, x.ErrorFileID) // outside batchctl
	require.NoError(t, err)

	want := map[string]string{
		f.InputFileID:  "f input needed",
		d.InputFileID:  "d input deleted",
		d.OutputFileID: "d output deleted",
		x.InputFileID:  "x input needed",
		x.OutputFileID: "x output prunable",
		x.ErrorFileID:  "x error gone",
	}
	names := map[string]string{flying: "f", done: "d", expired: "x"}
	for _, maxGets := range []int{0, 1} {
		l := &files.Lister{Store: e.store, API: files.OpenAI{Client: &e.api}, MaxGets: maxGets}
		listed, err := l.List(ctx, store.FileQuery{})
		require.NoError(t, err)
		got := map[string]string{}
		for _, fl := range listed {
			got[fl.FileID] = names[fl.BatchID] + " " + fl.Role + " " + fl.State
			switch fl.State {
			case files.StateDeleted:
				require.Nil(t, fl.Object)
				require.Equal(t, "test", fl.Deleted.DeletedBy)
			case files.StateGone:
				require.Nil(t, fl.Object)
			default:
				require.NotNil(t, fl.Object, fl.FileID)
				require.Positive(t, fl.Object.Bytes)
				require.WithinDuration(t, time.Now(), fl.Object.CreatedAt, time.Minute)
				require.NotNil(t, fl.Object.ExpiresAt, "batch files expire after 30 days")
				require.WithinDuration(t, fl.Object.CreatedAt.Add(30*24*time.Hour), *fl.Object.ExpiresAt, time.Second)
			}
		}
		require.Equal(t, want, got, "max gets %d", maxGets)
		require.Equal(t, flying, listed[0].BatchID, "the newest batch first")
	}
	stats := e.emu.Stats()
	require.Positive(t, stats.FileGets)
	require.Positive(t, stats.FileLists)
}
