package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/store"
)

// fileWorld tracks batches in every stage a file's life depends on.
type fileWorld struct {
	t *testing.T
	s *store.Store
}

// track inserts b as the API would report it.
func (w fileWorld) track(b store.Batch) {
	w.t.Helper()
	b.Endpoint = "/v1/chat/completions"
	_, err := w.s.TrackBatch(context.Background(), b)
	require.NoError(w.t, err)
}

// load commits a load of n answered rows for batchID.
func (w fileWorld) load(batchID string, n int) {
	w.t.Helper()
	ctx := context.Background()
	l, err := w.s.BeginLoad(ctx, batchID, false)
	require.NoError(w.t, err)
	rows := make([]store.Result, n)
	for i := range rows {
		rows[i] = store.Result{CustomID: fmt.Sprintf("r-%d", i)}
	}
	_, err = l.CopyResults(ctx, newSliceSource(rows))
	require.NoError(w.t, err)
	require.NoError(w.t, l.MarkLoaded(ctx, store.Usage{}))
}

// prunable pages through PrunableFiles with pages of two files and returns the file IDs, sorted.
func (w fileWorld) prunable(q store.PruneQuery) []string {
	w.t.Helper()
	q.Limit = 2
	var ids []string
	for {
		page, err := w.s.PrunableFiles(context.Background(), q)
		require.NoError(w.t, err)
		for _, f := range page {
			require.NotNil(w.t, f.ResultsLoadedAt, "only loaded batches' files: %s", f.FileID)
			ids = append(ids, f.FileID)
		}
		if len(page) < q.Limit {
			break
		}
		q.After = &page[len(page)-1]
	}
	slices.Sort(ids)
	return ids
}

