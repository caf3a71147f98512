package poll

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// pollTimeout bounds one poll job run: one row read, at most one GET, one upsert.
const pollTimeout = time.Minute

// refreshRoundsMissed is how many bulk refresh rounds may pass over a batch's row without updating it before its poll
// job reads the batch from the API itself.
const refreshRoundsMissed = 2

// pollWorker keeps one batch's row current until the batch ends.
type pollWorker struct {
	river.WorkerDefaults[store.PollBatchArgs]
	d *Daemon
}

func (w *pollWorker) Timeout(*river.Job[store.PollBatchArgs]) time.Duration { return pollTimeout }

func (w *pollWorker) Work(ctx context.Context, job *river.Job[store.PollBatchArgs]) error {
	id := job.Args.BatchID
	log := w.d.log.With("batch_id", id)
	row, err := w.d.jobBatch(ctx, id)
	if err != nil {
		return err
	}
	if store.IsTerminal(row.Status) {
		return nil // the store queued the load with the terminal status
	}
	age := time.Since(row.CreatedAt)
	if age > w.d.cfg.Deadline {
		log.Error("batch still not ended past its deadline; no longer polling it", "status", row.Status, "age", age.Round(time.Minute))
		return river.JobCancel(fmt.Errorf("batch %s still %s %s after creation", id, row.Status, age.Round(time.Minute)))
	}

	// The bulk refresh reads every batch in flight once a period, about N/100 calls for all of them: a GET here is
	// only for a batch the refresh has missed (see refreshMissed). While the refresh keeps the row current, the job
	// looks again no sooner than it could find the batch missed: with 10 000 batches in flight, a job run per batch
	// every minimum interval was 2 000 River jobs a second (5 s interval) doing nothing.
	missed := w.d.refreshMissed(ctx, row.UpdatedAt)
	if missed {
		if row, err = w.d.getBatch(ctx, row); err != nil {
			return err
		}
		if store.IsTerminal(row.Status) {
			log.Info("batch ended", "status", row.Status, "completed", row.RequestCompleted, "failed", row.RequestFailed)
			return nil
		}
	}
	if !missed {
		return river.JobSnooze(max(w.d.cfg.Interval.Next(age), refreshRoundsMissed*w.d.cfg.Interval.Min))
	}
	return river.JobSnooze(w.d.cfg.Interval.Next(age))
}

// getBatch reads row's batch from its API and stores what the API says (UpsertBatch keeps what the row knew and the
// API leaves out); see callBatch.
func (d *Daemon) getBatch(ctx context.Context, row store.Batch) (store.Batch, error) {
	return d.callBatch(ctx, row, "get", provider.Provider.Get)
}

// callBatch makes one call about row's batch to its provider (kind names it in the metrics and errors), counts it,
// and stores the batch the API answered with. It returns that batch; its error is the job's: apiFailure's judgement
// of an API error, or the database's.
func (d *Daemon) callBatch(ctx context.Context, row store.Batch, kind string,
	call func(provider.Provider, context.Context, string) (store.Batch, error)) (store.Batch, error) {
	id, age := row.BatchID, time.Since(row.CreatedAt)
	p, err := d.provider(row)
	if err != nil {
		return row, d.apiFailure(ctx, kind, id, age, err)
	}
	d.m.PollCalls.WithLabelValues(kind).Inc()
	b, err := call(p, ctx, id)
	if err != nil {
		return row, d.apiFailure(ctx, kind, id, age, err)
	}
	if _, err := d.store.UpsertBatch(ctx, b); err != nil {
		return row, shutdownAware(ctx, err)
	}
	return b, nil
}

// apiFailure decides what a failed API call means for the job: transient errors are retried with backoff (as job
// errors, visible in River), credentials and unknown batches are logged loudly and waited out; none marks the batch.
// A local error (this machine's file system) is not the API's doing: it is logged as such and retried with backoff
// like a transient one, since the daemon has no other way forward once someone fixes the disk.
func (d *Daemon) apiFailure(ctx context.Context, kind, batchID string, age time.Duration, err error) error {
	if ctx.Err() != nil {
		return shutdownAware(ctx, err)
	}
	log := d.log.With("batch_id", batchID, "call", kind)
	if errors.Is(err, provider.ErrNoCredentials) {
		d.m.PollErrors.WithLabelValues(kind, "no_credentials").Inc()
		log.Error("skipping this batch: this poller has no credentials for its provider; batch state kept, retrying later", "error", err)
		return river.JobSnooze(d.cfg.Interval.Max)
	}
	switch batchapi.Classify(err) {
	case batchapi.Auth:
		d.m.PollErrors.WithLabelValues(kind, "auth").Inc()
		log.Error("the API refused our credentials: check the provider's API key; batch state kept, retrying later", "error", batchapi.Message(err))
		return river.JobSnooze(d.cfg.Interval.Max)
	case batchapi.NotFound:
		d.m.PollErrors.WithLabelValues(kind, "not_found").Inc()
		if age < notFoundGrace {
			return river.JobSnooze(d.cfg.Interval.Min)
		}
		log.Error("the API does not know this batch (wrong key or project?); batch state kept, retrying later", "error", batchapi.Message(err))
		return river.JobSnooze(d.cfg.Interval.Max)
	case batchapi.Permanent:
		d.m.PollErrors.WithLabelValues(kind, "permanent").Inc()
		log.Error("the API rejected the call; retrying later", "error", batchapi.Message(err))
		return river.JobSnooze(d.cfg.Interval.Max)
	case batchapi.Local:
		d.m.PollErrors.WithLabelValues(kind, "local").Inc()
		log.Error("local I/O error (not the API's); retrying with backoff", "error", err)
		return fmt.Errorf("%s batch %s: %w", kind, batchID, err)
	default:
		d.m.PollErrors.WithLabelValues(kind, "transient").Inc()
		log.Warn("transient API error; retrying with backoff", "error", batchapi.Message(err))
		return fmt.Errorf("%s batch %s: %w", kind, batchID, err)
	}
}

