package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ResultSource yields result rows one at a time, so a load never holds a whole file in memory.
type ResultSource interface {
	// Next advances to the next row; false at the end or on error.
	Next() bool
	// Result is the current row; its byte slices may be reused after the next call to Next.
	Result() Result
	// Err is the error that stopped Next, if any.
	Err() error
}

// Load is one batch's results load: a transaction that holds the batch row locked, starts from no result rows for
// the batch, copies rows in, and commits them together with results_loaded_at. A load that does not reach
// MarkLoaded leaves the table as it was, so a crash at any point and a rerun leave each (batch_id, custom_id) once.
type Load struct {
	s       *Store
	tx      pgx.Tx
	batchID string
	rows    int64
	// packedFailed counts the packed records whose answer failed (SetPackedFailed).
	packedFailed int64
}

// BeginLoad starts loading batchID's results. Unless reload is set, it fails with ErrAlreadyLoaded when the batch's
// results were loaded before. ErrNotFound when the batch is not tracked.
func (s *Store) BeginLoad(ctx context.Context, batchID string, reload bool) (*Load, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, translate("begin results load", err)
	}
	l := &Load{s: s, tx: tx, batchID: batchID}
	var loaded bool
	err = tx.QueryRow(ctx, `select results_loaded_at is not null from `+s.table("batches")+` where batch_id = $1 for update`, batchID).Scan(&loaded)
	if err == nil && loaded && !reload {
		err = fmt.Errorf("batch %s: %w", batchID, ErrAlreadyLoaded)
	}
	if err == nil {
		_, err = tx.Exec(ctx, `delete from `+s.table("results")+` where batch_id = $1`, batchID)
	}
	if err != nil {
		_ = tx.Rollback(ctx)
		if errors.Is(err, ErrAlreadyLoaded) {
			return nil, err
		}
		return nil, translate("begin results load for "+batchID, err)
	}
	return l, nil
}

// CopyResults streams rows into the results table with COPY. Every row must belong to the load's batch.
func (l *Load) CopyResults(ctx context.Context, src ResultSource) (int64, error) {
	n, err := l.tx.CopyFrom(ctx, pgx.Identifier{l.s.schema, "results"},
		[]string{"batch_id", "custom_id", "input_line", "status_code", "response", "error", "api_custom_id", "packed_custom_id"},
		&copySource{src: src, batchID: l.batchID})
	l.rows += n
	if err != nil {
		return n, translate("copy results of "+l.batchID, err)
	}
	return n, nil
}

// MarkLoaded sets results_loaded_at, results_count (the rows copied) and the batch's token usage and cost, summed
// over the rows by the caller, and commits the load. The usage and cost are set, not added, in the transaction of the
// rows they sum, so a reload never counts them twice.
func (l *Load) MarkLoaded(ctx context.Context, usage Usage) error {
	if _, err := l.tx.Exec(ctx, `update `+l.s.table("batches")+` set results_loaded_at = now(), results_count = $2,
		prompt_tokens = $3, completion_tokens = $4, total_tokens = $5, updated_at = now(),
		cached_tokens = $6, reasoning_tokens = $7, cost_usd = $8::numeric, packed_failed = $9
		where batch_id = $1`, l.batchID, l.rows, usage.PromptTokens, usage.CompletionTokens, usage.TotalTokens,
		usage.CachedTokens, usage.ReasoningTokens, usage.CostUSD, nullIfZero64(l.packedFailed)); err != nil {
		_ = l.tx.Rollback(ctx)
		return translate("mark results loaded for "+l.batchID, err)
	}
	if err := l.s.notifyProgress(ctx, l.tx, l.batchID, "loaded"); err != nil {
		_ = l.tx.Rollback(ctx)
		return err
	}
	return translate("commit results of "+l.batchID, l.tx.Commit(ctx))
}

// Rollback abandons the load; it is safe to call after MarkLoaded.
func (l *Load) Rollback(ctx context.Context) error {
	err := l.tx.Rollback(ctx)
	if errors.Is(err, pgx.ErrTxClosed) {
		return nil
	}
	return err
}

// SetPackedFailed records, with MarkLoaded, how many packed records of the batch got a packed_answer_* error row:
// a completed batch with any is a resubmission candidate.
func (l *Load) SetPackedFailed(n int64) { l.packedFailed = n }

func nullIfZero64(n int64) *int64 {
	if n == 0 {
		return nil
	}
	return &n
}

// Rows is the number of rows copied so far.
func (l *Load) Rows() int64 { return l.rows }

// copySource adapts a ResultSource to pgx.CopyFromSource, checking each row's batch.
type copySource struct {
	src     ResultSource
	batchID string
	values  [8]any
	err     error
}

func (c *copySource) Next() bool { return c.err == nil && c.src.Next() }

func (c *copySource) Values() ([]any, error) {
	r := c.src.Result()
	if r.BatchID != "" && r.BatchID != c.batchID {
		c.err = fmt.Errorf("result row for batch %s in the load of batch %s", r.BatchID, c.batchID)
		return nil, c.err
	}
	c.values = [8]any{c.batchID, r.CustomID, r.InputLine, r.StatusCode, jsonValue(r.Response), jsonValue(r.Error), nullable(r.APICustomID),
		nullable(r.PackedCustomID)}
	return c.values[:], nil
}

func (c *copySource) Err() error {
	if c.err != nil {
		return c.err
	}
	return c.src.Err()
}

// jsonValue maps an absent or JSON-null document to SQL NULL.
func jsonValue(b []byte) any {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return b
}

// SetOutputExpiry records when batchID's output and error files expire (the earlier of the two), unless it is
// recorded already: a file's expiry never moves once it is written.
func (s *Store) SetOutputExpiry(ctx context.Context, batchID string, at time.Time) error {
	_, err := s.pool.Exec(ctx, `update `+s.table("batches")+` set output_expires_at = $2
		where batch_id = $1 and output_expires_at is null`, batchID, at)
	return translate("record the output expiry of "+batchID, err)
}

// MarkResultsLost records that batchID's output files expired before its results were loaded: results_lost_at is
// set, and the batch no longer counts as waiting for a load (the sweep queues none, Pending does not count it). It
// reports whether this call marked it (false when it was loaded or marked before). Call it outside a Load of the
// batch, which holds its row.
func (s *Store) MarkResultsLost(ctx context.Context, batchID string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `update `+s.table("batches")+` set results_lost_at = now(), updated_at = now()
		where batch_id = $1 and results_loaded_at is null and results_lost_at is null`, batchID)
	if err != nil {
		return false, translate("mark the results of "+batchID+" lost", err)
	}
	return tag.RowsAffected() == 1, nil
}
