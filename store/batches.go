package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
)

// NotifyChannel is the LISTEN/NOTIFY channel on which every batch status change is announced.
const NotifyChannel = "batchctl_batches"

// ProgressChannel is the LISTEN/NOTIFY channel of the changes that are not status changes: a batch's request counts
// moving while its status stays (Event "progress"), and its results loaded (Event "loaded"). It is apart from
// NotifyChannel, whose every notification is a status change.
const ProgressChannel = "batchctl_batch_progress"

// insertColumns are written by TrackBatch and UpsertBatch, in the order of batchArgs (updated_at is now()).
const insertColumns = `batch_id, status, endpoint, model, input_file_id, output_file_id, error_file_id,
	request_total, request_completed, request_failed, metadata, source, spool_sha256, errors,
	created_at, updated_at, ended_at, root_batch_id, parent_batch_ids, attempt, estimated_tokens, estimated_cost_usd, provider,
	output_expires_after`

// insertValues match insertColumns: an original batch is its own root, attempt 1.
const insertValues = `$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, coalesce($15, now()), now(), $16,
	coalesce($17, $1), $18, coalesce($19, 1), $20, $21::numeric, coalesce($22, 'openai'), $23`

// batchColumns are read into a Batch by scanBatch.
const batchColumns = `batch_id, status, endpoint, model, input_file_id, output_file_id, error_file_id,
	request_total, request_completed, request_failed, metadata, source, spool_sha256, errors,
	created_at, updated_at, ended_at, results_loaded_at, results_count,
	prompt_tokens, completion_tokens, total_tokens,
	root_batch_id, parent_batch_ids, attempt, resubmitted_as, resubmitted_at, resubmit_requests, estimated_tokens,
	cached_tokens, reasoning_tokens, cost_usd::text, provider, output_expires_after, output_expires_at, results_lost_at`

// loadExpirySQL is, over a batches row, the best known time its output files expire, which orders its results load
// (LoadPriority): the files' own, once a load looked them up, or else the latest that output_expires_after allows
// (the files were written by the time the batch ended). Null when neither is known.
const loadExpirySQL = `coalesce(output_expires_at, ended_at + output_expires_after * interval '1 second')`

// terminalSQL lists the terminal statuses for SQL predicates.
const terminalSQL = `('completed', 'failed', 'expired', 'cancelled')`

// TrackBatch inserts the batch row (unless it exists) and enqueues its poll job in one transaction, so a tracked
// batch always has a poller and a poll job never points at a missing row. It reports whether the row is new.
func (s *Store) TrackBatch(ctx context.Context, b Batch) (inserted bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		inserted, err = s.insertTracked(ctx, tx, b)
		return err
	})
	return inserted, err
}

func (s *Store) insertTracked(ctx context.Context, tx pgx.Tx, b Batch) (inserted bool, err error) {
	var expiry *time.Time
	err = tx.QueryRow(ctx, `insert into `+s.table("batches")+` (`+insertColumns+`) values (`+insertValues+`)
		on conflict (batch_id) do nothing returning `+loadExpirySQL, batchArgs(b)...).Scan(&expiry)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, translate("insert batch "+b.BatchID, err)
	}
	inserted = err == nil
	if inserted {
		if err := s.notify(ctx, tx, b, ""); err != nil {
			return false, err
		}
		if IsTerminal(b.Status) {
			// Tracked already ended: queue its load now, as UpsertBatch does for a status that ends a batch.
			if _, err := s.river.InsertTx(ctx, tx, LoadResultsArgs{BatchID: b.BatchID}, loadInsertOpts(expiry)); err != nil {
				return false, translate("enqueue results load for "+b.BatchID, err)
			}
		}
	}
	if _, err := s.river.InsertTx(ctx, tx, PollBatchArgs{BatchID: b.BatchID}, &river.InsertOpts{ScheduledAt: time.Now().Add(pollDelay)}); err != nil {
		return false, translate("enqueue poll job for "+b.BatchID, err)
	}
	return inserted, nil
}

