package submit

import (
	"context"
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

// create creates the batch of an uploaded intent, recognising an earlier create of the same intent by its metadata
// (the journal's random intent and the spool file's sha256), so a crash or a lost answer never makes two batches.
func (r *run) create(ctx context.Context, j *journal, mayExist bool) (*openai.Batch, bool, error) {
	b, existing, err := r.api.Create(ctx, batchapi.Intent{
		Endpoint: j.Endpoint, InputFileID: j.FileID, Metadata: j.Metadata, Since: j.UploadedAt, LastAttempt: j.CreateSentAt,
		OutputExpiresAfter: time.Duration(j.OutputExpiresAfter) * time.Second,
		BeforeCreate: func(at time.Time) error {
			j.CreateSentAt = at.UTC()
			return j.save()
		},
		Match: func(b *openai.Batch) bool {
			return b.Metadata[MetaIntent] == j.Intent && b.Metadata[MetaSpoolSHA256] == j.SpoolSHA256
		},
	}, mayExist)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", j.spoolPath(), err) // err says "create batch for file …"
	}
	return b, existing, nil
}
