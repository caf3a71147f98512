package files_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/files"
)

// TestPruneKeepsWhatTheLineageNeeds: with a resubmission in flight, a prune deletes the loaded batches' output and
// error files and the input of a batch nothing reads again, but keeps the root's input (the child's load takes
// input_line from it), the child's input, and a file no tracked batch names. A re-run sends no DELETE. Once the
// child is loaded, with every row at its line of the root's input, the rest of the lineage goes.
func TestPruneKeepsWhatTheLineageNeeds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, emulator.Options{ExpireRate: 1, ExpireCompletedShare: 0.5})
	root := e.submit(t, "r", 20)
	e.waitEnded(t, root)
	e.emu.SetFaults(emulator.Faults{})
	done := e.submit(t, "d", 5)
	foreign := e.upload(t, "foreign", 3) // uploaded, but no tracked batch names it: not batchctl's
	e.poll(t, e.config(t))
	child := e.resubmit(t, root)
	r, d, c := e.batch(t, root), e.batch(t, done), e.batch(t, child)
	require.Equal(t, "expired", r.Status)
	require.NotEmpty(t, r.OutputFileID)
	require.NotEmpty(t, r.ErrorFileID)
	require.Empty(t, d.ErrorFileID, "nothing failed")

	var reported []string
	st, err := e.pruner(t).Prune(ctx, files.PruneOptions{}, func(o files.Outcome) {
		reported = append(reported, o.FileID+" "+o.Role+" "+o.Result)
	})
	require.NoError(t, err)
	require.Equal(t, files.Stats{Deleted: 4}, st)
	require.ElementsMatch(t, []string{r.OutputFileID + " output deleted", r.ErrorFileID + " error deleted",
		d.InputFileID + " input deleted", d.OutputFileID + " output deleted"}, reported)
	for _, id := range []string{r.OutputFileID, r.ErrorFileID, d.InputFileID, d.OutputFileID} {
		require.False(t, e.live(t, id), id)
	}
	for _, id := range []string{r.InputFileID, c.InputFileID, foreign} {
		require.True(t, e.live(t, id), id)
	}
	require.Equal(t, map[string]bool{r.OutputFileID: false, r.ErrorFileID: false, d.InputFileID: false, d.OutputFileID: false}, e.recorded(t))

	deletes := e.emu.Stats().FileDeletes
	st, err = e.pruner(t).Prune(ctx, files.PruneOptions{}, nil)
	require.NoError(t, err)
	require.Zero(t, st)
	require.Equal(t, deletes, e.emu.Stats().FileDeletes, "a re-run sends no DELETE")

	e.poll(t, e.config(t))
	c = e.batch(t, child)
	rows, err := e.store.Pool().Query(ctx, `select custom_id, input_line from `+e.store.Schema()+`.results where batch_id = $1`, child)
	require.NoError(t, err)
	n := 0
	for rows.Next() {
		var id string
		var line *int
		require.NoError(t, rows.Scan(&id, &line))
		require.NotNil(t, line, "%s has its line in the root's input", id)
		require.Equal(t, "r-"+strconv.Itoa(*line), id)
		n++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, c.RequestTotal, n)
	require.Positive(t, n)

	st, err = e.pruner(t).Prune(ctx, files.PruneOptions{}, nil)
	require.NoError(t, err)
	require.Equal(t, files.Stats{Deleted: 3}, st)
	for _, id := range []string{r.InputFileID, c.InputFileID, c.OutputFileID} {
		require.False(t, e.live(t, id), id)
	}
	require.True(t, e.live(t, foreign), "a file no tracked batch names is never deleted")
}

// stopAfter is the real API, with the prune's context cancelled as the n-th delete returns: a prune stopped half way.
type stopAfter struct {
	files.API
	n      int64
	calls  atomic.Int64
	cancel context.CancelFunc
}

func (s *stopAfter) Delete(ctx context.Context, fileID string) error {
	err := s.API.Delete(ctx, fileID)
	if s.calls.Add(1) == s.n {
		s.cancel()
	}
	return err
}

