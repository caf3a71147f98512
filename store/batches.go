package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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

// upsertSQL writes one batch as UpsertBatch describes; it returns the best known expiry of its output files.
func (s *Store) upsertSQL() string {
	return `insert into ` + s.table("batches") + ` as t (` + insertColumns + `) values (` + insertValues + `)
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
		returning ` + loadExpirySQL
}

// UpsertBatch writes what the API says of a batch. A terminal status is never replaced by a non-terminal one (a
// stale list page must not resurrect a finished batch); ended_at is set once, when the batch first ends; source,
// spool_sha256 and estimated_tokens keep their earlier values when b leaves them empty (a poll knows none of them).
// When the status changes, a notification goes to NotifyChannel in the same transaction. It returns the previous
// status ("" for a new row).
func (s *Store) UpsertBatch(ctx context.Context, b Batch) (previous string, err error) {
	prev, err := s.UpsertBatches(ctx, []Batch{b})
	if err != nil {
		return "", err
	}
	return prev[0], nil
}

// UpsertBatches is UpsertBatch for a page of batches (a bulk refresh's list page) in one transaction and one round
// trip to the database for the page's writes, instead of a transaction per batch. It returns each batch's previous
// status, in the order of bs.
func (s *Store) UpsertBatches(ctx context.Context, bs []Batch) (previous []string, err error) {
	if len(bs) == 0 {
		return nil, nil
	}
	ids := make([]string, len(bs))
	for i, b := range bs {
		ids[i] = b.BatchID
	}
	previous = make([]string, len(bs))
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The rows are locked in batch_id order, so two pollers writing overlapping pages never deadlock.
		rows, err := tx.Query(ctx, `select batch_id, status, request_completed, request_failed, request_total from `+s.table("batches")+`
			where batch_id = any($1) order by batch_id for update`, ids)
		if err != nil {
			return translate("read batches", err)
		}
		type state struct {
			status                   string
			completed, failed, total int
		}
		before := make(map[string]state, len(bs))
		var (
			id string
			st state
		)
		if _, err := pgx.ForEachRow(rows, []any{&id, &st.status, &st.completed, &st.failed, &st.total}, func() error {
			before[id] = st
			return nil
		}); err != nil {
			return translate("read batches", err)
		}

		writes := &pgx.Batch{}
		upsert := s.upsertSQL()
		written := slices.Clone(bs)
		progressed := make([]bool, len(bs)) // the same status, other request counts
		for i := range written {
			b := &written[i]
			was := before[b.BatchID]
			previous[i] = was.status
			if IsTerminal(previous[i]) && !IsTerminal(b.Status) {
				b.Status = previous[i]
			}
			progressed[i] = was.status != "" && was.status == b.Status &&
				(was.completed != b.RequestCompleted || was.failed != b.RequestFailed || was.total != b.RequestTotal)
			// a batch listed twice: its second write follows its first
			before[b.BatchID] = state{b.Status, b.RequestCompleted, b.RequestFailed, b.RequestTotal}
			writes.Queue(upsert, batchArgs(*b)...)
		}
		results := tx.SendBatch(ctx, writes)
		expiries := make([]*time.Time, len(bs))
		for i := range bs {
			if err := results.QueryRow().Scan(&expiries[i]); err != nil {
				_ = results.Close()
				return translate("upsert batch "+bs[i].BatchID, err)
			}
		}
		if err := results.Close(); err != nil {
			return translate("upsert batches", err)
		}

		var (
			loads              []river.InsertManyParams
			payloads, progress []string
		)
		for i, b := range written {
			if progressed[i] {
				p, err := json.Marshal(Notification{Schema: s.schema, BatchID: b.BatchID, Event: "progress"})
				if err != nil {
					return fmt.Errorf("encode notification: %w", err)
				}
				progress = append(progress, string(p))
			}
			if previous[i] == b.Status {
				continue
			}
			if IsTerminal(b.Status) {
				// The load is queued in the same transaction as the status that calls for it, so an ended batch can
				// never be left without one, whoever noticed the end (a poll job or a bulk refresh).
				loads = append(loads, river.InsertManyParams{Args: LoadResultsArgs{BatchID: b.BatchID}, InsertOpts: loadInsertOpts(expiries[i])})
			}
			p, err := s.notification(b, previous[i])
			if err != nil {
				return err
			}
			payloads = append(payloads, p)
		}
		if len(loads) > 0 {
			if _, err := s.river.InsertManyTx(ctx, tx, loads); err != nil {
				return translate("enqueue results loads", err)
			}
		}
		for _, n := range []struct {
			channel  string
			payloads []string
		}{{NotifyChannel, payloads}, {ProgressChannel, progress}} {
			if len(n.payloads) == 0 {
				continue
			}
			if _, err := tx.Exec(ctx, `select pg_notify($1, p) from unnest($2::text[]) as p`, n.channel, n.payloads); err != nil {
				return translate("notify "+n.channel, err)
			}
		}
		return nil
	})
	return previous, err
}

// notify announces a status change on NotifyChannel; Postgres delivers it when tx commits.
func (s *Store) notify(ctx context.Context, tx pgx.Tx, b Batch, previous string) error {
	payload, err := s.notification(b, previous)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `select pg_notify($1, $2)`, NotifyChannel, payload)
	return translate("notify "+NotifyChannel, err)
}

// notification is the payload announcing b's change from previous.
func (s *Store) notification(b Batch, previous string) (string, error) {
	payload, err := json.Marshal(Notification{
		Schema: s.schema, BatchID: b.BatchID, Status: b.Status, PreviousStatus: previous,
		RequestTotal: b.RequestTotal, RequestCompleted: b.RequestCompleted, RequestFailed: b.RequestFailed,
	})
	if err != nil {
		return "", fmt.Errorf("encode notification: %w", err)
	}
	return string(payload), nil
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

// InFlight is what a bulk refresh keeps of a batch in flight: its key, where it lives, and what the API's view is
// compared with. A refresh holds one for every batch in flight (10 000 and more), so it is a few strings, not a
// Batch with its metadata, usage and lineage.
type InFlight struct {
	BatchID, Provider, Status, Endpoint, Model string
	InputFileID, OutputFileID, ErrorFileID     string
	RequestTotal, RequestCompleted             int
	RequestFailed                              int
	CreatedAt                                  time.Time
}

// ListInFlight returns up to limit batches that have not ended, oldest first, as a bulk refresh compares them.
func (s *Store) ListInFlight(ctx context.Context, limit int) ([]InFlight, error) {
	rows, err := s.pool.Query(ctx, s.refreshListSQL(), limit)
	if err != nil {
		return nil, translate("list batches in flight", err)
	}
	bs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (InFlight, error) {
		var b InFlight
		err := row.Scan(&b.BatchID, &b.Provider, &b.Status, &b.Endpoint, &b.Model, &b.InputFileID, &b.OutputFileID,
			&b.ErrorFileID, &b.RequestTotal, &b.RequestCompleted, &b.RequestFailed, &b.CreatedAt)
		return b, err
	})
	return bs, translate("list batches in flight", err)
}

// refreshListSQL is ListInFlight's statement ($1: the limit), which ExplainHot explains too.
func (s *Store) refreshListSQL() string {
	return `select batch_id, provider, status, coalesce(endpoint, ''), coalesce(model, ''),
			coalesce(input_file_id, ''), coalesce(output_file_id, ''), coalesce(error_file_id, ''),
			request_total, request_completed, request_failed, created_at
		from ` + s.table("batches") + ` where status not in ` + terminalSQL + ` order by created_at, batch_id limit $1`
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
