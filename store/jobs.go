package store

import (
	"time"

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

// InsertOpts makes the job unique per batch ID.
func (PollBatchArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueBatches, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

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
// never, or not known), as of now. The sooner the files expire, the sooner River works the load: a backlog of loads
// (a poller back after a long stop, many batches ending at once) takes first the batches that would otherwise lose
// their output. Every other job of batchctl's has River's default, 1: those that must not wait behind a long load
// (polls, refreshes, admission) are short.
func LoadPriority(expiresAt *time.Time, now time.Time) int {
	if expiresAt == nil {
		return 3
	}
	switch left := expiresAt.Sub(now); {
	case left < 24*time.Hour:
		return 1
	case left < 7*24*time.Hour:
		return 2
	}
	return 3
}

// loadInsertOpts are the insert options of the load of a batch whose files expire at expiresAt (LoadPriority); the
// rest come from LoadResultsArgs.InsertOpts.
func loadInsertOpts(expiresAt *time.Time) *river.InsertOpts {
	return &river.InsertOpts{Priority: LoadPriority(expiresAt, time.Now())}
}

// pollDelay lets a freshly created batch validate before its first poll.
const pollDelay = 5 * time.Second

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