// TestPruneStoppedHalfWayFinishesOnReRun: a prune stopped between deletes has deleted nothing a batch needs and
// recorded only files the API no longer holds; a re-run deletes the rest, and a file the first run deleted without
// recording it is answered 404 and recorded as gone.
func TestPruneStoppedHalfWayFinishesOnReRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	var loaded []string
	for i := range 8 {
		loaded = append(loaded, e.submit(t, fmt.Sprintf("b%d", i), 3))
	}
	e.poll(t, e.config(t))
	flying := e.batch(t, e.submit(t, "fly", 3)) // tracked, never polled: in flight for the prune
	var prunable []string
	for _, id := range loaded {
		b := e.batch(t, id)
		prunable = append(prunable, b.InputFileID, b.OutputFileID)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := e.pruner(t)
	p.API = &stopAfter{API: p.API, n: 5, cancel: cancel}
	_, err := p.Prune(ctx, files.PruneOptions{}, nil)
	require.ErrorIs(t, err, context.Canceled)

	require.True(t, e.live(t, flying.InputFileID), "the batch in flight keeps its input")
	recorded := e.recorded(t)
	for id := range recorded {
		require.False(t, e.live(t, id), "%s is recorded deleted, and is", id)
	}
	gone := 0
	for _, id := range prunable {
		if !e.live(t, id) {
			gone++
		}
	}
	require.GreaterOrEqual(t, len(recorded), 5)
	require.Less(t, gone, len(prunable), "the prune stopped half way")
	unrecorded := gone - len(recorded) // deletes the stop cut short after the API had done them
	t.Logf("stopped with %d of %d files deleted, %d of them recorded", gone, len(prunable), len(recorded))

	st, err := e.pruner(t).Prune(context.Background(), files.PruneOptions{}, nil)
	require.NoError(t, err)
	// Every file the first run did not record is deleted now or found gone; a delete that run cut short may still
	// have reached the API after the count above (the server finishes a request its client gave up on), so the
	// split between deleted and gone is known only to within those.
	require.Equal(t, len(prunable)-len(recorded), st.Deleted+st.Gone, "%+v", st)
	require.GreaterOrEqual(t, st.Gone, unrecorded, "%+v", st)
	require.LessOrEqual(t, st.Deleted, len(prunable)-gone, "%+v", st)
	require.Zero(t, st.Failed)
	for _, id := range prunable {
		require.False(t, e.live(t, id), id)
	}
	require.Len(t, e.recorded(t), len(prunable))
	require.True(t, e.live(t, flying.InputFileID))
}

// TestPruneDryRunOlderThanAndGone: a dry run and --older-than delete nothing; a file already gone from the API is
// recorded as gone, not failed.
func TestPruneDryRunOlderThanAndGone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, emulator.Options{})
	b1, b2 := e.submit(t, "a", 2), e.submit(t, "b", 2)
	e.poll(t, e.config(t))

	st, err := e.pruner(t).Prune(ctx, files.PruneOptions{DryRun: true}, nil)
	require.NoError(t, err)
	require.Equal(t, files.Stats{WouldDelete: 4}, st)
	st, err = e.pruner(t).Prune(ctx, files.PruneOptions{OlderThan: time.Hour}, nil)
	require.NoError(t, err)
	require.Zero(t, st, "every file is younger than an hour")
	require.Zero(t, e.emu.Stats().FileDeletes)
	require.Empty(t, e.recorded(t))

	expired := e.batch(t, b1).OutputFileID
	_, err = e.api.Files.Delete(ctx, expired) // as if it had expired, or someone deleted it
	require.NoError(t, err)
	st, err = e.pruner(t).Prune(ctx, files.PruneOptions{}, nil)
	require.NoError(t, err)
	require.Equal(t, files.Stats{Deleted: 3, Gone: 1}, st)
	require.Equal(t, map[string]bool{expired: true, e.batch(t, b1).InputFileID: false,
		e.batch(t, b2).InputFileID: false, e.batch(t, b2).OutputFileID: false}, e.recorded(t))
}

// TestPruneStopsWhenTheKeyIsRefused: an API that refuses the key fails every call; the prune stops at once, deletes
// and records nothing, and says why.
func TestPruneStopsWhenTheKeyIsRefused(t *testing.T) {
	t.Parallel()
	_, baseURL := emulator.Start(t, emulator.Options{APIKey: "right"})
	e := newEnv(t, emulator.Options{})
	for i := range 6 {
		e.submit(t, fmt.Sprintf("k%d", i), 2)
	}
	e.poll(t, e.config(t))

	p := e.pruner(t)
	wrong := openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey("wrong"))
	p.API, p.Workers = files.OpenAI{Client: &wrong}, 2
	st, err := p.Prune(context.Background(), files.PruneOptions{}, nil)
	require.Error(t, err)
	require.Equal(t, batchapi.Auth, batchapi.Classify(err))
	require.True(t, strings.Contains(err.Error(), "401"), err.Error())
	require.LessOrEqual(t, st.Failed, 3, "stopped after the workers' first calls, not one call per file")
	require.Zero(t, st.Deleted)
	require.Empty(t, e.recorded(t))
}
