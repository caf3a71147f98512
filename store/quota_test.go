package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/store"
)

func TestQuotaSetReadUnset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)

	_, ok, err := s.Quota(ctx, "m")
	require.NoError(t, err)
	require.False(t, ok)
	require.ErrorIs(t, s.UnsetQuota(ctx, "m"), store.ErrNotFound)
	require.Error(t, s.SetQuota(ctx, "m", 0), "a limit must be positive")

	require.NoError(t, s.SetQuota(ctx, "m", 1000))
	require.NoError(t, s.SetQuota(ctx, "m", 2000), "setting again replaces")
	tokens, ok, err := s.Quota(ctx, "m")
	require.NoError(t, err)
	require.True(t, ok)
	require.EqualValues(t, 2000, tokens)

	require.NoError(t, s.UnsetQuota(ctx, "m"))
	_, ok, err = s.Quota(ctx, "m")
	require.NoError(t, err)
	require.False(t, ok)
}

func queued(intent, fileID string, tokens int64) store.QueuedBatch {
	return store.QueuedBatch{Intent: intent, Model: "m", Endpoint: "/v1/chat/completions", InputFileID: fileID,
		Source: "in.jsonl", SpoolSHA256: "sha-" + intent, Part: 1, Requests: 3, Bytes: 300, EstimatedTokens: tokens,
		Metadata: map[string]string{"batchctl_intent": intent}}
}

// TestEnqueueIsIdempotentAndRequeuesLostFiles: a second Enqueue of an intent changes nothing (a resumed submit must
// not queue its batch twice or move it back in the queue), except for a row whose file the API lost: it takes the new
// upload and waits again, in its old place.
func TestEnqueueIsIdempotentAndRequeuesLostFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)

	a, err := s.Enqueue(ctx, queued("intent-a", "file-a1", 100))
	require.NoError(t, err)
	require.Equal(t, store.QueueQueued, a.State)
	require.Equal(t, "sha-intent-a", a.SpoolSHA256)
	require.Equal(t, map[string]string{"batchctl_intent": "intent-a"}, a.Metadata)
	b, err := s.Enqueue(ctx, queued("intent-b", "file-b1", 200))
	require.NoError(t, err)
	require.Greater(t, b.QueueID, a.QueueID)

	again, err := s.Enqueue(ctx, queued("intent-a", "file-a2", 999))
	require.NoError(t, err)
	require.Equal(t, a.QueueID, again.QueueID)
	require.Equal(t, "file-a1", again.InputFileID, "a queued row keeps its file")
	require.EqualValues(t, 100, again.EstimatedTokens)

	rows, err := s.QueueRows(ctx, "m", store.QueueQueued)
	require.NoError(t, err)
	require.Len(t, rows, 2)
	require.Equal(t, []string{"intent-a", "intent-b"}, []string{rows[0].Intent, rows[1].Intent}, "FIFO")

	sent := time.Now()
	require.NoError(t, s.MarkCreating(ctx, a.QueueID, sent))
	require.NoError(t, s.MarkFileGone(ctx, a.QueueID, "No such File object: file-a1"))
	gone, err := s.QueuedBatch(ctx, "intent-a")
	require.NoError(t, err)
	require.Equal(t, store.QueueFileGone, gone.State)
	require.Contains(t, gone.Error, "No such File")
	require.Error(t, s.MarkCreating(ctx, a.QueueID, time.Now()), "a file_gone row is not admitted")

	back, err := s.Enqueue(ctx, queued("intent-a", "file-a2", 100))
	require.NoError(t, err)
	require.Equal(t, a.QueueID, back.QueueID, "back in its old place")
	require.Equal(t, store.QueueQueued, back.State)
	require.Equal(t, "file-a2", back.InputFileID)
	require.Empty(t, back.Error)
	require.NotNil(t, back.CreateSentAt, "an earlier create may have happened: its admission must still search")

	_, err = s.QueuedBatch(ctx, "intent-none")
	require.ErrorIs(t, err, store.ErrNotFound)
}

