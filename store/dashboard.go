package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// DashboardQuery asks for what the dashboard shows: the totals and sources, and a page of either list or both.
type DashboardQuery struct {
	// Source narrows the totals to one source ("" for all); each Page has its own filters.
	Source     string
	InFlight   *Page // nil leaves the list out
	Ended      *Page // nil leaves the list out
	MaxSources int   // the most sources listed
}

// Dashboard is the answer to a DashboardQuery, read in one snapshot: the totals always agree with the lists.
type Dashboard struct {
	Totals   []StatusTotal
	Sources  []string
	InFlight []Batch // one past the page's limit when there is a next page
	Ended    []Batch
}

// Dashboard reads everything the dashboard shows in one read-only repeatable-read transaction, so a batch that ends
// meanwhile is never counted in flight while listed as ended.
func (s *Store) Dashboard(ctx context.Context, q DashboardQuery) (Dashboard, error) {
	var d Dashboard
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if d.Totals, err = s.statusTotals(ctx, tx, q.Source); err != nil {
			return err
		}
		if d.Sources, err = s.sources(ctx, tx, q.MaxSources); err != nil {
			return err
		}
		if q.InFlight != nil {
			if d.InFlight, err = s.batchesInFlight(ctx, tx, *q.InFlight); err != nil {
				return err
			}
		}
		if q.Ended != nil {
			if d.Ended, err = s.batchesEnded(ctx, tx, *q.Ended); err != nil {
				return err
			}
		}
		return nil
	})
	return d, translate("read dashboard", err)
}

// Page asks for one page of a batch listing: the batches after a cursor, in the listing's order. Keyset paging reads
// one index range per page (migration 011), however many batches the table holds.
type Page struct {
	// Source and Status filter the batches; "" matches any.
	Source string
	Status string
	// After is the cursor: the sort key of the last batch of the previous page; zero for the first page.
	After Cursor
	// Limit is the page size.
	Limit int
}

// Cursor is a batch's place in a listing: its sort time (created_at in flight, ended_at once ended) and its ID.
type Cursor struct {
	At      time.Time
	BatchID string
}

// IsZero reports whether c is the start of a listing.
func (c Cursor) IsZero() bool { return c.BatchID == "" }

// batchesInFlight returns a page of the batches not yet ended, oldest first (the nearest to their window's end
// first). It returns one more batch than p.Limit when there is a next page.
func (s *Store) batchesInFlight(ctx context.Context, q querier, p Page) ([]Batch, error) {
	after := p.After
	rows, err := q.Query(ctx, s.inFlightSQL(), p.Source, p.Status, after.At, after.BatchID, p.Limit+1)
	if err != nil {
		return nil, translate("list batches in flight", err)
	}
	bs, err := pgx.CollectRows(rows, scanBatch)
	return bs, translate("list batches in flight", err)
}

// batchesEnded returns a page of the ended batches, the latest ended first. It returns one more batch than p.Limit
// when there is a next page.
func (s *Store) batchesEnded(ctx context.Context, q querier, p Page) ([]Batch, error) {
	after := p.After
	if after.IsZero() {
		after = Cursor{At: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), BatchID: ""}
	}
	rows, err := q.Query(ctx, s.endedSQL(), p.Source, p.Status, after.At, after.BatchID, p.Limit+1)
	if err != nil {
		return nil, translate("list ended batches", err)
	}
	bs, err := pgx.CollectRows(rows, scanBatch)
	return bs, translate("list ended batches", err)
}

// inFlightSQL is the page query of the batches in flight ($1 source, $2 status, $3 and $4 the cursor, $5 the limit):
// a range of batches_in_flight_idx in its order.
func (s *Store) inFlightSQL() string {
	return `select ` + batchColumns + ` from ` + s.table("batches") + `
		where status not in ` + terminalSQL + ` and ($1 = '' or source = $1) and ($2 = '' or status = $2)
		and (created_at, batch_id) > ($3, $4)
		order by created_at, batch_id limit $5`
}

