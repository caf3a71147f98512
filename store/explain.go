package store

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Plan is the EXPLAIN (ANALYZE) of one of the statements a poller runs most, on the schema's data as it is.
type Plan struct {
	Name string // what runs it: "refresh: list in flight", "sweep: stranded loads", ...
	Text string // the plan, one node a line
	// Millis is the execution time Postgres measured.
	Millis float64
}

// errRollback ends ExplainHot's transaction: an EXPLAIN ANALYZE runs its statement, and a write must leave nothing.
var errRollback = errors.New("rollback")

// ExplainHot runs EXPLAIN (ANALYZE, BUFFERS) of the statements batchctl's pollers run on every round or every
// sweep, with the batches in the schema as they are (the touch of a refresh page on up to 100 batches in flight),
// in a transaction rolled back: a benchmark reads whether they use their indexes, and what they cost, at scale.
func (s *Store) ExplainHot(ctx context.Context) ([]Plan, error) {
	deadline := time.Now().Add(-26 * time.Hour) // about the poller's default deadline
	hot := []struct {
		name, sql string
		args      []any
	}{
		{"refresh: list in flight", s.refreshListSQL(), []any{1_000_000}},
		{"refresh: touch a page", `update ` + s.table("batches") + ` set updated_at = now() where batch_id = any($1)`, nil},
		{"poll: read a batch", `select ` + batchColumns + ` from ` + s.table("batches") + ` where batch_id = $1`, nil},
		{"sweep: stranded polls", s.missingJobsSQL(PollBatchArgs{}.Kind(), strandedPollsWhere, `b.created_at`), []any{deadline}},
		{"sweep: stranded loads", s.missingJobsSQL(LoadResultsArgs{}.Kind(), unloadedSQL, `b.ended_at`), nil},
		{"status: counts by status", `select status, count(*), coalesce(sum(request_total), 0), min(created_at)
			from ` + s.table("batches") + ` group by status`, nil},
		// The first page of an export, as its cursor plans it (for the first rows).
		{"results: first page, input order", s.exportSQL(InputOrder, NoSplit) + ` limit 1000`, []any{nil, nil}},
		{"results: first page, completion order", s.exportSQL(CompletionOrder, NoSplit) + ` limit 1000`, []any{nil, nil}},
	}
	var plans []Plan
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var page []string
		rows, err := tx.Query(ctx, `select batch_id from `+s.table("batches")+` order by created_at desc limit 100`)
		if err != nil {
			return translate("pick batches to explain with", err)
		}
		if page, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return translate("pick batches to explain with", err)
		}
		one := ""
		if len(page) > 0 {
			one = page[0]
		}
		for _, h := range hot {
			args := h.args
			switch h.name {
			case "refresh: touch a page":
				args = []any{page}
			case "poll: read a batch":
				args = []any{one}
			}
			rows, err := tx.Query(ctx, `explain (analyze, buffers) `+h.sql, args...)
			if err != nil {
				return translate("explain "+h.name, err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return translate("explain "+h.name, err)
			}
			p := Plan{Name: h.name, Text: strings.Join(lines, "\n")}
			for _, l := range lines {
				if ms, ok := strings.CutPrefix(strings.TrimSpace(l), "Execution Time: "); ok {
					p.Millis = parseMillis(ms)
				}
			}
			plans = append(plans, p)
		}
		return errRollback
	})
	if errors.Is(err, errRollback) {
		err = nil
	}
	return plans, err
}

// parseMillis reads "12.345 ms"; 0 when it cannot.
func parseMillis(s string) float64 {
	d, err := time.ParseDuration(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		return 0
	}
	return float64(d) / float64(time.Millisecond)
}