// UpsertBatch writes what the API says of a batch. A terminal status is never replaced by a non-terminal one (a
// stale list page must not resurrect a finished batch); ended_at is set once, when the batch first ends; source,
// spool_sha256 and estimated_tokens keep their earlier values when b leaves them empty (a poll knows none of them).
// When the status changes, a notification goes to NotifyChannel in the same transaction. It returns the previous
// status ("" for a new row).
func (s *Store) UpsertBatch(ctx context.Context, b Batch) (previous string, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var completed, failed, total int
		err := tx.QueryRow(ctx, `select status, request_completed, request_failed, request_total from `+s.table("batches")+`
			where batch_id = $1 for update`, b.BatchID).Scan(&previous, &completed, &failed, &total)
		if err != nil && err != pgx.ErrNoRows {
			return translate("read batch "+b.BatchID, err)
		}
		if IsTerminal(previous) && !IsTerminal(b.Status) {
			b.Status = previous
		}
		var expiry *time.Time
		err = tx.QueryRow(ctx, `insert into `+s.table("batches")+` as t (`+insertColumns+`) values (`+insertValues+`)
			on conflict (batch_id) do update set
				status            = excluded.status,
				endpoint          = coalesce(excluded.endpoint, t.endpoint),
				model             = coalesce(excluded.model, t.model),
				input_file_id     = coalesce(excluded.input_file_id, t.input_file_id),
				output_file_id    = coalesce(excluded.output_file_id, t.output_file_id),
				error_file_id     = coalesce(excluded.error_file_id, t.error_file_id),
				request_total     = excluded.request_total,
				request_completed = excluded.request_completed,
				request_failed    = excluded.request_failed,
				metadata          = excluded.metadata,
				source            = coalesce(excluded.source, t.source),
				spool_sha256      = coalesce(excluded.spool_sha256, t.spool_sha256),
				errors            = coalesce(excluded.errors, t.errors),
				created_at        = least(t.created_at, excluded.created_at), -- the API's, once known, not a guess of now()
				updated_at        = now(),
				ended_at          = coalesce(t.ended_at, excluded.ended_at),
				estimated_tokens  = coalesce(excluded.estimated_tokens, t.estimated_tokens),
				estimated_cost_usd = coalesce(excluded.estimated_cost_usd, t.estimated_cost_usd),
				provider          = case when $22::text is null then t.provider else excluded.provider end,
				output_expires_after = coalesce(excluded.output_expires_after, t.output_expires_after)
			returning `+loadExpirySQL, batchArgs(b)...).Scan(&expiry)
		if err != nil {
			return translate("upsert batch "+b.BatchID, err)
		}
		if previous == b.Status {
			if completed == b.RequestCompleted && failed == b.RequestFailed && total == b.RequestTotal {
				return nil
			}
			return s.notifyProgress(ctx, tx, b.BatchID, "progress")
		}
		if IsTerminal(b.Status) {
			// The load is queued in the same transaction as the status that calls for it, so an ended batch can
			// never be left without one, whoever noticed the end (a poll job or a bulk refresh).
			if _, err := s.river.InsertTx(ctx, tx, LoadResultsArgs{BatchID: b.BatchID}, loadInsertOpts(expiry)); err != nil {
				return translate("enqueue results load for "+b.BatchID, err)
			}
		}
		return s.notify(ctx, tx, b, previous)
	})
	return previous, err
}

// notify announces a status change on NotifyChannel; Postgres delivers it when tx commits.
func (s *Store) notify(ctx context.Context, tx pgx.Tx, b Batch, previous string) error {
	payload, err := json.Marshal(Notification{
		Schema: s.schema, BatchID: b.BatchID, Status: b.Status, PreviousStatus: previous,
		RequestTotal: b.RequestTotal, RequestCompleted: b.RequestCompleted, RequestFailed: b.RequestFailed,
	})
	if err != nil {
		return fmt.Errorf("encode notification: %w", err)
	}
	_, err = tx.Exec(ctx, `select pg_notify($1, $2)`, NotifyChannel, string(payload))
	return translate("notify "+NotifyChannel, err)
}

// notifyProgress announces on ProgressChannel an event of batchID other than a status change; Postgres delivers it
// when tx commits.
func (s *Store) notifyProgress(ctx context.Context, tx pgx.Tx, batchID, event string) error {
	payload, err := json.Marshal(Notification{Schema: s.schema, BatchID: batchID, Event: event})
	if err != nil {
		return fmt.Errorf("encode notification: %w", err)
	}
	_, err = tx.Exec(ctx, `select pg_notify($1, $2)`, ProgressChannel, string(payload))
	return translate("notify "+ProgressChannel, err)
}

// Notification is the JSON payload sent on NotifyChannel (a status change) and on ProgressChannel (Event set, the
// rest of the fields but the batch's empty).
type Notification struct {
	// Event is "progress" or "loaded" on ProgressChannel; empty on NotifyChannel.
	Event            string `json:"event,omitempty"`
	Schema           string `json:"schema"`
	BatchID          string `json:"batch_id"`
	Status           string `json:"status"`
	PreviousStatus   string `json:"previous_status,omitempty"`
	RequestTotal     int    `json:"request_total"`
	RequestCompleted int    `json:"request_completed"`
	RequestFailed    int    `json:"request_failed"`
}