// endedSQL is the page query of the ended batches, with the parameters of inFlightSQL: a range of batches_ended_idx
// in its order.
func (s *Store) endedSQL() string {
	return `select ` + batchColumns + ` from ` + s.table("batches") + `
		where ended_at is not null and ($1 = '' or source = $1) and ($2 = '' or status = $2)
		and (ended_at, batch_id) < ($3, $4)
		order by ended_at desc, batch_id desc limit $5`
}

// StatusTotal is the batches of one status, with their requests, loaded rows, tokens and cost.
type StatusTotal struct {
	Status   string
	Batches  int64
	Requests int64
	Rows     int64
	Tokens   int64
	// CostUSD is the summed cost as exact decimal text; "" when no batch of the status has one.
	CostUSD string
}

// statusTotals sums the batches by status, those of source only unless it is "".
func (s *Store) statusTotals(ctx context.Context, q querier, source string) ([]StatusTotal, error) {
	rows, err := q.Query(ctx, `select status, count(*), coalesce(sum(request_total), 0),
		coalesce(sum(results_count), 0), coalesce(sum(total_tokens), 0), coalesce(sum(cost_usd)::text, '')
		from `+s.table("batches")+` where $1 = '' or source = $1 group by status order by status`, source)
	if err != nil {
		return nil, translate("sum batches by status", err)
	}
	totals, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (StatusTotal, error) {
		var t StatusTotal
		err := row.Scan(&t.Status, &t.Batches, &t.Requests, &t.Rows, &t.Tokens, &t.CostUSD)
		return t, err
	})
	return totals, translate("sum batches by status", err)
}

// sources lists the distinct sources of the tracked batches (at most limit), for the dashboard's filter.
func (s *Store) sources(ctx context.Context, q querier, limit int) ([]string, error) {
	rows, err := q.Query(ctx, `select distinct source from `+s.table("batches")+`
		where source is not null order by source limit $1`, limit)
	if err != nil {
		return nil, translate("list sources", err)
	}
	srcs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return srcs, translate("list sources", err)
}

// OutcomeCount is how many of a batch's loaded results had one outcome: "ok" for a 2xx answer, "http_<status>" for
// another answer, or the error's code.
type OutcomeCount struct {
	Outcome string
	Count   int64
}

// ResultOutcomes counts batchID's loaded results by outcome, the most frequent first.
func (s *Store) ResultOutcomes(ctx context.Context, batchID string) ([]OutcomeCount, error) {
	rows, err := s.pool.Query(ctx, `select outcome, count(*) from (
			select case when status_code between 200 and 299 then 'ok'
				when status_code is not null then 'http_' || status_code
				else coalesce(error->>'code', 'error') end as outcome
			from `+s.table("results")+` where batch_id = $1) o
		group by outcome order by count(*) desc, outcome`, batchID)
	if err != nil {
		return nil, translate("count results of "+batchID, err)
	}
	counts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (OutcomeCount, error) {
		var c OutcomeCount
		err := row.Scan(&c.Outcome, &c.Count)
		return c, err
	})
	return counts, translate("count results of "+batchID, err)
}

// Lineage returns every batch sharing rootBatchID (an original and its resubmissions), by attempt.
func (s *Store) Lineage(ctx context.Context, rootBatchID string) ([]Batch, error) {
	rows, err := s.pool.Query(ctx, `select `+batchColumns+` from `+s.table("batches")+`
		where root_batch_id = $1 or (batch_id = $1 and root_batch_id is null) order by attempt, created_at, batch_id limit 100`, rootBatchID)
	if err != nil {
		return nil, translate("read lineage of "+rootBatchID, err)
	}
	bs, err := pgx.CollectRows(rows, scanBatch)
	return bs, translate("read lineage of "+rootBatchID, err)
}
