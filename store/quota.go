package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// States of a row of the admission queue (<schema>.batch_queue).
const (
	QueueQueued   = "queued"    // waiting for its turn within its model's quota
	QueueCreating = "creating"  // its create may have been sent (CreateSentAt): reconcile before creating again
	QueueCreated  = "created"   // BatchID is its batch, tracked in the batch-ID table
	QueueFileGone = "file_gone" // the API no longer knows its input file; a new upload queues it again
)

// QueuedBatch is one row of the admission queue: an uploaded batch file waiting for its model's quota to make room.
type QueuedBatch struct {
	QueueID                                           int64
	Intent, State                                     string
	Model, Endpoint, InputFileID, Source, SpoolSHA256 string
	// Provider is the batch API the batch is created at (provider.OpenAI when empty).
	Provider               string
	Part, Requests         int
	Bytes, EstimatedTokens int64
	Metadata               map[string]string
	QueuedAt               time.Time
	CreateSentAt           *time.Time
	BatchID, Error         string
}

// Calibration compares batchctl's prompt-token estimates with what the API reported, over a model's loaded batches
// that have both and completed with every request answered.
type Calibration struct {
	Batches         int
	PromptTokens    int64 // Σ prompt_tokens reported by the API
	EstimatedTokens int64 // Σ estimated_tokens of the same batches
}

// Ratio is Σ prompt_tokens / Σ estimated_tokens; ok is false when there is nothing to compare.
func (c Calibration) Ratio() (ratio float64, ok bool) {
	if c.Batches == 0 || c.EstimatedTokens <= 0 {
		return 0, false
	}
	return float64(c.PromptTokens) / float64(c.EstimatedTokens), true
}

// QuotaRow is one model in QuotaReport.
type QuotaRow struct {
	Model      string
	TokenLimit int64 // 0 when the model has no quota
	// InflightTokens is the estimated tokens (uncalibrated) of the model's batches not yet ended and of its queue
	// rows whose create may be under way.
	InflightTokens int64
	QueuedBatches  int
	QueuedTokens   int64
	OldestQueuedAt *time.Time
	Calibration    Calibration
}

// queueColumns are read into a QueuedBatch by scanQueued.
const queueColumns = `queue_id, intent, state, model, endpoint, input_file_id, source, spool_sha256, part, requests,
	bytes, estimated_tokens, metadata, queued_at, create_sent_at, batch_id, error, provider`

// queueModel is, over a batches row b, the model whose quota the batch counts against: the model its queue row was
// admitted under, else the model the API reports. The API may name the model differently (a dated snapshot) or not
// at all before validation; the queue's name is the one the quota is set for.
func (s *Store) queueModel() string {
	return `coalesce((select q.model from ` + s.table("batch_queue") + ` q
		where q.batch_id = b.batch_id and q.state = 'created'), b.model)`
}

// inflightSQL sums, over the model $1, the estimated tokens of batches not yet ended and of queue rows being created,
// each scaled by the factor $2 and rounded up. A batch without an estimate (created outside admission) counts 0: its
// size is unknown.
func (s *Store) inflightSQL() string {
	return `select coalesce(sum(ceil(t * $2::float8)), 0)::bigint from (
		select b.estimated_tokens as t from ` + s.table("batches") + ` b
			where b.status not in ` + terminalSQL + ` and b.estimated_tokens is not null and ` + s.queueModel() + ` = $1
		union all
		select c.estimated_tokens from ` + s.table("batch_queue") + ` c where c.model = $1 and c.state = 'creating'
	) x`
}

// calibrationSQL reads a Calibration of the model $1. It learns only from batches that completed with every request
// answered: the prompt_tokens of a batch that expired part way, or whose requests failed, count only the answered
// requests, and would make the estimate look higher than it is, so admission would overshoot.
func (s *Store) calibrationSQL() string {
	return `select count(*)::int, coalesce(sum(b.prompt_tokens), 0)::bigint, coalesce(sum(b.estimated_tokens), 0)::bigint
		from ` + s.table("batches") + ` b
		where b.results_loaded_at is not null and b.prompt_tokens is not null and b.estimated_tokens > 0
			and b.status = 'completed' and b.request_failed = 0 and b.request_completed = b.request_total
			and ` + s.queueModel() + ` = $1`
}

