package poll

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/batchctl/batchctl/provider"
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
	if row, err = w.d.callBatch(ctx, row, "cancel", provider.Provider.Cancel); err != nil {
		return err
	}
	w.d.log.Info("cancel requested (dashboard)", "batch_id", id, "status", row.Status)
	return nil
}
