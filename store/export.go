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

// exportFetch is how many rows ExportResults fetches from its cursor at a time.
const exportFetch = 1000

// ExportResults streams the final outcome of each request (the final_results view's rows) to fn, one at a time:
// memory stays flat whatever the size. fn must not keep the row's byte slices after it returns.
//
// The rows come from a cursor, fetched a thousand at a time, so that Postgres plans for the first rows rather than
// for the whole export, and the query never sorts the whole table: in input order it walks the root batches in run
// order and reads each lineage's rows through the indexes (results_input_order_idx, batches_root_idx), sorting one
// lineage at a time (an incremental sort); in completion order it walks results_loaded_at_idx, sorting only the rows
// of one load at a time, and drops the rows a later attempt superseded with an anti-join by index. Through the
// final_results view (a distinct on over every row) both orders sorted all the rows first: 10 M rows took over a
// minute before the first one came out.
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
	var since *time.Time
	if !q.Since.IsZero() {
		since = &q.Since
	}
	query := s.exportSQL(q.Order, q.SplitBy)
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		// Plan for the first rows: a consumer reads the export as it comes, and the plan that gives the first page
		// at once (index scans, a sort per lineage or per load) is also one that never sorts the whole table.
		// Without JIT: the plan's total cost (every row of the table) passes jit_above_cost, and compiling it took
		// 350 ms of a first page that then needs a few milliseconds.
		if _, err := tx.Exec(ctx, `set local cursor_tuple_fraction = 0.001; set local jit = off`); err != nil {
			return translate("export results", err)
		}
		if _, err := tx.Exec(ctx, `declare batchctl_export no scroll cursor for `+query, nilIfEmpty(roots), since); err != nil {
			return translate("export results", err)
		}
		var r ExportRow
		for {
			rows, err := tx.Query(ctx, `fetch forward `+fmt.Sprint(exportFetch)+` from batchctl_export`)
			if err != nil {
				return translate("export results", err)
			}
			n := 0
			for rows.Next() {
				n++
				var resp, errJSON []byte
				if err := rows.Scan(&r.RootBatchID, &r.BatchID, &r.CustomID, &r.InputLine, &r.StatusCode, &resp, &errJSON,
					&r.Attempt, &r.Source, &r.LoadedAt, &r.PackedCustomID); err != nil {
					rows.Close()
					return translate("export results", err)
				}
				r.Response, r.Error = resp, errJSON
				if err := fn(&r); err != nil {
					rows.Close()
					return err
				}
			}
			if err := rows.Err(); err != nil {
				return translate("export results", err)
			}
			if n < exportFetch {
				return nil
			}
		}
	})
}

// exportSQL is ExportResults' query: $1 the root batches to export (null: all), $2 the earliest loaded_at (null:
// any). A row is final when no later attempt of its lineage answered the same custom_id, as in final_results.
func (s *Store) exportSQL(order Order, split SplitBy) string {
	batches, results := s.table("batches"), s.table("results")
	if order == CompletionOrder {
		var prefix string
		switch split {
		case SplitByBatch:
			prefix = `coalesce(b.root_batch_id, b.batch_id), `
		case SplitBySource:
			prefix = `rb.source nulls last, `
		}
		// results_loaded_at_idx gives the rows in loaded_at order; a load's rows share it, and only they are sorted
		// (by batch and custom_id) at a time. A lineage is a chain (a batch is resubmitted once, as one child), so
		// only a batch resubmitted can have a later attempt that supersedes its rows.
		return `select coalesce(b.root_batch_id, b.batch_id), r.batch_id, r.custom_id, r.input_line, r.status_code,
				r.response, r.error, b.attempt, coalesce(rb.source, ''), r.loaded_at, coalesce(r.packed_custom_id, '')
			from ` + results + ` r
			join ` + batches + ` b on b.batch_id = r.batch_id
			join ` + batches + ` rb on rb.batch_id = coalesce(b.root_batch_id, b.batch_id)
			where (b.resubmitted_as is null or not exists (select 1 from ` + batches + ` later join ` + results + ` lr
					on lr.batch_id = later.batch_id and lr.custom_id = r.custom_id
					where later.root_batch_id = coalesce(b.root_batch_id, b.batch_id) and later.attempt > b.attempt))
				and ($1::text[] is null or coalesce(b.root_batch_id, b.batch_id) = any($1))
				and ($2::timestamptz is null or r.loaded_at >= $2)
			order by ` + prefix + `r.loaded_at, r.batch_id, r.custom_id`
	}
	var prefix string // over root_runs, inside the root subquery and outside it
	switch split {
	case SplitByBatch:
		prefix = `root.batch_id, `
	case SplitBySource:
		prefix = `root.source nulls last, `
	}
	// The root batches, sorted first (ten thousand rows, not ten million), then each one's lineage through the
	// indexes: the rows come out sorted root by root, one lineage sorted at a time.
	return rootRunsSQL(batches) + `
		select f.root_batch_id, f.batch_id, f.custom_id, f.input_line, f.status_code,
			f.response, f.error, f.attempt, coalesce(root.source, ''), f.loaded_at, coalesce(f.packed_custom_id, '')
		from (select * from root_runs root where $1::text[] is null or root.batch_id = any($1)
			order by ` + prefix + `root.run_started, root.run, root.part nulls last, root.created_at, root.batch_id) root
		cross join lateral (
			select * from (
				select distinct on (r.custom_id) root.batch_id as root_batch_id, r.batch_id, r.custom_id, r.input_line,
					r.status_code, r.response, r.error, r.loaded_at, b.attempt, r.packed_custom_id
				from ` + batches + ` b join ` + results + ` r on r.batch_id = b.batch_id
				where b.root_batch_id = root.batch_id or (b.root_batch_id is null and b.batch_id = root.batch_id)
				order by r.custom_id, b.attempt desc
			) lineage where $2::timestamptz is null or lineage.loaded_at >= $2
		) f
		order by ` + prefix + `root.run_started, root.run, root.part nulls last, root.created_at, root.batch_id,
			f.input_line nulls last, f.custom_id`
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
