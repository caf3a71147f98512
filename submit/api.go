package submit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/batchctl/batchctl/batchapi"
)

// apiClient is the batchapi client of a run: streamed uploads and reconciling creates with the run's retry settings.
func (r *run) apiClient() *batchapi.Client {
	return &batchapi.Client{
		API: r.opts.Client, Logger: r.log,
		RetryInitial: r.opts.RetryInitial, RetryMaxElapsed: r.opts.RetryMaxElapsed,
		ReconcileSlack: r.opts.ReconcileSlack, ReconcileSettle: r.opts.ReconcileSettle, ReconcilePages: r.opts.ReconcilePages,
		Uploaded: &r.opts.Progress.BytesUploaded, FileExpiresAfter: r.opts.FileExpiresAfter,
	}
}

// intent is the batchapi intent of a journal: recognised in the batch list by its metadata (the journal's random
// intent and the spool file's sha256), so a crash or a lost answer never makes two batches.
func (r *run) intent(j *journal) batchapi.Intent {
	return batchapi.Intent{
		Endpoint: j.Endpoint, InputFileID: j.FileID, Metadata: j.Metadata, Since: j.UploadedAt, LastAttempt: j.CreateSentAt,
		OutputExpiresAfter: time.Duration(j.OutputExpiresAfter) * time.Second,
		BeforeCreate: func(at time.Time) error {
			j.CreateSentAt = at.UTC()
			return j.save()
		},
		Match: func(b *openai.Batch) bool {
			return b.Metadata[MetaIntent] == j.Intent && b.Metadata[MetaSpoolSHA256] == j.SpoolSHA256
		},
	}
}

// create creates the batch of an uploaded intent, or finds the one an earlier attempt created.
func (r *run) create(ctx context.Context, j *journal, mayExist bool) (*openai.Batch, bool, error) {
	b, existing, err := r.api.Create(ctx, r.intent(j), mayExist)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", j.spoolPath(), err) // err says "create batch for file …"
	}
	return b, existing, nil
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
			return true, r.created(ctx, j, b.ID, true)
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
		Intent: j.Intent, Model: j.Model, Endpoint: j.Endpoint, InputFileID: j.FileID, Source: j.Source,
		SpoolSHA256: j.SpoolSHA256, Part: j.Part, Requests: j.Requests, Bytes: j.Bytes, EstimatedTokens: j.Tokens,
		Metadata: j.Metadata,
	}
}
