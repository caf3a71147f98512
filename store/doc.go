// Package store owns every SQL statement of batchctl: the pgx pool, the batch-ID and results tables, COPY of result
// rows, the per-model quotas and the admission queue, and the River client that enqueues poll jobs in the same
// transactions as the rows they track.
//
// Postgres errors are translated here; callers see the sentinel errors of this package or wrapped context.
package store
