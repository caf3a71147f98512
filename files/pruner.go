package files

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/store"
)

// Defaults of the Pruner.
const (
	// DefaultWorkers is how many deletes a prune has in flight at once.
	DefaultWorkers = 4
	// pageSize is how many prunable files a prune reads from the store at a time: its memory does not grow with the
	// backlog.
	pageSize = 500
	// RecordTimeout bounds the write that records a deletion the API confirmed. It runs even when the prune is being
	// cancelled (SIGINT), so that a stopped prune leaves nothing deleted unrecorded.
	RecordTimeout = 10 * time.Second
)

// Results of a prune for one file.
const (
	ResultDeleted     = "deleted"      // the API deleted it
	ResultGone        = "gone"         // the API had no such file (expired, deleted before): recorded as deleted
	ResultWouldDelete = "would delete" // a dry run
	ResultFailed      = "failed"       // not deleted; a re-run tries again
)

// Pruner deletes the API files of tracked batches that no batch needs any more (store.Store.PrunableFiles) and
// records each deletion.
//
// It is safe to kill at any point. It only ever sends DELETE for a file the store offers, which no batch needs, and
// records a file only once the API has confirmed its delete (or answered 404), so a prune killed half way has lost
// nothing a batch needs, and leaves at most the files whose delete was in flight unrecorded: a re-run sends their
// DELETE again, is answered 404, and records them as gone.
type Pruner struct {
	Store  *store.Store
	API    API
	Logger *slog.Logger
	// By names the deleter in deleted_files.deleted_by: "files prune" or "poll".
	By string
	// Workers is how many deletes are in flight at once (DefaultWorkers).
	Workers int
}

// PruneOptions select the files a prune deletes.
type PruneOptions struct {
	// MaxAttempts is store.FileQuery.MaxAttempts: 0 keeps the input of every batch that could still be resubmitted.
	MaxAttempts int
	// OlderThan keeps files that may be younger than this (0: any age).
	OlderThan time.Duration
	// RootBatchID, when set, limits the prune to the files of that batch and of the batches whose root it is (its
	// lineage, when it is a root).
	RootBatchID string
	// DryRun reports what would be deleted and deletes nothing.
	DryRun bool
	// Provider is whose batches' files are pruned (default openai): the Pruner's API must be that provider's.
	Provider string
}

// Outcome is what a prune did with one file.
type Outcome struct {
	store.BatchFile
	Result string // ResultDeleted, ResultGone, ResultWouldDelete or ResultFailed
	Err    error  // why it failed
}

// Stats counts the outcomes of a prune.
type Stats struct {
	Deleted, Gone, WouldDelete, Failed int
}

func (st *Stats) add(o Outcome) {
	switch o.Result {
	case ResultDeleted:
		st.Deleted++
	case ResultGone:
		st.Gone++
	case ResultWouldDelete:
		st.WouldDelete++
	default:
		st.Failed++
	}
}

func (p *Pruner) log() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// Prune deletes every prunable file opts selects, a page at a time, calling report (when not nil) with each outcome,
// one call at a time. A file that fails is reported and left for a re-run; the prune goes on with the others, unless
// the API refuses the key (then it stops). It returns an error when a file failed or the context ended.
func (p *Pruner) Prune(ctx context.Context, opts PruneOptions, report func(Outcome)) (Stats, error) {
	q := store.PruneQuery{MaxAttempts: opts.MaxAttempts, RootBatchID: opts.RootBatchID, Limit: pageSize, Provider: opts.Provider}
	if opts.OlderThan > 0 {
		q.MadeBefore = time.Now().Add(-opts.OlderThan)
	}
	var (
		st       Stats
		firstErr error
		mu       sync.Mutex
	)
	emit := func(o Outcome) {
		mu.Lock()
		defer mu.Unlock()
		st.add(o)
		if o.Err != nil && firstErr == nil {
			firstErr = o.Err
		}
		if report != nil {
			report(o)
		}
	}
	for {
		page, err := p.Store.PrunableFiles(ctx, q)
		if err != nil {
			return st, err
		}
		if fatal := p.prunePage(ctx, page, opts.DryRun, emit); fatal != nil {
			return st, fatal
		}
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("prune stopped; a re-run finishes it: %w", err)
		}
		if len(page) < q.Limit {
			break
		}
		q.After = &page[len(page)-1]
	}
	if st.Failed > 0 {
		return st, fmt.Errorf("%d files not deleted (a re-run tries them again); the first: %w", st.Failed, firstErr)
	}
	return st, nil
}

// prunePage deletes one page's files with the pruner's workers. It returns an error that stops the prune: the API
// refused the key, or the store failed.
func (p *Pruner) prunePage(ctx context.Context, page []store.BatchFile, dryRun bool, emit func(Outcome)) error {
	work := make(chan store.BatchFile)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		fatal error
		stop  = make(chan struct{})
	)
	halt := func(err error) {
		once.Do(func() {
			fatal = err
			close(stop)
		})
	}
	for range cmp.Or(p.Workers, DefaultWorkers) {
		wg.Go(func() {
			for f := range work {
				if ctx.Err() != nil {
					continue // stopping: the file is left for a re-run, unreported
				}
				o := p.pruneFile(ctx, f, dryRun)
				emit(o)
				switch {
				case o.Err == nil:
				case batchapi.Classify(o.Err) == batchapi.Auth:
					halt(o.Err)
				case errors.Is(o.Err, errRecord):
					halt(o.Err)
				}
			}
		})
	}
	seen := make(map[string]bool, len(page)) // a file shared by two batches of the page is deleted once
feed:
	for _, f := range page {
		if seen[f.FileID] {
			continue
		}
		seen[f.FileID] = true
		select {
		case work <- f:
		case <-stop:
			break feed
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return fatal
}

// errRecord marks a failure to record a deletion: the store is failing, so the prune stops.
var errRecord = errors.New("record the deletion")

// pruneFile deletes one file and records it.
func (p *Pruner) pruneFile(ctx context.Context, f store.BatchFile, dryRun bool) Outcome {
	o := Outcome{BatchFile: f}
	if dryRun {
		o.Result = ResultWouldDelete
		return o
	}
	err := p.API.Delete(ctx, f.FileID)
	switch {
	case err == nil:
		o.Result = ResultDeleted
	case errors.Is(err, ErrGone):
		o.Result = ResultGone
	default:
		o.Result, o.Err = ResultFailed, err
		p.log().Warn("file not deleted", "file_id", f.FileID, "batch_id", f.BatchID, "role", f.Role, "error", batchapi.Message(err))
		return o
	}
	// The API has confirmed: record it even when the prune is being stopped, so a graceful stop leaves nothing to
	// send again.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RecordTimeout)
	defer cancel()
	if err := p.Store.RecordFileDeleted(rctx, store.FileDeletion{FileID: f.FileID, BatchID: f.BatchID, Role: f.Role,
		Gone: o.Result == ResultGone, DeletedBy: p.By}); err != nil {
		o.Result, o.Err = ResultFailed, fmt.Errorf("%w of %s (the API has deleted it; a re-run records it): %w", errRecord, f.FileID, err)
		return o
	}
	p.log().Debug("file deleted", "file_id", f.FileID, "batch_id", f.BatchID, "role", f.Role, "result", o.Result)
	return o
}