// provider is the API of a batch row, or an error wrapping provider.ErrNoCredentials.
func (d *Daemon) provider(row store.Batch) (provider.Provider, error) {
	p, err := d.providers.Get(row.Provider)
	if err != nil {
		return nil, fmt.Errorf("batch %s: %w", row.BatchID, err)
	}
	return p, nil
}

// jobBatch reads the row of a job's batch; its error is the job's: a batch gone from the table cancels the job.
func (d *Daemon) jobBatch(ctx context.Context, id string) (store.Batch, error) {
	row, err := d.store.GetBatch(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return row, river.JobCancel(fmt.Errorf("batch %s is not in the batch-ID table", id))
	}
	if err != nil {
		return row, shutdownAware(ctx, err)
	}
	return row, nil
}

// retryPolicy spaces the retries of every failed job by Daemon.backoff.
type retryPolicy struct{ d *Daemon }

func (p retryPolicy) NextRetry(job *rivertype.JobRow) time.Time {
	return time.Now().Add(p.d.backoff(job.Attempt))
}

// backoff is the wait before retry number attempt of a job that failed: doubling from the minimum poll interval,
// capped at the maximum.
func (d *Daemon) backoff(attempt int) time.Duration {
	wait := d.cfg.Interval.Min
	for i := 1; i < attempt && wait < d.cfg.Interval.Max; i++ {
		wait *= 2
	}
	return min(wait, d.cfg.Interval.Max)
}

// shutdownAware turns an error caused by the daemon stopping into an immediate, attempt-free reschedule, so that a
// restart picks the job up at once instead of after a backoff.
func shutdownAware(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return river.JobSnooze(0)
	}
	return err
}

// refreshRounds caches when the bulk refresh rounds ran (store.RefreshRounds), read at most once every half
// minimum interval by each daemon rather than once per poll job.
type refreshRounds struct {
	mu     sync.Mutex
	readAt time.Time
	store.RefreshRoundTimes
}

// refreshMissed reports whether a batch's row, last updated at updatedAt, has been missed by the bulk refresh: the
// last two completed rounds both started after it (their list calls failed, or the listing no longer reaches the
// batch), or no round has completed for refreshRoundsMissed periods while the row aged as long (the refresh is
// stuck, or has not run yet) and no round is under way. Rounds, not a fixed time: a round of 10 000 batches takes
// seconds and starts a little after its period, so a poll due a minimum interval after the row's update would GET
// most batches once a period, the calls the refresh saves.
func (d *Daemon) refreshMissed(ctx context.Context, updatedAt time.Time) bool {
	r := &d.rounds
	r.mu.Lock()
	if time.Since(r.readAt) >= d.cfg.Interval.Min/2 {
		if rt, err := d.store.RefreshRounds(ctx, refreshArgs{}.Kind()); err == nil {
			r.RefreshRoundTimes, r.readAt = rt, time.Now()
		}
	}
	rt := r.RefreshRoundTimes
	r.mu.Unlock()
	if !rt.BeforeStart.IsZero() && updatedAt.Before(rt.BeforeStart) {
		return true
	}
	// A round under way will reach the row: the first round over 10 000 batches takes longer than two periods, and
	// a poll job that GETs while it runs makes the call the round is about to make. A round runs at most the jobs'
	// timeout; one running longer belongs to a dead poller and covers nothing.
	if !rt.RunningSince.IsZero() && time.Since(rt.RunningSince) < d.jobTimeout() {
		return false
	}
	lastEnd := rt.LastEnd
	if lastEnd.IsZero() {
		// No round has completed yet: the first is under way, counted from this daemon's start. Ten thousand rows
		// tracked seconds before the pollers started are not each worth a GET while it runs.
		lastEnd = d.started
	}
	// The period is what the last two rounds show, when longer than the minimum interval: River starts a periodic
	// job a little late, and a long round delays the next. With one round done there is no second start to measure
	// from (the time since the zero time saturates, and twice it overflowed into a negative staleness: every poll
	// job due between a poller's first and second rounds made a GET, 984 with 10 000 batches in flight).
	period := d.cfg.Interval.Min
	if !rt.BeforeStart.IsZero() {
		period = max(period, rt.LastStart.Sub(rt.BeforeStart))
	}
	stale := refreshRoundsMissed * period
	return time.Since(updatedAt) >= stale && time.Since(lastEnd) >= stale
}
