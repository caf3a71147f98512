package submit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/provider"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
	"github.com/batchctl/batchctl/store"
)

// apiClient is the provider of a run: Options.Provider, or Options.Client wrapped as the provider ProviderName, with
// streamed uploads and reconciling creates on the run's retry settings.
func (r *run) apiClient() provider.Provider {
	if r.opts.Provider != nil {
		return r.opts.Provider
	}
	if r.opts.Client == nil { // a dry run
		return nil
	}
	c := &batchapi.Client{
		API: r.opts.Client, Logger: r.log,
		RetryInitial: r.opts.RetryInitial, RetryMaxElapsed: r.opts.RetryMaxElapsed,
		ReconcileSlack: r.opts.ReconcileSlack, ReconcileSettle: r.opts.ReconcileSettle, ReconcilePages: r.opts.ReconcilePages,
		Uploaded: &r.opts.Progress.BytesUploaded, FileExpiresAfter: r.opts.FileExpiresAfter,
	}
	if r.opts.ProviderName == provider.Azure {
		return oaiprov.NewAzure(c)
	}
	return oaiprov.New(c)
}

// intent is the provider intent of a journal: recognised in the batch list by its metadata (the journal's random
// intent and the spool file's sha256), so a crash or a lost answer never makes two batches.
func (r *run) intent(j *journal) provider.Intent {
	return provider.Intent{
		Endpoint: j.Endpoint, InputFileID: j.FileID, Path: j.spoolPath(), Requests: j.Requests, Metadata: j.Metadata,
		Since: j.UploadedAt, LastAttempt: j.CreateSentAt,
		OutputExpiresAfter: time.Duration(j.OutputExpiresAfter) * time.Second,
		BeforeCreate: func(at time.Time) error {
			j.CreateSentAt = at.UTC()
			return j.save()
		},
		Match: func(b *store.Batch) bool {
			return b.Metadata[MetaIntent] == j.Intent && b.Metadata[MetaSpoolSHA256] == j.SpoolSHA256
		},
		Owned: r.owned,
	}
}

// owned reports a batch another intent owns: one a journal in SpoolDir records, or one Options.OwnedBatch knows.
func (r *run) owned(ctx context.Context, batchID string) (bool, error) {
	dirs, err := runDirs(r.opts.SpoolDir)
	if err != nil {
		return false, err
	}
	for _, dir := range dirs {
		js, err := loadJournals(dir)
		if err != nil {
			return false, err
		}
		for _, j := range js {
			if j.BatchID == batchID {
				return true, nil
			}
		}
	}
	if r.opts.OwnedBatch != nil {
		return r.opts.OwnedBatch(ctx, batchID)
	}
	return false, nil
}

// create creates the batch of an uploaded intent, or finds the one an earlier attempt created.
func (r *run) create(ctx context.Context, j *journal, mayExist bool) (store.Batch, bool, error) {
	if err := r.saveRequestIDs(ctx, j); err != nil {
		return store.Batch{}, false, err
	}
	b, existing, err := r.api.Create(ctx, r.intent(j), mayExist)
	if err != nil {
		return store.Batch{}, false, fmt.Errorf("%s: %w", j.spoolPath(), err) // err says "create batch for file …"
	}
	return b, existing, nil
}

// saveRequestIDs records, before the create, the custom_ids a renaming provider sends for an intent's requests.
func (r *run) saveRequestIDs(ctx context.Context, j *journal) error {
	rn, ok := r.api.(provider.Renamer)
	if !ok || r.opts.SaveRequestIDs == nil || !j.spoolExists() {
		return nil
	}
	if err := r.opts.SaveRequestIDs(ctx, j.SpoolSHA256, rn.RequestIDs(j.spoolPath())); err != nil {
		return fmt.Errorf("%s: record its custom_ids: %w", j.spoolPath(), err)
	}
	return nil
}

// admit offers an uploaded intent to Options.Admit. done is false when Admit does not handle it (its model has no
// quota): the caller creates the batch itself. An intent an earlier run may have created is looked for first.
func (r *run) admit(ctx context.Context, j *journal, mayExist bool) (done bool, err error) {
	if mayExist {
		b, err := r.api.FindIntent(ctx, r.intent(j))
		if err != nil {
			return true, fmt.Errorf("%s: %w", j.spoolPath(), err)
		}
		if b != nil {
			return true, r.created(ctx, j, b.BatchID, true)
		}
	}
	id, queued, err := r.opts.Admit(ctx, j.queued())
	switch {
	case errors.Is(err, ErrFileGone):
		return true, fileGoneError{err}
	case err != nil:
		return true, fmt.Errorf("admit %s: %w", j.spoolPath(), err)
	case id != "":
		return true, r.created(ctx, j, id, false)
	case queued:
		if j.State != StateQueued {
			j.State = StateQueued
			if err := j.save(); err != nil {
				return true, err
			}
			r.log.Info("queued: the batch is created when its model's token quota has room", "spool_file", j.SpoolFile,
				"model", j.Model, "estimated_tokens", j.Tokens)
		}
		return true, r.emitQueued(j)
	}
	return false, nil
}

func (j *journal) queued() Queued {
	return Queued{
		Intent: j.Intent, Provider: cmp.Or(j.Provider, provider.OpenAI), Model: j.Model, Endpoint: j.Endpoint, InputFileID: j.FileID, Source: j.Source,
		SpoolSHA256: j.SpoolSHA256, Part: j.Part, Requests: j.Requests, Bytes: j.Bytes, EstimatedTokens: j.Tokens,
		Metadata: j.Metadata,
	}
}
