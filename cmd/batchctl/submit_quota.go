package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/batchctl/batchctl/admission"
	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/provider"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
	"github.com/batchctl/batchctl/store"
	"github.com/batchctl/batchctl/submit"
)

// quotaAdmission makes a submit with a database go through the admission queue for every model with a token quota
// (batchctl quota): each batch's estimated tokens are recorded, a batch of such a model is queued, and the one
// admission point creates queued batches in order while the model's tokens in flight stay within its quota. A
// batch it cannot create now stays queued for the poller, and submit prints it as queued.
func quotaAdmission(ctx context.Context, s *submit.Options, st *store.Store, log *slog.Logger) error {
	s.EstimateTokens = true
	if s.Model != "" {
		limit, ok, err := st.Quota(ctx, s.Model)
		if err != nil {
			return err
		}
		if ok && s.MaxTokens > limit {
			return usageError{fmt.Errorf("--max-tokens %d is over %s's token quota of %d: a batch that large could never be admitted; use --max-tokens %d or less",
				s.MaxTokens, s.Model, limit, limit)}
		}
	}
	// A batch file larger than its model's quota is refused before upload. The quota does not cut the batches
	// itself: the cut shapes the run directory's files, and a re-run after a quota is set must find them again.
	quotas := map[string]int64{}
	s.Quota = func(ctx context.Context, model string) (int64, error) {
		if q, ok := quotas[model]; ok {
			return q, nil
		}
		q, _, err := st.Quota(ctx, model)
		if err == nil {
			quotas[model] = q
		}
		return q, err
	}
	api := &batchapi.Client{API: s.Client, Logger: log, ReconcileSettle: s.ReconcileSettle,
		RetryInitial: s.RetryInitial, RetryMaxElapsed: s.RetryMaxElapsed}
	p := oaiprov.New(api)
	if s.ProviderName == provider.Azure {
		p = oaiprov.NewAzure(api)
	}
	adm := &admission.Admitter{Store: st, Providers: provider.Set{p.Name(): p}, Logger: log}
	s.Admit = func(ctx context.Context, q submit.Queued) (string, bool, error) {
		return admit(ctx, st, adm, q)
	}
	return nil
}

// admit queues q when its model has a quota (or it was queued before), runs an admission pass for the model, and
// reports whether the batch now exists, is queued, or is not the queue's to handle.
func admit(ctx context.Context, st *store.Store, adm *admission.Admitter, q submit.Queued) (batchID string, queued bool, err error) {
	row, err := st.QueuedBatch(ctx, q.Intent)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_, ok, err := st.Quota(ctx, q.Model)
		if err != nil || !ok {
			return "", false, err
		}
		if row, err = st.Enqueue(ctx, queuedRow(q)); err != nil {
			return "", false, err
		}
	case err != nil:
		return "", false, err
	case row.State == store.QueueFileGone && row.InputFileID != q.InputFileID:
		// Uploaded again after the first file expired: the row takes the new file and is queued again.
		if row, err = st.Enqueue(ctx, queuedRow(q)); err != nil {
			return "", false, err
		}
	}
	if row.State == store.QueueQueued || row.State == store.QueueCreating {
		if _, err := adm.Admit(ctx, q.Model); err != nil {
			return "", false, err
		}
		if row, err = st.QueuedBatch(ctx, q.Intent); err != nil {
			return "", false, err
		}
	}
	switch row.State {
	case store.QueueCreated:
		return row.BatchID, false, nil
	case store.QueueFileGone:
		return "", false, submit.ErrFileGone
	}
	return "", true, nil
}

func queuedRow(q submit.Queued) store.QueuedBatch {
	return store.QueuedBatch{
		Intent: q.Intent, Model: q.Model, Endpoint: q.Endpoint, InputFileID: q.InputFileID, Source: q.Source,
		SpoolSHA256: q.SpoolSHA256, Part: q.Part, Requests: q.Requests, Bytes: q.Bytes,
		EstimatedTokens: q.EstimatedTokens, Metadata: q.Metadata, Provider: q.Provider,
	}
}