// GetBatch reads one batch row; ErrNotFound when there is none.
func (s *Store) GetBatch(ctx context.Context, batchID string) (Batch, error) {
	rows, err := s.pool.Query(ctx, `select `+batchColumns+` from `+s.table("batches")+` where batch_id = $1`, batchID)
	if err != nil {
		return Batch{}, translate("read batch "+batchID, err)
	}
	b, err := pgx.CollectExactlyOneRow(rows, scanBatch)
	return b, translate("read batch "+batchID, err)
}

// TouchBatches records that the API had nothing new about batchIDs: their updated_at becomes now().
func (s *Store) TouchBatches(ctx context.Context, batchIDs []string) error {
	if len(batchIDs) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, `update `+s.table("batches")+` set updated_at = now() where batch_id = any($1)`, batchIDs)
	return translate("touch batches", err)
}

// ListNonTerminal returns up to limit batches that have not ended, oldest first.
func (s *Store) ListNonTerminal(ctx context.Context, limit int) ([]Batch, error) {
	rows, err := s.pool.Query(ctx, `select `+batchColumns+` from `+s.table("batches")+`
		where status not in `+terminalSQL+` order by created_at, batch_id limit $1`, limit)
	if err != nil {
		return nil, translate("list batches in flight", err)
	}
	bs, err := pgx.CollectRows(rows, scanBatch)
	return bs, translate("list batches in flight", err)
}

// batchArgs are the values of insertValues.
func batchArgs(b Batch) []any {
	meta := b.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	var createdAt *time.Time
	if !b.CreatedAt.IsZero() {
		createdAt = &b.CreatedAt
	}
	var errs any
	if len(b.Errors) > 0 && string(b.Errors) != "null" {
		errs = string(b.Errors)
	}
	var attempt *int
	if b.Attempt > 0 {
		attempt = &b.Attempt
	}
	var expiresAfter *int64
	if secs := int64(b.OutputExpiresAfter / time.Second); secs > 0 {
		expiresAfter = &secs
	}
	return []any{
		b.BatchID, b.Status, nullable(b.Endpoint), nullable(b.Model), nullable(b.InputFileID),
		nullable(b.OutputFileID), nullable(b.ErrorFileID), b.RequestTotal, b.RequestCompleted, b.RequestFailed,
		meta, nullable(b.Source), nullable(b.SpoolSHA256), errs, createdAt, endedAt(b),
		nullable(b.RootBatchID), b.ParentBatchIDs, attempt, b.EstimatedTokens, b.EstimatedCostUSD, nullable(b.Provider),
		expiresAfter,
	}
}

// endedAt is when the batch ended: as given, or now for a terminal status given without a time.
func endedAt(b Batch) *time.Time {
	if b.EndedAt != nil {
		return b.EndedAt
	}
	if IsTerminal(b.Status) {
		now := time.Now()
		return &now
	}
	return nil
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func scanBatch(row pgx.CollectableRow) (Batch, error) {
	var (
		b                                                                Batch
		endpoint, model, in, out, errFile, source, sha, resubmitAs, root *string
		errorsJSON                                                       []byte
		expiresAfter                                                     *int64
	)
	err := row.Scan(&b.BatchID, &b.Status, &endpoint, &model, &in, &out, &errFile,
		&b.RequestTotal, &b.RequestCompleted, &b.RequestFailed, &b.Metadata, &source, &sha, &errorsJSON,
		&b.CreatedAt, &b.UpdatedAt, &b.EndedAt, &b.ResultsLoadedAt, &b.ResultsCount,
		&b.Usage.PromptTokens, &b.Usage.CompletionTokens, &b.Usage.TotalTokens,
		&root, &b.ParentBatchIDs, &b.Attempt, &resubmitAs, &b.ResubmittedAt, &b.ResubmitRequests, &b.EstimatedTokens,
		&b.Usage.CachedTokens, &b.Usage.ReasoningTokens, &b.Usage.CostUSD, &b.Provider,
		&expiresAfter, &b.OutputExpiresAt, &b.ResultsLostAt)
	if err != nil {
		return Batch{}, err
	}
	if expiresAfter != nil {
		b.OutputExpiresAfter = time.Duration(*expiresAfter) * time.Second
	}
	b.Endpoint, b.Model, b.InputFileID, b.OutputFileID = deref(endpoint), deref(model), deref(in), deref(out)
	b.ErrorFileID, b.Source, b.SpoolSHA256, b.ResubmittedAs = deref(errFile), deref(source), deref(sha), deref(resubmitAs)
	b.RootBatchID = cmp.Or(deref(root), b.BatchID)
	if errorsJSON != nil {
		b.Errors = errorsJSON
	}
	return b, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
