package poll

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// outputExpiry returns row knowing when its output files expire, when its provider can tell: a row that does not
// know yet has the files looked up (provider.Expirer) and the answer recorded (output_expires_at), before the load
// downloads them, so a 404 can be told apart: a file gone past its expiry is lost, one gone before it was deleted (or
// is not visible yet) and is waited for as before. A failed lookup does not fail the load; the next load asks again.
func (d *Daemon) outputExpiry(ctx context.Context, p provider.Provider, row store.Batch, log *slog.Logger) store.Batch {
	e, ok := p.(provider.Expirer)
	if !ok || row.OutputExpiresAt != nil || (row.OutputFileID == "" && row.ErrorFileID == "") {
		return row
	}
	for _, id := range []string{row.OutputFileID, row.ErrorFileID} {
		if id != "" {
			d.m.PollCalls.WithLabelValues("file").Inc()
		}
	}
	at, err := e.OutputExpiry(ctx, row)
	if err != nil {
		log.Warn("could not look up when the batch's output files expire; loading without", "error", batchapi.Message(err))
		return row
	}
	if at.IsZero() {
		return row // they never expire
	}
	if err := d.store.SetOutputExpiry(ctx, row.BatchID, at); err != nil {
		log.Warn("record when the batch's output files expire", "error", err)
	}
	row.OutputExpiresAt = &at
	log.Debug("output files expire", "output_expires_at", at, "in", time.Until(at).Round(time.Second))
	return row
}

// outputExpired reports whether row's output files are past their expiry at now.
func outputExpired(row store.Batch, now time.Time) bool {
	return row.OutputExpiresAt != nil && !now.Before(*row.OutputExpiresAt)
}

// outputLost ends the load of a batch whose file fileID answered 404 past the files' expiry: its results are gone
// for good, so rather than retry into 404s the batch is marked (results_lost_at, which batchctl status shows),
// counted (batchctl_loads_output_expired_total), logged as an error, and the job cancelled. Nothing is loaded: a batch
// is never marked loaded with rows it does not have.
func (w *loadWorker) outputLost(ctx context.Context, row store.Batch, fileID string, cause error, log *slog.Logger) error {
	marked, err := w.d.store.MarkResultsLost(ctx, row.BatchID)
	if err != nil {
		return shutdownAware(ctx, err)
	}
	if marked {
		w.d.m.OutputExpired.Inc()
		log.Error("output expired before it was loaded: the batch's results are lost; not retrying",
			"file_id", fileID, "output_expires_at", row.OutputExpiresAt.UTC(), "expired_for", time.Since(*row.OutputExpiresAt).Round(time.Second),
			"status", row.Status, "request_total", row.RequestTotal, "completed", row.RequestCompleted, "failed", row.RequestFailed,
			"error", batchapi.Message(cause))
	}
	return river.JobCancel(fmt.Errorf("batch %s: output file %s expired at %s, before it was loaded: %w",
		row.BatchID, fileID, row.OutputExpiresAt.UTC().Format(time.RFC3339), cause))
}