// TestPrunableFilesKeepsWhatBatchesNeed: files of batches in flight or unloaded are kept; the input of a batch that
// may be resubmitted is kept (until --max-attempts says it never will be); a lineage's root input is kept until
// every batch of the lineage is loaded; a file shared with a batch in flight, or waiting in the admission queue, is
// kept; files deleted before are not offered again; --older-than and the lineage filter narrow the set.
func TestPrunableFilesKeepsWhatBatchesNeed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := fileWorld{t: t, s: openStore(t)}
	old := time.Now().Add(-3 * time.Hour)

	w.track(store.Batch{BatchID: "b_flying", Status: store.StatusInProgress, InputFileID: "f-fly-in", RequestTotal: 2})
	w.track(store.Batch{BatchID: "b_unloaded", Status: store.StatusCompleted, InputFileID: "f-unl-in",
		OutputFileID: "f-unl-out", RequestTotal: 2, RequestCompleted: 2})
	w.track(store.Batch{BatchID: "b_done", Status: store.StatusCompleted, InputFileID: "f-done-in", OutputFileID: "f-done-out",
		ErrorFileID: "f-done-err", RequestTotal: 2, RequestCompleted: 2, CreatedAt: old, EndedAt: &old})
	w.load("b_done", 2)
	w.track(store.Batch{BatchID: "b_expired", Status: store.StatusExpired, InputFileID: "f-exp-in", OutputFileID: "f-exp-out",
		ErrorFileID: "f-exp-err", RequestTotal: 4, RequestCompleted: 2})
	w.load("b_expired", 4)
	// A file tracked under two batches: one loaded, one in flight.
	w.track(store.Batch{BatchID: "b_shared_done", Status: store.StatusCompleted, InputFileID: "f-shared", RequestTotal: 1, RequestCompleted: 1})
	w.load("b_shared_done", 1)
	w.track(store.Batch{BatchID: "b_shared_flying", Status: store.StatusValidating, InputFileID: "f-shared"})
	// A loaded batch whose input file an admission queue row still waits to create a batch from.
	w.track(store.Batch{BatchID: "b_queued", Status: store.StatusCompleted, InputFileID: "f-queued", RequestTotal: 1, RequestCompleted: 1})
	w.load("b_queued", 1)
	_, err := w.s.Enqueue(ctx, queued("intent-q", "f-queued", 10))
	require.NoError(t, err)

	// A lineage: the root completed with a failure, its child carries it and is in flight.
	w.track(store.Batch{BatchID: "b_root", Status: store.StatusCompleted, InputFileID: "f-root-in", OutputFileID: "f-root-out",
		ErrorFileID: "f-root-err", RequestTotal: 3, RequestCompleted: 2, RequestFailed: 1})
	w.load("b_root", 3)
	require.NoError(t, w.s.RecordResubmission(ctx, "b_root", &store.Batch{BatchID: "b_child", Status: store.StatusValidating,
		InputFileID: "f-child-in", RootBatchID: "b_root", ParentBatchIDs: []string{"b_root"}, Attempt: 2}, 1))

	require.Equal(t, []string{"f-done-err", "f-done-in", "f-done-out", "f-exp-err", "f-exp-out", "f-root-err", "f-root-out"},
		w.prunable(store.PruneQuery{}),
		"kept: in flight, unloaded, the expired batch's input (a resubmission reads it), the root's input (its child's load reads it), shared, queued")
	require.Equal(t, []string{"f-done-err", "f-done-in", "f-done-out", "f-exp-err", "f-exp-in", "f-exp-out", "f-root-err", "f-root-out"},
		w.prunable(store.PruneQuery{MaxAttempts: 1}), "attempt 1 of at most 1: the expired batch is never resubmitted")
	require.Equal(t, []string{"f-done-err", "f-done-in", "f-done-out"}, w.prunable(store.PruneQuery{MadeBefore: time.Now().Add(-time.Hour)}))
	require.Equal(t, []string{"f-root-err", "f-root-out"}, w.prunable(store.PruneQuery{RootBatchID: "b_root"}))

	// The child ends and is loaded: the lineage needs nothing any more.
	_, err = w.s.UpsertBatch(ctx, store.Batch{BatchID: "b_child", Status: store.StatusCompleted, InputFileID: "f-child-in",
		OutputFileID: "f-child-out", RequestTotal: 1, RequestCompleted: 1})
	require.NoError(t, err)
	w.load("b_child", 1)
	require.Equal(t, []string{"f-child-in", "f-child-out", "f-root-err", "f-root-in", "f-root-out"},
		w.prunable(store.PruneQuery{RootBatchID: "b_root"}))

	// Deleted files are not offered again, and the listing shows the record.
	require.NoError(t, w.s.RecordFileDeleted(ctx, store.FileDeletion{FileID: "f-root-in", BatchID: "b_root", Role: store.RoleInput, DeletedBy: "test"}))
	require.NoError(t, w.s.RecordFileDeleted(ctx, store.FileDeletion{FileID: "f-root-in", BatchID: "b_root", Role: store.RoleInput, Gone: true, DeletedBy: "again"}))
	require.Equal(t, []string{"f-child-in", "f-child-out", "f-root-err", "f-root-out"}, w.prunable(store.PruneQuery{RootBatchID: "b_root"}))

	files, err := w.s.ListBatchFiles(ctx, store.FileQuery{BatchIDs: []string{"b_root", "b_shared_done"}})
	require.NoError(t, err)
	type row struct {
		file, batch, role string
		loaded, needed    bool
		deletedBy         string
	}
	var got []row
	for _, f := range files {
		r := row{file: f.FileID, batch: f.BatchID, role: f.Role, loaded: f.ResultsLoadedAt != nil, needed: f.Needed}
		if f.Deleted != nil {
			require.False(t, f.Deleted.Gone, "the first record stays")
			r.deletedBy = f.Deleted.DeletedBy
		}
		got = append(got, r)
	}
	require.ElementsMatch(t, []row{
		{"f-root-in", "b_root", "input", true, false, "test"},
		{"f-root-out", "b_root", "output", true, false, ""},
		{"f-root-err", "b_root", "error", true, false, ""},
		{"f-shared", "b_shared_done", "input", true, true, ""},
	}, got)
	require.Equal(t, []string{"f-root-in", "f-root-out", "f-root-err"}, []string{files[0].FileID, files[1].FileID, files[2].FileID},
		"a batch's files in input, output, error order")

	recent, err := w.s.ListBatchFiles(ctx, store.FileQuery{Limit: 1})
	require.NoError(t, err)
	require.Len(t, recent, 2, "the most recent batch: the child, with its input and output files")
	require.Equal(t, "b_child", recent[0].BatchID)
}
