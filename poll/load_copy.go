package poll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// loadSource is what a load reads a batch's results from.
type loadSource struct {
	row store.Batch
	p   provider.Provider
	idx *inputIndex                // custom_id → input line; nil when the input file is unknown or gone
	ids map[string]store.RequestID // the submitter's record of the requests, when it kept one
}

// copied is a load whose rows are copied and not yet committed.
type copied struct {
	load     *store.Load
	outcomes map[string]int
	usage    *usageSum
}

// copyFiles copies the batch's output and error files into a load. It returns the load to commit, or nil and the
// job's error (nil when the batch turned out loaded already).
func (w *loadWorker) copyFiles(ctx context.Context, dl *loadDeadline, src loadSource, log *slog.Logger) (*copied, error) {
	c, fileID, err := w.copyOnce(ctx, dl, src, log)
	if errors.Is(err, store.ErrAlreadyLoaded) {
		return nil, nil
	}
	if err != nil {
		return nil, w.copyFailure(ctx, src.row, fileID, err, log)
	}
	return c, nil
}

// copyOnce begins a load and copies the output and error files into it. On error the load is rolled back, and
// fileID names the file whose download or copy failed ("" when the database failed).
func (w *loadWorker) copyOnce(ctx context.Context, dl *loadDeadline, src loadSource, log *slog.Logger) (c *copied, fileID string, err error) {
	load, err := w.d.store.BeginLoad(ctx, src.row.BatchID, false)
	if err != nil {
		return nil, "", err
	}
	c = &copied{load: load, outcomes: map[string]int{}, usage: w.d.newUsageSum(src.row.Model, log)}
	for _, fileID := range []string{src.row.OutputFileID, src.row.ErrorFileID} {
		if fileID == "" {
			continue
		}
		if err := w.copyFile(ctx, dl, load, src, fileID, c.outcomes, c.usage); err != nil {
			_ = load.Rollback(context.Background())
			return nil, fileID, err
		}
	}
	return c, "", nil
}

// copyFailure is the job's error for a load that failed copying fileID (the database, when ""), rolled back
// already: a file gone past its expiry ends the load for good (outputLost); API errors are apiFailure's to judge.
func (w *loadWorker) copyFailure(ctx context.Context, row store.Batch, fileID string, err error, log *slog.Logger) error {
	switch {
	case fileID == "":
		return shutdownAware(ctx, err)
	case batchapi.Classify(err) == batchapi.NotFound && outputExpired(row, time.Now()):
		return w.outputLost(ctx, row, fileID, err, log)
	case batchapi.Classify(err) != batchapi.Transient:
		return w.d.apiFailure(ctx, "download", row.BatchID, time.Since(row.CreatedAt), err)
	}
	return shutdownAware(ctx, fmt.Errorf("load file %s of batch %s: %w", fileID, row.BatchID, err))
}
