package submit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/cost"
)

// intents finds the journal of a batch file's content among a run directory's journals: the one this account can
// use, verified with the API when the journal was written for another endpoint or key.
type intents struct {
	r     *run
	bySHA map[string][]*journal
}

func newIntents(r *run, js []*journal) *intents {
	in := &intents{r: r, bySHA: make(map[string][]*journal, len(js))}
	for _, j := range js {
		in.add(j)
	}
	return in
}

func (in *intents) add(j *journal) {
	if j.SpoolSHA256 != "" {
		in.bySHA[j.SpoolSHA256] = append(in.bySHA[j.SpoolSHA256], j)
	}
}

// lookup returns the journal of content sha that belongs to this run's account, or nil.
func (in *intents) lookup(ctx context.Context, sha string) (*journal, error) {
	for _, j := range in.bySHA[sha] {
		ours, err := in.r.ours(ctx, j)
		if err != nil {
			return nil, err
		}
		if ours {
			return j, nil
		}
	}
	return nil, nil
}

// intend records the intent of a sealed batch file: a new pending journal, or the journal an earlier run of the
// same command made for the same content (then the new copy of the file goes). existing is true for the latter.
func (r *run) intend(ctx context.Context, p *spooledPart, in *intents) (j *journal, existing bool, err error) {
	if !r.opts.Force {
		j, err := in.lookup(ctx, p.SHA256)
		if err != nil {
			return nil, false, err
		}
		if j != nil {
			if filepath.Base(p.Path) != j.SpoolFile {
				p.remove()
			}
			r.log.Info("batch file already submitted by an earlier run", "spool_file", j.SpoolFile, "state", j.State)
			return j, true, nil
		}
	}
	intent := newIntent()
	j = r.newJournal(filepath.Dir(p.Path), p.Part, intent, p.Source, p.Model)
	j.State, j.SpoolFile, j.SpoolSHA256, j.Requests, j.Bytes = StatePending, filepath.Base(p.Path), p.SHA256, p.Requests, p.Bytes
	j.Tokens, j.OutTokens = p.Tokens, p.OutTokens
	j.Metadata[MetaSpoolSHA256] = p.SHA256
	r.packJournal(j, p)
	if err := j.save(); err != nil {
		return nil, false, err
	}
	in.add(j)
	return j, false, nil
}

// newJournal is the journal of a new intent for part of dir, not saved yet.
func (r *run) newJournal(dir string, part int, intent, source, model string) *journal {
	return &journal{
		Version: journalVersion, Intent: intent, Part: part, Model: model, Endpoint: r.opts.Endpoint,
		Source: source, Metadata: r.metadata(source, part, "", intent), SpooledAt: r.opts.Now().UTC(),
		APIBase: r.opts.APIBase, Account: r.opts.Account, Provider: r.opts.ProviderName, path: journalPath(dir, part),
		OutputExpiresAfter: int64(r.opts.OutputExpiresAfter / time.Second),
	}
}

// dryRunLine is what a dry run prints for a sealed batch file.
func (r *run) dryRunLine(p *spooledPart) error {
	r.opts.Progress.Batches.Add(1)
	return r.encode(Created{Requests: p.Requests, Bytes: p.Bytes, SpoolSHA256: p.SHA256, Source: p.Source,
		Provider: r.opts.ProviderName, Endpoint: r.opts.Endpoint, Model: p.Model, Part: p.Part, EstimatedTokens: p.Tokens, DryRun: true, SpoolFile: p.Path,
		EstimatedCostUSD: r.estimate(p.Model, p.Tokens, p.OutTokens)})
}

