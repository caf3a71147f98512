package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// CostBy is the grouping of a cost report.
type CostBy string

// The groupings of CostReport.
const (
	CostByModel  CostBy = "model"  // the batch's model as the API names it (a snapshot is its own group)
	CostBySource CostBy = "source" // the input the batch was cut from
	CostByDay    CostBy = "day"    // the UTC day the batch was created
	CostByBatch  CostBy = "batch"  // one line per batch
)

// costKeys are the SQL expressions of each grouping's key.
var costKeys = map[CostBy]string{
	CostByModel:  `model`,
	CostBySource: `source`,
	CostByDay:    `to_char(created_at at time zone 'UTC', 'YYYY-MM-DD')`,
	CostByBatch:  `batch_id`,
}

// CostGroup is one line of a cost report: the batches whose results are loaded, summed.
type CostGroup struct {
	Key          string // the model, source, day (YYYY-MM-DD) or batch ID; "" for batches without one
	Batches      int64
	Requests     int64 // result rows loaded
	InputTokens  int64 // prompt tokens, cached included
	CachedTokens int64
	OutputTokens int64 // completion tokens, reasoning included
	// CostUSD is the sum of cost_usd as exact decimal text; nil when a batch of the group has usage but no cost (its
	// model has no price): a partial sum would understate the group.
	CostUSD *string
	// Unpriced counts the group's batches with usage and no cost.
	Unpriced int64
	// EstimateRatio is the real cost over submit's estimate, over the group's batches that have both; nil when none
	// has. Below 1 the estimate ran high (as it should: it bounds the output by max_tokens).
	EstimateRatio *float64
}

// CostReport sums the cost of the batches created since since (zero: all) whose results are loaded, grouped by by,
// ordered by key. A batch loaded without any usage (nothing answered) costs nothing and counts as 0.
func (s *Store) CostReport(ctx context.Context, by CostBy, since time.Time) ([]CostGroup, error) {
	key, ok := costKeys[by]
	if !ok {
		return nil, fmt.Errorf("cost report by %q: want model, source, day or batch", by)
	}
	var sinceArg *time.Time
	if !since.IsZero() {
		sinceArg = &since
	}
	rows, err := s.pool.Query(ctx, `select coalesce(`+key+`, '') as k, count(*),
			coalesce(sum(results_count), 0), coalesce(sum(prompt_tokens), 0), coalesce(sum(cached_tokens), 0),
			coalesce(sum(completion_tokens), 0),
			count(*) filter (where prompt_tokens is not null and cost_usd is null) as unpriced,
			coalesce(sum(cost_usd), 0)::text,
			(sum(cost_usd) filter (where estimated_cost_usd > 0) /
				nullif(sum(estimated_cost_usd) filter (where cost_usd is not null), 0))::float8
		from `+s.table("batches")+`
		where results_loaded_at is not null and ($1::timestamptz is null or created_at >= $1)
		group by k order by k`, sinceArg)
	if err != nil {
		return nil, translate("cost report", err)
	}
	groups, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (CostGroup, error) {
		var g CostGroup
		var sum string
		err := row.Scan(&g.Key, &g.Batches, &g.Requests, &g.InputTokens, &g.CachedTokens, &g.OutputTokens, &g.Unpriced, &sum,
			&g.EstimateRatio)
		if g.Unpriced == 0 {
			g.CostUSD = &sum
		}
		return g, err
	})
	return groups, translate("cost report", err)
}