// SetQuota sets model's enqueued-token limit, replacing any earlier one.
func (s *Store) SetQuota(ctx context.Context, model string, tokens int64) error {
	if model == "" || tokens <= 0 {
		return fmt.Errorf("set quota: want a model and a positive token limit, got %q and %d", model, tokens)
	}
	_, err := s.pool.Exec(ctx, `insert into `+s.table("quotas")+` (model, token_limit) values ($1, $2)
		on conflict (model) do update set token_limit = excluded.token_limit, updated_at = now()`, model, tokens)
	return translate("set quota of "+model, err)
}

// UnsetQuota removes model's limit; ErrNotFound when it has none.
func (s *Store) UnsetQuota(ctx context.Context, model string) error {
	tag, err := s.pool.Exec(ctx, `delete from `+s.table("quotas")+` where model = $1`, model)
	if err != nil {
		return translate("unset quota of "+model, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("unset quota of %s: %w", model, ErrNotFound)
	}
	return nil
}

// Quota reads model's limit; ok is false when it has none.
func (s *Store) Quota(ctx context.Context, model string) (tokens int64, ok bool, err error) {
	err = s.pool.QueryRow(ctx, `select token_limit from `+s.table("quotas")+` where model = $1`, model).Scan(&tokens)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, translate("read quota of "+model, err)
	}
	return tokens, true, nil
}

// Enqueue inserts q (state queued) unless a row with q.Intent exists; a row in state file_gone takes q's InputFileID
// and goes back to queued (keeping its place and its create_sent_at, so its admission still searches for a batch an
// earlier create may have made). It returns the row as stored.
func (s *Store) Enqueue(ctx context.Context, q QueuedBatch) (QueuedBatch, error) {
	if q.Intent == "" || q.Model == "" || q.Endpoint == "" || q.InputFileID == "" {
		return QueuedBatch{}, fmt.Errorf("enqueue: intent, model, endpoint and input file are required (intent %q)", q.Intent)
	}
	meta := q.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	rows, err := s.pool.Query(ctx, `insert into `+s.table("batch_queue")+` as t
			(intent, model, endpoint, input_file_id, source, spool_sha256, part, requests, bytes, estimated_tokens, metadata,
			provider)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, coalesce($12, 'openai'))
		on conflict (intent) do update set input_file_id = excluded.input_file_id, state = 'queued', error = null,
			updated_at = now()
			where t.state = 'file_gone'
		returning `+queueColumns,
		q.Intent, q.Model, q.Endpoint, q.InputFileID, nullable(q.Source), nullable(q.SpoolSHA256), q.Part, q.Requests,
		q.Bytes, q.EstimatedTokens, meta, nullable(q.Provider))
	if err != nil {
		return QueuedBatch{}, translate("enqueue intent "+q.Intent, err)
	}
	got, err := pgx.CollectExactlyOneRow(rows, scanQueued)
	if errors.Is(err, pgx.ErrNoRows) { // queued before, and not file_gone: left as it is
		return s.QueuedBatch(ctx, q.Intent)
	}
	return got, translate("enqueue intent "+q.Intent, err)
}

// QueuedBatch reads the queue row of intent; ErrNotFound when there is none.
func (s *Store) QueuedBatch(ctx context.Context, intent string) (QueuedBatch, error) {
	rows, err := s.pool.Query(ctx, `select `+queueColumns+` from `+s.table("batch_queue")+` where intent = $1`, intent)
	if err != nil {
		return QueuedBatch{}, translate("read queued intent "+intent, err)
	}
	q, err := pgx.CollectExactlyOneRow(rows, scanQueued)
	return q, translate("read queued intent "+intent, err)
}

// QueueRows lists model's queue rows in state, in queue order (FIFO).
func (s *Store) QueueRows(ctx context.Context, model, state string) ([]QueuedBatch, error) {
	rows, err := s.pool.Query(ctx, `select `+queueColumns+` from `+s.table("batch_queue")+`
		where model = $1 and state = $2 order by queue_id`, model, state)
	if err != nil {
		return nil, translate("list "+state+" rows of "+model, err)
	}
	qs, err := pgx.CollectRows(rows, scanQueued)
	return qs, translate("list "+state+" rows of "+model, err)
}

