package store

import (
	"time"

	"github.com/riverqueue/river"
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

// pollDelay lets a freshly created batch validate before its first poll.
const pollDelay = 5 * time.Second
