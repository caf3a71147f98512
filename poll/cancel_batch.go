package poll

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/batchctl/batchctl/store"
)

// cancelBatchWorker asks a batch's API to cancel it (store.CancelBatchArgs, queued by the dashboard) and records
// the answer, as batchctl cancel does.
type cancelBatchWorker struct {
	river.WorkerDefaults[store.CancelBatchArgs]
	d *Daemon
}

func (w *cancelBatchWorker) Timeout(*river.Job[store.CancelBatchArgs]) time.Duration {
	return pollTimeout
}

func (w *cancelBatchWorker) Work(ctx context.Context, job *river.Job[store.CancelBatchArgs]) error {
	id := job.Args.BatchID
	row, err := w.d.jobBatch(ctx, id)
	if err != nil {
		return err
	}
	if store.IsTerminal(row.Status) {
		return nil
	}
	age := time.Since(row.CreatedAt)
	p, err := w.d.provider(row)
	if err != nil {
		return w.d.apiFailure(ctx, "cancel", id, age, err)
	}
	w.d.m.PollCalls.WithLabelValues("cancel").Inc()
	if row, err = p.Cancel(ctx, id); err != nil {
		return w.d.apiFailure(ctx, "cancel", id, age, err)
	}
	if _, err := w.d.store.UpsertBatch(ctx, row); err != nil {
		return shutdownAware(ctx, err)
	}
	w.d.log.Info("cancel requested (dashboard)", "batch_id", id, "status", row.Status)
	return nil
}