// QueueModels lists the models with rows queued or being created.
func (s *Store) QueueModels(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `select distinct model from `+s.table("batch_queue")+`
		where state in ('queued', 'creating') order by model`)
	if err != nil {
		return nil, translate("list models with queued batches", err)
	}
	ms, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ms, translate("list models with queued batches", err)
}

// InflightTokens is the model's estimated tokens in flight: each batch not yet ended, and each queue row whose
// create may be under way, counts ceil(estimated_tokens × factor).
func (s *Store) InflightTokens(ctx context.Context, model string, factor float64) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, s.inflightSQL(), model, factor).Scan(&n)
	return n, translate("sum tokens in flight of "+model, err)
}

// Calibration compares estimates with reported prompt tokens over model's loaded batches.
func (s *Store) Calibration(ctx context.Context, model string) (Calibration, error) {
	var c Calibration
	err := s.pool.QueryRow(ctx, s.calibrationSQL(), model).Scan(&c.Batches, &c.PromptTokens, &c.EstimatedTokens)
	return c, translate("read calibration of "+model, err)
}

// MarkCreating records, durably and before the create call, that the row's create is about to be sent at at.
func (s *Store) MarkCreating(ctx context.Context, queueID int64, at time.Time) error {
	return s.setQueueState(ctx, queueID, QueueCreating, "", &at, QueueQueued, QueueCreating)
}

// MarkQueued puts a row whose create failed for good back in the queue with the error, keeping create_sent_at.
func (s *Store) MarkQueued(ctx context.Context, queueID int64, errMsg string) error {
	return s.setQueueState(ctx, queueID, QueueQueued, errMsg, nil, QueueQueued, QueueCreating)
}

// MarkFileGone records that the API no longer knows the row's input file.
func (s *Store) MarkFileGone(ctx context.Context, queueID int64, errMsg string) error {
	return s.setQueueState(ctx, queueID, QueueFileGone, errMsg, nil, QueueQueued, QueueCreating)
}

// setQueueState moves a row in one of the states from to state, with errMsg as its error ("" clears it) and, when
// sentAt is set, a new create_sent_at.
func (s *Store) setQueueState(ctx context.Context, queueID int64, state, errMsg string, sentAt *time.Time, from ...string) error {
	tag, err := s.pool.Exec(ctx, `update `+s.table("batch_queue")+` set state = $2, error = $3,
			create_sent_at = coalesce($4, create_sent_at), updated_at = now()
		where queue_id = $1 and state = any($5)`, queueID, state, nullable(errMsg), sentAt, from)
	if err != nil {
		return translate(fmt.Sprintf("mark queue row %d %s", queueID, state), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("mark queue row %d %s: not in state %v: %w", queueID, state, from, ErrNotFound)
	}
	return nil
}

// SetQueueError records an error on a row without moving it (a batch too large for its quota stays queued).
func (s *Store) SetQueueError(ctx context.Context, queueID int64, errMsg string) error {
	_, err := s.pool.Exec(ctx, `update `+s.table("batch_queue")+` set error = $2, updated_at = now()
		where queue_id = $1 and error is distinct from $2`, queueID, nullable(errMsg))
	return translate(fmt.Sprintf("record error of queue row %d", queueID), err)
}

// MarkCreated records that the row's batch b exists, and tracks b (TrackBatch: its row and its poll job), in one
// transaction: a created row always has its batch counted in flight, and a batch counted in flight is no longer
// counted as being created.
func (s *Store) MarkCreated(ctx context.Context, queueID int64, b Batch) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `update `+s.table("batch_queue")+` set state = 'created', batch_id = $2, error = null,
				updated_at = now()
			where queue_id = $1 and state in ('queued', 'creating')`, queueID, b.BatchID)
		if err != nil {
			return translate(fmt.Sprintf("mark queue row %d created", queueID), err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("mark queue row %d created as %s: not awaiting creation: %w", queueID, b.BatchID, ErrNotFound)
		}
		inserted, err := s.insertTracked(ctx, tx, b)
		if err != nil || inserted {
			return err
		}
		// Tracked before (by a poll or by hand): it still needs what only the queue knew.
		_, err = tx.Exec(ctx, `update `+s.table("batches")+` set estimated_tokens = coalesce(estimated_tokens, $2),
				source = coalesce(source, $3), spool_sha256 = coalesce(spool_sha256, $4), model = coalesce(model, $5)
			where batch_id = $1`, b.BatchID, b.EstimatedTokens, nullable(b.Source), nullable(b.SpoolSHA256), nullable(b.Model))
		return translate("complete batch "+b.BatchID, err)
	})
}

