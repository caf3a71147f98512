package store

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// LiveJobStates are the River job states in which a job will still run.
var LiveJobStates = []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending,
	rivertype.JobStateRunning, rivertype.JobStateRetryable, rivertype.JobStateScheduled}

// liveJobStates is LiveJobStates as an SQL list.
var liveJobStates = func() string {
	quoted := make([]string, len(LiveJobStates))
	for i, st := range LiveJobStates {
		quoted[i] = "'" + string(st) + "'"
	}
	return "(" + strings.Join(quoted, ", ") + ")"
}()

// unloadedSQL selects, as a predicate over a batches row b, an ended batch whose results are not loaded yet. Every
// write of an ended status sets ended_at, and the predicate narrows that of the index batches_unloaded_idx.
// A batch whose results were lost (its output files expired before a load) is not waiting for one.
const unloadedSQL = `b.ended_at is not null and b.results_loaded_at is null and b.results_lost_at is null`

// EnqueueStrandedPolls inserts a poll job for every batch in flight that has none alive (after a restart that lost
// it, a job discarded after too many errors, or a row inserted by hand), skipping batches created before
// notBefore (past their deadline). It returns the batch IDs it enqueued.
func (s *Store) EnqueueStrandedPolls(ctx context.Context, notBefore time.Time) ([]string, error) {
	return s.enqueueMissing(ctx, PollBatchArgs{}.Kind(), func(id string, _ *time.Time) river.InsertManyParams {
		return river.InsertManyParams{Args: PollBatchArgs{BatchID: id}}
	}, strandedPollsWhere, `b.created_at`, notBefore)
}

// strandedPollsWhere selects the batches in flight created since $1.
const strandedPollsWhere = `b.status not in ` + terminalSQL + ` and b.created_at >= $1`

// missingJobsSQL selects, for enqueueMissing, the batches b that match where and have no live job of kind.
//
// The live jobs' batch IDs are hashed once (a hashed subplan: not in, over IDs that are never null) and every batch
// probes the hash: one pass over each table. A correlated not exists on args @> {...} could only be a nested loop;
// on args->>'batch_id' it could be hashed, but with river_job's statistics stale (10 000 jobs inserted since the last
// analyze) Postgres chose a nested loop anyway, and the sweep took 6 s a run at 10 000 batches. A hashed subplan does
// not depend on the estimates.
func (s *Store) missingJobsSQL(kind, where, orderBy string) string {
	return `select b.batch_id, ` + loadExpirySQL + ` from ` + s.table("batches") + ` b where ` + where + `
		and b.batch_id not in (select j.args->>'batch_id' from ` + s.table("river_job") + ` j
			where j.kind = '` + kind + `' and j.state in ` + liveJobStates + ` and j.args->>'batch_id' is not null)
		order by ` + orderBy + ` limit 10000`
}

// EnqueueStrandedLoads inserts a load job for every ended batch whose results are not loaded (nor lost) and that
// has no load job alive, at the priority of its files' expiry (LoadPriority). It returns the batch IDs it enqueued.
func (s *Store) EnqueueStrandedLoads(ctx context.Context) ([]string, error) {
	return s.enqueueMissing(ctx, LoadResultsArgs{}.Kind(), func(id string, expiry *time.Time) river.InsertManyParams {
		return river.InsertManyParams{Args: LoadResultsArgs{BatchID: id}, InsertOpts: loadInsertOpts(expiry)}
	}, unloadedSQL, `b.ended_at`)
}

// enqueueMissing inserts a job of kind, made by job from the batch ID and its files' best known expiry, for each
// batch b that matches where (a predicate over the batches row b) and has no job of that kind alive, at most 10 000
// in the given order. It returns their IDs.
func (s *Store) enqueueMissing(ctx context.Context, kind string, job func(id string, expiry *time.Time) river.InsertManyParams, where, orderBy string, args ...any) ([]string, error) {
	query := s.missingJobsSQL(kind, where, orderBy)
	var ids []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, query, args...)
		if err != nil {
			return translate("find stranded batches", err)
		}
		var (
			params []river.InsertManyParams
			id     string
			expiry *time.Time
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &expiry}, func() error {
			ids = append(ids, id)
			params = append(params, job(id, expiry))
			return nil
		})
		if err != nil {
			return translate("find stranded batches", err)
		}
		if len(ids) == 0 {
			return nil
		}
		_, err = s.river.InsertManyTx(ctx, tx, params)
		return translate("enqueue jobs for stranded batches", err)
	})
	return ids, err
}

// Pending counts the batches still in flight, the ended batches whose results are not loaded yet, (for
// maxAttempts > 0) the loaded batches not yet looked at for resubmission (ResubmitCandidates), and the admission
// queue's rows still to be created: those being created, and those queued that their model's quota can hold (a
// batch whose estimate alone passes its quota waits for a larger quota, not for the poller). One statement reads
// one snapshot, so a batch moving from one count to the next in a transaction (an admission's, a load's commit, a
// resubmission's) is never missed by all of them.
func (s *Store) Pending(ctx context.Context, maxAttempts int) (inFlight, unloaded, resubmits, queued int, err error) {
	err = s.pool.QueryRow(ctx, `select
			count(*) filter (where b.status not in `+terminalSQL+`),
			count(*) filter (where `+unloadedSQL+`),
			count(*) filter (where `+candidateSQL+`),
			(select count(*) from `+s.table("batch_queue")+` q where q.state = 'creating' or (q.state = 'queued'
				and not exists (select 1 from `+s.table("quotas")+` l where l.model = q.model and l.token_limit < q.estimated_tokens)))
		from `+s.table("batches")+` b`, maxAttempts).Scan(&inFlight, &unloaded, &resubmits, &queued)
	return inFlight, unloaded, resubmits, queued, translate("count pending batches", err)
}

// StatusCounts returns, for each status, the number of batches and the sum of their request totals, and the creation
// time of the oldest batch in flight (zero when none is).
func (s *Store) StatusCounts(ctx context.Context) (counts, requests map[string]int64, oldest time.Time, err error) {
	rows, err := s.pool.Query(ctx, `select status, count(*), coalesce(sum(request_total), 0), min(created_at)
		from `+s.table("batches")+` group by status`)
	if err != nil {
		return nil, nil, time.Time{}, translate("count batches by status", err)
	}
	counts, requests = map[string]int64{}, map[string]int64{}
	var (
		status string
		n, r   int64
		min    time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&status, &n, &r, &min}, func() error {
		counts[status], requests[status] = n, r
		if !IsTerminal(status) && (oldest.IsZero() || min.Before(oldest)) {
			oldest = min
		}
		return nil
	})
	return counts, requests, oldest, translate("count batches by status", err)
}
