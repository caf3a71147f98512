package poll_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/store"
)

// live reports whether the emulator still holds the file.
func (e *env) live(t *testing.T, fileID string) bool {
	t.Helper()
	f, ok := e.emu.File(fileID)
	require.True(t, ok, "the emulator never had %s", fileID)
	return !f.Deleted
}

// batchRow reads a batch row.
func (e *env) batchRow(t *testing.T, batchID string) store.Batch {
	t.Helper()
	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	return b
}

// TestDeleteFilesAsResultsLoad: poll --delete-files deletes a batch's files as its results are loaded, but keeps the
// input of an expired batch while it may be resubmitted (a poller without --resubmit leaves that to batchctl
// resubmit). With --resubmit, the root's input lives until the child's load has taken every input_line from it, then
// the whole lineage's files go; files no tracked batch names stay.
func TestDeleteFilesAsResultsLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, emulator.Options{ExpireRate: 1, ExpireCompletedShare: 0.5})
	body, ids := requestFile("x", "gpt-4o-mini", 20)
	root := e.submit(t, body)
	waitEmulator(t, e, root, emulator.StatusExpired)
	e.emu.SetFaults(emulator.Faults{})
	doneBody, _ := requestFile("d", "gpt-4o-mini", 5)
	done := e.submit(t, doneBody)
	foreign, err := e.api.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(doneBody), "other.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch})
	require.NoError(t, err)

	cfg := e.config(t)
	cfg.DeleteFiles = true
	runUntilDone(t, cfg, time.Minute)
	r, d := e.batchRow(t, root), e.batchRow(t, done)
	for _, id := range []string{r.OutputFileID, r.ErrorFileID, d.InputFileID, d.OutputFileID} {
		require.False(t, e.live(t, id), "deleted once loaded: %s", id)
	}
	require.True(t, e.live(t, r.InputFileID), "the expired batch may be resubmitted: its input stays")

	cfg = e.resubmitConfig(t)
	cfg.DeleteFiles = true
	runUntilDone(t, cfg, time.Minute)
	kids := e.children(root)
	require.Len(t, kids, 1)
	c := e.batchRow(t, kids[0].ID)
	require.Equal(t, store.StatusCompleted, c.Status)
	for _, id := range []string{r.InputFileID, c.InputFileID, c.OutputFileID} {
		require.False(t, e.live(t, id), "the lineage is loaded: %s", id)
	}
	require.True(t, e.live(t, foreign.ID), "not batchctl's file")

	final := e.finalResults(t, root)
	require.Len(t, final, len(ids))
	for i, row := range final {
		require.Equal(t, ids[i], row.CustomID)
		require.NotNil(t, row.InputLine, "the root's input outlived the child's load")
		require.Equal(t, i+1, *row.InputLine)
		require.Equal(t, 200, *row.StatusCode)
	}
	var byPoll int
	require.NoError(t, e.store.Pool().QueryRow(ctx, `select count(*) from `+e.store.Schema()+`.deleted_files
		where deleted_by = 'poll' and not gone`).Scan(&byPoll))
	require.Equal(t, 7, byPoll)
}
