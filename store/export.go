package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ListBatches returns the batches named by ids, or when ids is empty the limit most recently created (0: all),
// newest first.
func (s *Store) ListBatches(ctx context.Context, ids []string, limit int) ([]Batch, error) {
	var (
		rows pgx.Rows
		err  error
	)
	if len(ids) > 0 {
		rows, err = s.pool.Query(ctx, `select `+batchColumns+` from `+s.table("batches")+`
			where batch_id = any($1) order by created_at desc, batch_id`, ids)
	} else {
		rows, err = s.pool.Query(ctx, `select `+batchColumns+` from `+s.table("batches")+`
			order by created_at desc, batch_id limit $1`, nullIfZero(limit))
	}
	if err != nil {
		return nil, translate("list batches", err)
	}
	bs, err := pgx.CollectRows(rows, scanBatch)
	return bs, translate("list batches", err)
}

func nullIfZero(n int) *int {
	if n == 0 {
		return nil
	}
	return &n
}

// Order is the order of exported results.
type Order int

const (
	// InputOrder: submit run by run, in the order they started (see rootRunsSQL), each run's batches by part, each
	// request at its line in the original input.
	InputOrder Order = iota
	// CompletionOrder: as results were loaded.
	CompletionOrder
)

// SplitBy groups exported rows so that each group is contiguous.
type SplitBy int

const (
	// NoSplit keeps one stream.
	NoSplit SplitBy = iota
	// SplitByBatch groups the rows of each original (root) batch.
	SplitByBatch
	// SplitBySource groups the rows of each source.
	SplitBySource
)

// ExportQuery selects result rows for export.
type ExportQuery struct {
	// BatchIDs restrict the export to the lineages of these batches (any batch of a lineage names all of it); empty
	// exports every batch.
	BatchIDs []string
	// Since keeps rows loaded at or after it; zero keeps all.
	Since   time.Time
	Order   Order
	SplitBy SplitBy
}

// ExportRow is the final outcome of one request: the row of the latest attempt that answered it.
type ExportRow struct {
	RootBatchID string          `json:"root_batch_id"`
	BatchID     string          `json:"batch_id"`
	CustomID    string          `json:"custom_id"`
	InputLine   *int            `json:"input_line"`
	StatusCode  *int            `json:"status_code"`
	Response    json.RawMessage `json:"response"`
	Error       json.RawMessage `json:"error"`
	Attempt     int             `json:"attempt"`
	Source      string          `json:"source"`
	LoadedAt    time.Time       `json:"loaded_at"`
	// PackedCustomID is the packed request the record was answered in (submit --pack), "" for an unpacked one.
	PackedCustomID string `json:"packed_custom_id,omitempty"`
}

// ExportResults streams rows of the final_results view to fn, one at a time: memory stays flat whatever the size.
// fn must not keep the row's byte slices after it returns.
func (s *Store) ExportResults(ctx context.Context, q ExportQuery, fn func(*ExportRow) error) error {
	var roots []string
	if len(q.BatchIDs) > 0 {
		rows, err := s.pool.Query(ctx, `select distinct coalesce(root_batch_id, batch_id) from `+s.table("batches")+`
			where batch_id = any($1)`, q.BatchIDs)
		if err != nil {
			return translate("resolve batch lineages", err)
		}
		if roots, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return translate("resolve batch lineages", err)
		}
		if len(roots) == 0 {
			return fmt.Errorf("batches %v: %w", q.BatchIDs, ErrNotFound)
		}
	}
	order := `root.run_started, root.run, root.part nulls last, root.created_at, f.root_batch_id, f.input_line nulls last,
		f.custom_id`
	if q.Order == CompletionOrder {
		order = `f.loaded_at, f.batch_id, f.custom_id`
	}
	switch q.SplitBy {
	case SplitByBatch:
		order = `f.root_batch_id, ` + order
	case SplitBySource:
		order = `root.source nulls last, ` + order
	}
	var since *time.Time
	if !q.Since.IsZero() {
		since = &q.Since
	}
	rows, err := s.pool.Query(ctx, rootRunsSQL(s.table("batches"))+`
		select f.root_batch_id, f.batch_id, f.custom_id, f.input_line, f.status_code,
			f.response, f.error, f.attempt, coalesce(root.source, ''), f.loaded_at, coalesce(f.packed_custom_id, '')
		from `+s.table("final_results")+` f
		join root_runs root on root.batch_id = f.root_batch_id
		where ($1::text[] is null or f.root_batch_id = any($1)) and ($2::timestamptz is null or f.loaded_at >= $2)
		order by `+order, nilIfEmpty(roots), since)
	if err != nil {
		return translate("export results", err)
	}
	defer rows.Close()
	var r ExportRow
	for rows.Next() {
		var resp, errJSON []byte
		if err := rows.Scan(&r.RootBatchID, &r.BatchID, &r.CustomID, &r.InputLine, &r.StatusCode, &resp, &errJSON,
			&r.Attempt, &r.Source, &r.LoadedAt, &r.PackedCustomID); err != nil {
			return translate("export results", err)
		}
		r.Response, r.Error = resp, errJSON
		if err := fn(&r); err != nil {
			return err
		}
	}
	return translate("export results", rows.Err())
}

// rootRunsSQL is a with clause naming root_runs: each root batch with its source, creation time, part, run and the
// time its run started (its first batch's creation), the keys of input order. A run is the batches one submit process
// cut from its inputs (metadata batchctl_run, see batchapi.MetaRun), numbered by part from 1: two runs may share a
// source name and part numbers (two stdin streams), so ordering by source and part would interleave them. Batches
// submitted before batchctl_run existed count one run a source, as before; a batch with neither is a run of its own.
// A part that is not a number (metadata written by hand) orders last in its run rather than failing the export.
func rootRunsSQL(batches string) string {
	return `with roots as (
			select batch_id, source, created_at,
				case when metadata->>'batchctl_part' ~ '^[0-9]{1,9}$' then (metadata->>'batchctl_part')::int end as part,
				coalesce('run:' || nullif(metadata->>'batchctl_run', ''), 'source:' || source, 'batch:' || batch_id) as run
			from ` + batches + `
			where batch_id = coalesce(root_batch_id, batch_id)
		), root_runs as (
			select roots.*, min(created_at) over (partition by run) as run_started from roots
		)`
}

func nilIfEmpty(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	return ss
}