// TestMarkCreatedTracksAndCountsInFlight: the created row's batch is tracked with its estimate (kept by later polls,
// which know none), counted in flight under the queue's model, and QuotaReport and Pending see it all.
func TestMarkCreatedTracksAndCountsInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	require.NoError(t, s.SetQuota(ctx, "m", 1000))

	a, err := s.Enqueue(ctx, queued("intent-a", "file-a", 100))
	require.NoError(t, err)
	b, err := s.Enqueue(ctx, queued("intent-b", "file-b", 200))
	require.NoError(t, err)
	_, err = s.Enqueue(ctx, queued("intent-huge", "file-h", 5000)) // can never fit: not pending
	require.NoError(t, err)

	_, _, _, pending, err := s.Pending(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, 2, pending)

	require.NoError(t, s.MarkCreating(ctx, a.QueueID, time.Now()))
	n, err := s.InflightTokens(ctx, "m", 1)
	require.NoError(t, err)
	require.EqualValues(t, 100, n, "a row being created counts")

	est := int64(100)
	// The API names no model before validation: the queue's model is the one the quota counts.
	require.NoError(t, s.MarkCreated(ctx, a.QueueID, store.Batch{BatchID: "batch_a", Status: store.StatusValidating,
		InputFileID: "file-a", EstimatedTokens: &est, Source: "in.jsonl"}))
	require.Error(t, s.MarkCreated(ctx, a.QueueID, store.Batch{BatchID: "batch_a2", Status: store.StatusValidating}),
		"a row is created once")
	n, err = s.InflightTokens(ctx, "m", 1)
	require.NoError(t, err)
	require.EqualValues(t, 100, n, "counted once: as a batch, no longer as a row being created")
	n, err = s.InflightTokens(ctx, "m", 0.5)
	require.NoError(t, err)
	require.EqualValues(t, 50, n)

	_, err = s.UpsertBatch(ctx, store.Batch{BatchID: "batch_a", Status: store.StatusInProgress, Model: "m-2025"})
	require.NoError(t, err)
	got, err := s.GetBatch(ctx, "batch_a")
	require.NoError(t, err)
	require.NotNil(t, got.EstimatedTokens, "a poll does not null the estimate")
	require.EqualValues(t, 100, *got.EstimatedTokens)
	n, err = s.InflightTokens(ctx, "m", 1)
	require.NoError(t, err)
	require.EqualValues(t, 100, n, "still the queue's model, whatever name the API reports")

	report, err := s.QuotaReport(ctx)
	require.NoError(t, err)
	require.Len(t, report, 1)
	r := report[0]
	require.Equal(t, "m", r.Model)
	require.EqualValues(t, 1000, r.TokenLimit)
	require.EqualValues(t, 100, r.InflightTokens)
	require.Equal(t, 2, r.QueuedBatches)
	require.EqualValues(t, 5200, r.QueuedTokens)
	require.NotNil(t, r.OldestQueuedAt)
	_, ok := r.Calibration.Ratio()
	require.False(t, ok, "nothing loaded yet")

	// Ended and loaded: no longer in flight, and it calibrates the estimate.
	_, err = s.UpsertBatch(ctx, store.Batch{BatchID: "batch_a", Status: store.StatusCompleted})
	require.NoError(t, err)
	prompt := int64(60)
	_, err = s.Pool().Exec(ctx, `update `+s.Schema()+`.batches set results_loaded_at = now(), prompt_tokens = $1
		where batch_id = 'batch_a'`, prompt)
	require.NoError(t, err)
	// A batch that expired part way reports the prompt tokens of its answered requests only: not learnt from.
	partial := int64(100)
	_, err = s.TrackBatch(ctx, store.Batch{BatchID: "batch_partial", Status: store.StatusExpired, Model: "m",
		RequestTotal: 10, RequestCompleted: 4, EstimatedTokens: &partial})
	require.NoError(t, err)
	_, err = s.Pool().Exec(ctx, `update `+s.Schema()+`.batches set results_loaded_at = now(), prompt_tokens = 10
		where batch_id = 'batch_partial'`)
	require.NoError(t, err)
	c, err := s.Calibration(ctx, "m")
	require.NoError(t, err)
	require.Equal(t, store.Calibration{Batches: 1, PromptTokens: 60, EstimatedTokens: 100}, c)
	n, err = s.InflightTokens(ctx, "m", 1)
	require.NoError(t, err)
	require.Zero(t, n)
	report, err = s.QuotaReport(ctx)
	require.NoError(t, err)
	ratio, ok := report[0].Calibration.Ratio()
	require.True(t, ok)
	require.InDelta(t, 0.6, ratio, 1e-9)

	require.NoError(t, s.MarkQueued(ctx, b.QueueID, "bad request"))
	q, err := s.QueuedBatch(ctx, "intent-b")
	require.NoError(t, err)
	require.Equal(t, "bad request", q.Error)
}

// TestAdmissionLockIsExclusive: the lock of a model is held by one session at a time, released when it closes; other
// models and other schemas are not blocked.
func TestAdmissionLockIsExclusive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	unlock, err := s.AdmissionLock(ctx, "m")
	require.NoError(t, err)

	other, err := s.AdmissionLock(ctx, "n")
	require.NoError(t, err, "another model's lock is free")
	other()

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = s.AdmissionLock(short, "m")
	require.Error(t, err, "the lock is held")

	got := make(chan struct{})
	go func() {
		unlock2, err := s.AdmissionLock(ctx, "m")
		if err == nil {
			unlock2()
		}
		close(got)
	}()
	time.Sleep(100 * time.Millisecond)
	unlock()
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the lock was not released")
	}
}