// finish takes an intent from whatever state it is in to a created batch, saving the journal before each next
// call, and emits the batch. An uploaded file the API no longer knows (it expired, or was deleted) is uploaded
// again from the spool file, which is kept until the batch exists.
func (r *run) finish(ctx context.Context, j *journal) error {
	for reuploaded := false; ; reuploaded = true {
		err := r.finishOnce(ctx, j)
		var gone fileGoneError
		if reuploaded || !errors.As(err, &gone) {
			return err
		}
		r.log.Warn("the uploaded batch file is gone; uploading it again", "file_id", j.FileID, "spool_file", j.SpoolFile)
		j.State, j.FileID, j.UploadedAt, j.CreateSentAt = StatePending, "", time.Time{}, time.Time{}
		if err := j.save(); err != nil {
			return err
		}
	}
}

// fileGoneError: the create found no batch of the intent, and the API does not know its input file.
type fileGoneError struct{ error }

func (r *run) finishOnce(ctx context.Context, j *journal) error {
	mayExist := false
	if j.State != StateCreated {
		if err := r.savePack(ctx, j); err != nil {
			return err
		}
	}
	switch j.State {
	case StateCreated:
		return r.emit(ctx, j, true)
	case StatePending:
		id, err := r.api.Stage(ctx, j.spoolPath())
		if err != nil {
			return err
		}
		j.State, j.FileID, j.UploadedAt = StateUploaded, id, r.opts.Now().UTC()
		if err := j.save(); err != nil {
			return err
		}
		if id != "" {
			r.log.Info("uploaded batch file", "spool_file", j.SpoolFile, "file_id", id, "bytes", j.Bytes)
		} // else the provider takes the requests inline, from the spool file, at create
		if r.opts.afterUpload != nil {
			if err := r.opts.afterUpload(); err != nil {
				return err
			}
		}
	case StateUploaded:
		mayExist = true // the last run may have created the batch and lost the answer
	case StateQueued:
		if r.opts.Admit == nil {
			return fmt.Errorf("journal %s: queued for admission, which needs the database (DATABASE_URL)", j.path)
		}
	default:
		return fmt.Errorf("journal %s: unknown state %q", j.path, j.State)
	}
	if r.opts.Admit != nil {
		if done, err := r.admit(ctx, j, mayExist); done {
			return err
		}
	}
	b, existing, err := r.create(ctx, j, mayExist)
	if err != nil {
		if kind := batchapi.Classify(err); (kind == batchapi.NotFound || kind == batchapi.Permanent) && j.spoolExists() {
			if known, ferr := r.api.FileExists(ctx, j.FileID); ferr == nil && !known {
				return fileGoneError{err}
			}
		}
		return err
	}
	return r.created(ctx, j, b.BatchID, existing)
}

// created records that an intent's batch exists, and emits it.
func (r *run) created(ctx context.Context, j *journal, batchID string, existing bool) error {
	j.State, j.BatchID, j.CreatedAt, j.LastError = StateCreated, batchID, r.opts.Now().UTC(), ""
	if err := j.save(); err != nil {
		return err
	}
	// The batch holds the file now; the journal keeps the sha256 that recognises the content.
	_ = os.Remove(j.spoolPath())
	if j.PackMap != "" {
		_ = os.Remove(j.packMapPath()) // in the database now
	}
	r.opts.Progress.Batches.Add(1)
	r.log.Info("created batch", "batch_id", batchID, "spool_file", j.SpoolFile, "requests", j.Requests)
	return r.emit(ctx, j, existing)
}

// emitQueued writes the JSON line of a queued batch, once per run.
func (r *run) emitQueued(j *journal) error {
	key := "queued:" + j.Intent
	if r.emitted[key] {
		return nil
	}
	r.emitted[key] = true
	c := j.created()
	c.EstimatedCostUSD = r.estimate(j.Model, j.Tokens, j.OutTokens)
	c.Queued = true
	return r.encode(c)
}

// emit writes a batch's JSON line, once per batch and run, and calls OnCreated.
func (r *run) emit(ctx context.Context, j *journal, existing bool) error {
	if r.emitted[j.BatchID] {
		return nil
	}
	r.emitted[j.BatchID] = true
	c := j.created()
	c.EstimatedCostUSD = r.estimate(j.Model, j.Tokens, j.OutTokens)
	c.Existing = existing
	if err := r.encode(c); err != nil {
		return err
	}
	if r.opts.OnCreated != nil {
		if err := r.opts.OnCreated(ctx, c); err != nil {
			return fmt.Errorf("after creating batch %s: %w", c.BatchID, err)
		}
	}
	return nil
}

