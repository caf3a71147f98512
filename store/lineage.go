package store

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
)

// ResubmitArgs is the River job that resubmits the retryable requests of one ended batch.
type ResubmitArgs struct {
	BatchID string `json:"batch_id"`
}

// Kind is River's name for the job.
func (ResubmitArgs) Kind() string { return "batchctl_resubmit" }

// InsertOpts makes the job unique per batch ID.
func (ResubmitArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueBatches, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// RetryableSQL is the rule, as a predicate over a results row r, for a request worth sending again: the batch
// expired before running it, or it failed for a cause that passes (rate limits, server errors). Anything else
// (a 2xx, a 4xx such as context_length_exceeded, a user's cancel) is final.
// It is never NULL, so its negation selects the final rows.
const RetryableSQL = `coalesce(r.error->>'code' in ('batch_expired', 'rate_limit_exceeded', 'server_error', 'internal_error', 'timeout', 'service_unavailable')
	or r.error->>'code' like 'packed\_answer\_%'
	or r.status_code = 429 or r.status_code >= 500, false)`

// FinalCustomIDs returns the custom_ids of batchID's rows that are final (not retryable): the requests a
// resubmission must never send again. A batch holds at most 50 000 requests, so the set is small.
func (s *Store) FinalCustomIDs(ctx context.Context, batchID string) (map[string]struct{}, error) {
	rows, err := s.pool.Query(ctx, `select r.custom_id from `+s.table("results")+` r
		where r.batch_id = $1 and not `+RetryableSQL, batchID)
	if err != nil {
		return nil, translate("read final results of "+batchID, err)
	}
	done := map[string]struct{}{}
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		done[id] = struct{}{}
		return nil
	})
	return done, translate("read final results of "+batchID, err)
}

// resubmittableSQL is, as a predicate over a batches row b, an ended batch that may have requests to resubmit:
// expired, completed with failed or missing rows or with packed records whose answers failed (packed_failed), or
// failed with token_limit_exceeded, and with an input file at
// the API to resend them from (Anthropic's inline requests have none).
const resubmittableSQL = `b.input_file_id is not null and (b.status = 'expired'
		or (b.status = 'completed' and (b.request_failed > 0 or coalesce(b.results_count, 0) < b.request_total))
		or (b.status = 'completed' and coalesce(b.packed_failed, 0) > 0)
		or (b.status = 'failed' and b.errors::text like '%token_limit_exceeded%'))`

// candidateSQL selects ended, loaded batches that may have requests to resubmit and were not looked at yet.
const candidateSQL = `b.results_loaded_at is not null and b.resubmitted_at is null and b.attempt < $1
	and ` + resubmittableSQL

// EnqueueResubmits inserts a resubmit job for every candidate batch that has none alive; it returns their IDs.
func (s *Store) EnqueueResubmits(ctx context.Context, maxAttempts int) ([]string, error) {
	return s.enqueueMissing(ctx, ResubmitArgs{}.Kind(), func(id string, _ *time.Time) river.InsertManyParams {
		return river.InsertManyParams{Args: ResubmitArgs{BatchID: id}}
	}, candidateSQL, `b.ended_at`, maxAttempts)
}

// ResubmitCandidates returns the IDs of batches that may have requests to resubmit, oldest ended first.
func (s *Store) ResubmitCandidates(ctx context.Context, maxAttempts int) ([]string, error) {
	rows, err := s.pool.Query(ctx, `select b.batch_id from `+s.table("batches")+` b where `+candidateSQL+`
		order by b.ended_at, b.batch_id`, maxAttempts)
	if err != nil {
		return nil, translate("list resubmission candidates", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids, translate("list resubmission candidates", err)
}

// LockResubmit takes a session advisory lock on the resubmission of batchID, so that only one process (a daemon's
// job or the resubmit command) works on it; the lock dies with the session if the process does. ok is false when
// another holds it. The session is a connection of its own, outside the pool: a resubmission holding a pooled
// connection for its whole run while it needs others starved the pool once as many ran at once as it had
// connections.
func (s *Store) LockResubmit(ctx context.Context, batchID string) (unlock func(), ok bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, false, fmt.Errorf("connect for the resubmission lock of %s: %w", batchID, err)
	}
	h := fnv.New64a()
	h.Write([]byte("batchctl resubmit " + s.schema + "." + batchID))
	if err := conn.QueryRow(ctx, `select pg_try_advisory_lock($1)`, int64(h.Sum64())).Scan(&ok); err != nil || !ok {
		_ = conn.Close(context.Background())
		return nil, false, translate("lock resubmission of "+batchID, err)
	}
	// Closing the session releases the lock, whatever state the caller's context is in.
	return func() { _ = conn.Close(context.Background()) }, true, nil
}

// RecordResubmission tracks child (its row and poll job) and marks parentID resubmitted as it, in one transaction.
// With child nil, it records that the parent needed no resubmission.
func (s *Store) RecordResubmission(ctx context.Context, parentID string, child *Batch, requests int) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var childID *string
		if child != nil {
			if _, err := s.insertTracked(ctx, tx, *child); err != nil {
				return err
			}
			childID = &child.BatchID
		}
		_, err := tx.Exec(ctx, `update `+s.table("batches")+` set resubmitted_as = $2, resubmitted_at = now(),
			resubmit_requests = $3, updated_at = now() where batch_id = $1`, parentID, childID, requests)
		return translate("record resubmission of "+parentID, err)
	})
}
