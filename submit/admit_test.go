package submit_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/submit"
)

// queue is an admission queue for the tests: it queues every batch file offered while closed, and creates the
// queued ones at the emulator, in the order offered, once opened.
type queue struct {
	client *openai.Client
	mu     sync.Mutex
	open   bool
	gone   map[string]bool // input file IDs to answer ErrFileGone for
	offers []submit.Queued
}

func (q *queue) admit(ctx context.Context, in submit.Queued) (string, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.offers = append(q.offers, in)
	if q.gone[in.InputFileID] {
		return "", false, submit.ErrFileGone
	}
	if !q.open {
		return "", true, nil
	}
	b, err := q.client.Batches.New(ctx, openai.BatchNewParams{CompletionWindow: batchapi.CompletionWindow,
		Endpoint: openai.BatchNewParamsEndpoint(in.Endpoint), InputFileID: in.InputFileID, Metadata: in.Metadata})
	if err != nil {
		return "", false, err
	}
	return b.ID, false, nil
}

// A batch file the admission queue takes is printed as queued (no batch ID, its estimated tokens) and kept on
// disk; the next run offers it again and prints its batch once the queue created it, with no second upload.
func TestAdmitQueuesThenCreates(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	q := &queue{client: client}
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(5)...)}
	opts.MaxRequests = 3
	opts.EstimateTokens = true
	opts.Admit = q.admit
	require.NoError(t, submit.Run(t.Context(), opts))
	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 2)
	for _, c := range cs {
		require.True(t, c.Queued)
		require.Empty(t, c.BatchID)
		require.NotEmpty(t, c.InputFileID)
		require.Positive(t, c.EstimatedTokens)
	}
	require.Empty(t, srv.Batches())
	require.Len(t, q.offers, 2)
	require.Equal(t, cs[0].EstimatedTokens, q.offers[0].EstimatedTokens)
	spooled, err := filepath.Glob(filepath.Join(opts.SpoolDir, "*", "*.jsonl"))
	require.NoError(t, err)
	require.Len(t, spooled, 2, "a queued batch file stays until its batch exists")

	q.open = true
	out.Reset()
	resume := opts
	resume.Inputs, resume.Resume = nil, true
	require.NoError(t, submit.Run(t.Context(), resume))
	cs = decodeCreated(t, out.String())
	require.Len(t, cs, 2)
	for _, c := range cs {
		require.False(t, c.Queued)
		require.NotEmpty(t, c.BatchID)
	}
	require.Len(t, srv.Batches(), 2)
	require.Equal(t, 2, srv.Stats().FileUploads, "no second upload")
	spooled, err = filepath.Glob(filepath.Join(opts.SpoolDir, "*", "*.jsonl"))
	require.NoError(t, err)
	require.Empty(t, spooled)
}

// A queued batch whose file the API lost is uploaded again and offered with the new file.
func TestAdmitFileGoneUploadsAgain(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	q := &queue{client: client, gone: map[string]bool{}}
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(2)...)}
	opts.Admit = q.admit
	require.NoError(t, submit.Run(t.Context(), opts))
	require.Len(t, q.offers, 1)
	q.gone[q.offers[0].InputFileID] = true
	q.open = true

	resume := opts
	resume.Inputs, resume.Resume = nil, true
	require.NoError(t, submit.Run(t.Context(), resume))
	require.Len(t, q.offers, 3)
	require.NotEqual(t, q.offers[0].InputFileID, q.offers[2].InputFileID)
	require.Equal(t, q.offers[0].Intent, q.offers[2].Intent, "the same intent, with a new file")
	require.Len(t, srv.Batches(), 1)
	require.Equal(t, 2, srv.Stats().FileUploads)
}

// A batch file the queue does not handle (its model has no quota) is created by submit itself.
func TestAdmitNotHandledCreates(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(2)...)}
	offered := 0
	opts.Admit = func(context.Context, submit.Queued) (string, bool, error) {
		offered++
		return "", false, nil
	}
	require.NoError(t, submit.Run(t.Context(), opts))
	require.Equal(t, 1, offered)
	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 1)
	require.NotEmpty(t, cs[0].BatchID)
	require.Len(t, srv.Batches(), 1)
	_, err := os.Stat(opts.SpoolDir)
	require.NoError(t, err)
}