func (r *run) encode(c Created) error {
	if err := r.enc.Encode(c); err != nil {
		return fmt.Errorf("write batch line: %w", err)
	}
	return nil
}

// deliverer finishes a stream's intents in order on its own goroutine, so that waiting on the API never holds up
// the writing of records read. It stops at the first error; what it did not finish stays in the journals.
type deliverer struct {
	r       *run
	backlog *backlog

	mu     sync.Mutex
	queue  []*journal
	closed bool
	wake   chan struct{}
	done   chan struct{}
	err    error // set before done closes
	failed chan struct{}
}

func newDeliverer(r *run, b *backlog) *deliverer {
	return &deliverer{r: r, backlog: b, wake: make(chan struct{}, 1), done: make(chan struct{}), failed: make(chan struct{})}
}

// push queues an intent; its batch file counts in the backlog until it is finished.
func (d *deliverer) push(j *journal) {
	d.backlog.add()
	d.mu.Lock()
	d.queue = append(d.queue, j)
	d.mu.Unlock()
	d.signal()
}

// close says no intent will follow; run returns once the queue is empty.
func (d *deliverer) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.signal()
}

func (d *deliverer) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// left is the number of intents queued and not finished.
func (d *deliverer) left() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.queue)
}

func (d *deliverer) run(ctx context.Context) {
	defer close(d.done)
	for {
		d.mu.Lock()
		if len(d.queue) == 0 {
			closed := d.closed
			d.mu.Unlock()
			if closed {
				return
			}
			select {
			case <-d.wake:
			case <-ctx.Done():
				d.err = ctx.Err()
				close(d.failed)
				return
			}
			continue
		}
		j := d.queue[0]
		d.mu.Unlock()
		if err := d.r.finish(ctx, j); err != nil {
			d.err = err
			close(d.failed)
			return
		}
		d.mu.Lock()
		d.queue = d.queue[1:]
		d.mu.Unlock()
		d.backlog.done()
	}
}

// estimate prices a batch's estimated tokens; nil without a price table.
func (r *run) estimate(model string, in, out int64) *Estimate {
	if r.opts.Prices == nil {
		return nil
	}
	c, ok, err := r.opts.Prices.Cost(model, cost.Usage{Input: in, Output: out})
	if !ok || err != nil {
		return &Estimate{}
	}
	return &Estimate{Pico: c, Known: true}
}

// spend adds a batch's estimate to the run's total, and refuses it (ErrOverBudget) when the total would pass
// MaxCost or the model has no price to check it against.
func (r *run) spend(model string, in, out int64) error {
	if r.opts.MaxCost <= 0 {
		return nil
	}
	e := r.estimate(model, in, out)
	if !e.Known {
		return fmt.Errorf("%w: model %s has no price to check it against (add one with --prices)", ErrOverBudget, model)
	}
	total, err := r.spent.Add(e.Pico)
	if err != nil || total > r.opts.MaxCost {
		return fmt.Errorf("%w: the estimate reaches $%s, over $%s", ErrOverBudget, total.USD(), r.opts.MaxCost.USD())
	}
	r.spent = total
	return nil
}

// fitsQuota refuses (ErrOverQuota) a batch file whose estimated tokens pass its model's quota.
func (r *run) fitsQuota(ctx context.Context, model string, part int, tokens int64) error {
	if r.opts.Quota == nil || r.opts.DryRun {
		return nil
	}
	q, err := r.opts.Quota(ctx, model)
	if err != nil || q <= 0 || tokens <= q {
		return err
	}
	return fmt.Errorf("%w: part %d holds about %d prompt tokens (estimated), over %s's quota of %d, so it could never be admitted: cut batches with --max-tokens %d or less",
		ErrOverQuota, part, tokens, model, q, q)
}
