package poll

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/batchctl/batchctl/store"
)

// webhookSettle is how long a refresh queued by a webhook keeps asking while the API still reports the batch in
// flight (an event may arrive before the batch object shows its end); after that, the batch's poll job takes over.
const webhookSettle = time.Minute

// refreshBatchWorker reads one batch from its API at once (store.RefreshBatchArgs, queued by a signed webhook), so
// that an ended batch's load starts in about a second rather than at its next poll.
type refreshBatchWorker struct {
	river.WorkerDefaults[store.RefreshBatchArgs]
	d *Daemon
}

func (w *refreshBatchWorker) Timeout(*river.Job[store.RefreshBatchArgs]) time.Duration {
	return pollTimeout
}

func (w *refreshBatchWorker) Work(ctx context.Context, job *river.Job[store.RefreshBatchArgs]) error {
	id := job.Args.BatchID
	row, err := w.d.jobBatch(ctx, id)
	if err != nil {
		return err
	}
	if store.IsTerminal(row.Status) {
		return nil // a poll or a refresh saw the end first; its load is queued
	}
	if row, err = w.d.getBatch(ctx, row); err != nil {
		return err
	}
	if store.IsTerminal(row.Status) {
		w.d.log.Info("batch ended (webhook)", "batch_id", id, "status", row.Status,
			"completed", row.RequestCompleted, "failed", row.RequestFailed)
		return nil
	}
	if time.Since(job.CreatedAt) < webhookSettle {
		return river.JobSnooze(time.Second)
	}
	return nil
}
