package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// QueueBatches is the River queue of batchctl's jobs.
const QueueBatches = "batchctl"

// PollBatchArgs is the River job that tracks one batch until it ends. One exists per batch: inserting it again for
// a batch whose job is still alive (or completed) is a no-op.
type PollBatchArgs struct {
	BatchID string `json:"batch_id"`
}

// Kind is River's name for the job.
func (PollBatchArgs) Kind() string { return "batchctl_poll_batch" }

// InsertOpts makes the job unique per batch ID, at PriorityBatch.
func (PollBatchArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueBatches, Priority: PriorityBatch, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// River priorities of batchctl's jobs (1 is worked first). The per-batch jobs, polls and loads, come after the
// periodic jobs that serve every batch at once (refresh, sweep, admission, at River's default, 1): with 10 000
// batches in flight thousands of polls are due at any moment, and River works the oldest due job of the best
// priority first, so a refresh at the same priority would wait behind all of them and polls would make the GETs it
// saves. The loads are ordered among themselves by LoadPriority.
const (
	PriorityControl = 1
	PriorityBatch   = 2
)

// LoadResultsArgs is the River job that loads an ended batch's output and error files into the results table.
type LoadResultsArgs struct {
	BatchID string `json:"batch_id"`
}

// Kind is River's name for the job.
func (LoadResultsArgs) Kind() string { return "batchctl_load_results" }

// InsertOpts makes the job unique per batch ID.
func (LoadResultsArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueBatches, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// LoadPriority is the River priority of the results load of a batch whose output files expire at expiresAt (nil:
// never, or not known), as of now: PriorityBatch and the two after it. The sooner the files expire, the sooner River
// works the load: a backlog of loads (a poller back after a long stop, many batches ending at once) takes first the
// batches that would otherwise lose their output. The periodic jobs (PriorityControl) come before any load: they are
// short, and a load may be long.
func LoadPriority(expiresAt *time.Time, now time.Time) int {
	if expiresAt == nil {
		return PriorityBatch + 2
	}
	switch left := expiresAt.Sub(now); {
	case left < 24*time.Hour:
		return PriorityBatch
	case left < 7*24*time.Hour:
		return PriorityBatch + 1
	}
	return PriorityBatch + 2
}

// loadInsertOpts are the insert options of the load of a batch whose files expire at expiresAt (LoadPriority); the
// rest come from LoadResultsArgs.InsertOpts.
func loadInsertOpts(expiresAt *time.Time) *river.InsertOpts {
	return &river.InsertOpts{Priority: LoadPriority(expiresAt, time.Now())}
}

// pollDelay lets a freshly created batch validate before its first poll.
const pollDelay = 5 * time.Second

// RefreshRoundTimes says when the bulk refresh rounds (River jobs of one kind) ran: the starts of the last two
// completed rounds and the end of the last one, and the start of a round running now; zero times for rounds not seen.
type RefreshRoundTimes struct {
	LastStart, BeforeStart, LastEnd time.Time
	RunningSince                    time.Time
}

// RefreshRounds returns when the last two completed bulk refresh rounds (River jobs of kind) started, when the last
// one finished, and when the round running now, if any, started. River keeps completed jobs for a day; the index on
// (state, finalized_at) finds them without a scan, and River's fetch index (state first) the running one.
func (s *Store) RefreshRounds(ctx context.Context, kind string) (RefreshRoundTimes, error) {
	var rt RefreshRoundTimes
	rows, err := s.pool.Query(ctx, `select attempted_at, finalized_at from `+s.table("river_job")+`
		where state = 'completed' and finalized_at is not null and kind = $1 order by finalized_at desc limit 2`, kind)
	if err != nil {
		return rt, translate("read refresh rounds", err)
	}
	var (
		starts     []time.Time
		start, end *time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&start, &end}, func() error {
		if len(starts) == 0 && end != nil {
			rt.LastEnd = *end
		}
		if start != nil {
			starts = append(starts, *start)
		}
		return nil
	})
	if err != nil {
		return rt, translate("read refresh rounds", err)
	}
	if len(starts) > 0 {
		rt.LastStart = starts[0]
	}
	if len(starts) > 1 {
		rt.BeforeStart = starts[1]
	}
	var running *time.Time
	err = s.pool.QueryRow(ctx, `select max(attempted_at) from `+s.table("river_job")+`
		where state = 'running' and kind = $1`, kind).Scan(&running)
	if err != nil {
		return rt, translate("read the running refresh round", err)
	}
	if running != nil {
		rt.RunningSince = *running
	}
	return rt, nil
}

// RefreshBatchArgs is the River job that reads one batch from its API at once, queued by a signed webhook that says
// the batch ended: the pollers learn of the end in about a second instead of at the batch's next poll.
//
// It is unique per batch in every state but cancelled and discarded, completed included: a webhook delivered again
// (a retry, a replay, a second endpoint) finds the job already queued or done and changes nothing.
type RefreshBatchArgs struct {
	BatchID string `json:"batch_id"`
}

// Kind is River's name for the job.
func (RefreshBatchArgs) Kind() string { return "batchctl_refresh_batch" }

// InsertOpts puts the job at River's highest priority and makes it unique per batch ID.
func (RefreshBatchArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueBatches, Priority: 1, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// CancelBatchArgs is the River job that asks a batch's API to cancel it, queued by the dashboard's cancel button
// (batchctl serve --allow-actions): the web surface holds no API key, the pollers do.
type CancelBatchArgs struct {
	BatchID string `json:"batch_id"`
}

// Kind is River's name for the job.
func (CancelBatchArgs) Kind() string { return "batchctl_cancel_batch" }

// InsertOpts makes the job unique per batch ID while it waits or runs (a second click changes nothing).
func (CancelBatchArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueBatches, Priority: 1, UniqueOpts: river.UniqueOpts{ByArgs: true,
		ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
			rivertype.JobStateRunning, rivertype.JobStateScheduled}}}
}
