package poll

import (
	"context"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/batchctl/batchctl/admission"
	"github.com/batchctl/batchctl/store"
)

// admitArgs is the periodic admission pass over every model with queued batches (admission.Admitter).
type admitArgs struct{}

func (admitArgs) Kind() string { return "batchctl_admit" }

func (admitArgs) InsertOpts() river.InsertOpts { return periodicInsertOpts() }

// admitWorker runs an admission pass. Passes of all pollers and submitters serialise per model on its advisory
// lock, so a pass here never races one elsewhere.
type admitWorker struct {
	river.WorkerDefaults[admitArgs]
	d *Daemon
}

// Timeout gives a pass as long as a load: its creates retry transient API errors with backoff. A pass cut short
// leaves at most one row in state creating, which the next pass reconciles.
func (w *admitWorker) Timeout(*river.Job[admitArgs]) time.Duration { return w.d.cfg.LoadTimeout }

func (w *admitWorker) Work(ctx context.Context, _ *river.Job[admitArgs]) error {
	created, err := w.d.admitter().Admit(ctx, "")
	if len(created) > 0 {
		w.d.log.Info("admission pass created queued batches", "batches", len(created))
	}
	return shutdownAware(ctx, err)
}

// admitter is the daemon's Admitter.
func (d *Daemon) admitter() *admission.Admitter {
	return &admission.Admitter{Store: d.store, Providers: d.providers, Logger: d.log}
}

// afterLoad runs once a batch's results are committed: the batch has left the model's tokens in flight, so an
// admission pass of its model uses the room at once rather than at the next periodic pass. A batch that failed
// token_limit_exceeded while its model has no quota gets a warning that says how to stop that happening. Neither
// fails the load, which is done.
func (d *Daemon) afterLoad(ctx context.Context, row store.Batch) {
	log := d.log.With("batch_id", row.BatchID)
	model, err := d.store.AdmissionModel(ctx, row.BatchID)
	if err != nil {
		log.Warn("admission after load: read the batch's model", "error", err)
		return
	}
	if model == "" {
		return
	}
	if row.Status == store.StatusFailed && strings.Contains(string(row.Errors), "token_limit_exceeded") {
		if _, ok, err := d.store.Quota(ctx, model); err == nil && !ok {
			log.Warn("batch failed token_limit_exceeded and its model has no quota: set one, and batches of the model wait their turn instead of failing",
				"model", model, "fix", "batchctl quota set "+model+" TOKENS")
		}
	}
	created, err := d.admitter().Admit(ctx, model)
	if err != nil && ctx.Err() == nil {
		log.Warn("admission pass after load failed; the periodic pass will try again", "model", model, "error", err)
	}
	if len(created) > 0 {
		log.Info("admitted queued batches into the room the load freed", "model", model, "batches", len(created))
	}
}
