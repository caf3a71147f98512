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

// MaxLoadDownloads bounds the downloads of one load's files: a load whose files hold fewer rows than the batch's
// request counts (store.Batch.ExpectedRows) is rolled back and downloads them again, up to this many times in all;
// then it commits what it has, loudly.
const MaxLoadDownloads = 3

// loadSource is what a load reads a batch's results from.
type loadSource struct {
	row store.Batch
	p   provider.Provider
	idx *inputIndex                // custom_id → input line; nil when the input file is unknown or gone
	ids map[string]store.RequestID // the submitter's record of the requests, when it kept one
	pk  *packedSource              // the packing of a batch of packed requests
}

// copied is a load whose rows are copied and not yet committed.
type copied struct {
	load     *store.Load
	outcomes map[string]int
	usage    *usageSum
	// lines counts the output and error lines read: the requests answered, which a batch of packed requests
	// has fewer of than rows.
	lines int64
	// packedFailed counts the packed records whose answer failed (a packed_answer_* error row).
	packedFailed int64
}

// copyVerified copies the batch's output and error files into a load and checks the rows against the batch's
// request counts before the load is committed. A server can announce a file complete and send it cut short at a line
// boundary, with a Content-Length to match (or none): every line parses and the body ends cleanly, and only the count
// tells. Such a load is rolled back and its files downloaded again after the minimum poll interval, up to
// MaxLoadDownloads in all; a count still short is committed as it is, with an error log and
// batchctl_loads_short_total, and results_count below the request counts in the batch-ID table. A completed batch
// loaded without its output file (awaitOutput gave up waiting) is short for a reason a download cannot fix, and is
// not downloaded again.
//
// It returns the load to commit, or nil and the job's error (nil when the batch turned out loaded already).
func (w *loadWorker) copyVerified(ctx context.Context, dl *loadDeadline, src loadSource, log *slog.Logger) (*copied, error) {
	want := int64(src.row.ExpectedRows())
	for try := 1; ; try++ {
		c, fileID, err := w.copyOnce(ctx, dl, src, log)
		if errors.Is(err, store.ErrAlreadyLoaded) {
			return nil, nil
		}
		if err != nil {
			return nil, w.copyFailure(ctx, src.row, fileID, err, log)
		}
		rows := c.lines
		if rows >= want || missingOutput(src.row) {
			if try > 1 {
				log.Info("files downloaded again hold every row", "rows", rows, "expected", want, "downloads", try)
			}
			return c, nil
		}
		if try >= MaxLoadDownloads {
			w.d.m.ShortLoads.Inc()
			log.Error("the batch's files still hold fewer rows than its request counts after every download; committing the rows there are (results_count shows the shortfall)",
				"rows", rows, "expected", want, "request_total", src.row.RequestTotal, "completed", src.row.RequestCompleted,
				"failed", src.row.RequestFailed, "downloads", try)
			return c, nil
		}
		_ = c.load.Rollback(ctx)
		w.d.m.ShortDownloads.Inc()
		log.Warn("the batch's files hold fewer rows than its request counts (cut short?); rolled back, downloading them again",
			"rows", rows, "expected", want, "download", try, "of", MaxLoadDownloads, "after", w.d.cfg.Interval.Min)
		select {
		case <-ctx.Done():
			return nil, shutdownAware(ctx, ctx.Err())
		case <-time.After(w.d.cfg.Interval.Min):
		}
	}
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
		if err := w.copyFile(ctx, dl, c, src, fileID); err != nil {
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