// AdmissionLock takes model's admission lock: a session-level advisory lock, on a connection of its own outside the
// pool (a waiting admitter holds no pooled connection that the holder may need), waiting while another session
// holds it. unlock closes the connection, which releases the lock; so does the death of the process.
func (s *Store) AdmissionLock(ctx context.Context, model string) (unlock func(), err error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("connect for the admission lock of %s: %w", model, err)
	}
	if _, err := conn.Exec(ctx, `select pg_advisory_lock(hashtextextended('batchctl:admit:' || $1 || ':' || $2, 0))`,
		s.schema, model); err != nil {
		_ = conn.Close(context.Background())
		return nil, translate("take the admission lock of "+model, err)
	}
	return func() { _ = conn.Close(context.Background()) }, nil
}

// AdmissionModel is the model whose quota batchID counts against: its queue row's, else the model the API reported.
func (s *Store) AdmissionModel(ctx context.Context, batchID string) (string, error) {
	var model *string
	err := s.pool.QueryRow(ctx, `select `+s.queueModel()+` from `+s.table("batches")+` b where b.batch_id = $1`,
		batchID).Scan(&model)
	return deref(model), translate("read admission model of "+batchID, err)
}

// QuotaReport describes every model with a quota or with rows queued or being created.
func (s *Store) QuotaReport(ctx context.Context) ([]QuotaRow, error) {
	inflight := `(` + s.inflightSQL() + `)`
	calib := s.calibrationSQL()
	// The fragments take the model as $1 and a factor as $2: bind them to the outer row through a lateral join.
	rows, err := s.pool.Query(ctx, `with models as (
			select model from `+s.table("quotas")+`
			union
			select model from `+s.table("batch_queue")+` where state in ('queued', 'creating')
		)
		select m.model, coalesce(q.token_limit, 0), i.tokens, w.n, w.tokens, w.oldest, c.n, c.prompt, c.est
		from models m
		left join `+s.table("quotas")+` q on q.model = m.model
		cross join lateral (select `+rebind(inflight)+` as tokens) i
		cross join lateral (select count(*)::int as n, coalesce(sum(estimated_tokens), 0)::bigint as tokens,
			min(queued_at) as oldest from `+s.table("batch_queue")+` where model = m.model and state = 'queued') w
		cross join lateral (`+rebind(calib)+`) c(n, prompt, est)
		order by m.model`)
	if err != nil {
		return nil, translate("report quotas", err)
	}
	report, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (QuotaRow, error) {
		var r QuotaRow
		err := row.Scan(&r.Model, &r.TokenLimit, &r.InflightTokens, &r.QueuedBatches, &r.QueuedTokens, &r.OldestQueuedAt,
			&r.Calibration.Batches, &r.Calibration.PromptTokens, &r.Calibration.EstimatedTokens)
		return r, err
	})
	return report, translate("report quotas", err)
}

// rebind makes a fragment written for one model ($1, factor $2) read the outer query's model m.model, factor 1.
func rebind(sql string) string {
	return strings.ReplaceAll(strings.ReplaceAll(sql, "$1", "m.model"), "$2", "1")
}

func scanQueued(row pgx.CollectableRow) (QueuedBatch, error) {
	var (
		q                         QueuedBatch
		source, sha, batch, errMs *string
	)
	err := row.Scan(&q.QueueID, &q.Intent, &q.State, &q.Model, &q.Endpoint, &q.InputFileID, &source, &sha, &q.Part,
		&q.Requests, &q.Bytes, &q.EstimatedTokens, &q.Metadata, &q.QueuedAt, &q.CreateSentAt, &batch, &errMs, &q.Provider)
	q.Source, q.SpoolSHA256, q.BatchID, q.Error = deref(source), deref(sha), deref(batch), deref(errMs)
	return q, err
}
