package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Roles of a file for its batch.
const (
	RoleInput  = "input"
	RoleOutput = "output"
	RoleError  = "error"
)

// roleOrder is each role's place among a batch's files, the order listings and the prune's cursor follow.
var roleOrder = map[string]int{RoleInput: 1, RoleOutput: 2, RoleError: 3}

// BatchFile is one API file of a tracked batch, as the batch-ID table knows it: the batch's input file, or its output
// or error file. A file shared by several batches (one input file tracked under two batches) is one BatchFile per
// batch.
type BatchFile struct {
	FileID          string
	BatchID         string
	Role            string // RoleInput, RoleOutput or RoleError
	RootBatchID     string
	BatchStatus     string
	ResultsLoadedAt *time.Time
	// Needed: a tracked batch still needs the file (see FileQuery); a prune leaves it.
	Needed bool
	// Deleted is batchctl's record of the file's deletion; nil while batchctl has not deleted it.
	Deleted *FileDeletion
}

// FileDeletion is batchctl's record of a file it deleted (<schema>.deleted_files).
type FileDeletion struct {
	FileID    string
	BatchID   string // the batch the file was deleted for
	Role      string
	DeletedAt time.Time
	Gone      bool   // the API answered 404: the file had expired, or someone else had deleted it
	DeletedBy string // who deleted it: "files prune" or "poll"
}

// FileQuery selects the files ListBatchFiles returns, and says which files batches still need.
//
// A file is needed while any tracked batch needs it:
//   - every file of a batch whose results are not loaded: the API reads the input while the batch runs, and the load
//     reads all three;
//   - the input file of a batch that may still be resubmitted: a resubmission is built from its lines;
//   - the input file of a lineage's root while any batch of the lineage is not loaded or may still be resubmitted:
//     the load of a resubmission takes each row's input_line from it;
//   - the input file of an admission queue row whose batch is still to be created.
//
// Files that no tracked batch names are never listed, so they are never needed nor prunable: they are not
// batchctl's.
type FileQuery struct {
	// BatchIDs lists these batches' files; when empty, those of the Limit most recent batches (0: all).
	BatchIDs []string
	Limit    int
	// MaxAttempts: a batch at this attempt or beyond is never resubmitted (poll --resubmit --max-attempts), so its
	// input file is not kept for one. 0 keeps the input of every batch that could still be resubmitted.
	MaxAttempts int
	// Provider limits the list to that provider's batches (default openai): file IDs mean something only at their
	// own API.
	Provider string
}

// PruneQuery selects a page of the files PrunableFiles returns.
type PruneQuery struct {
	// MaxAttempts is FileQuery.MaxAttempts.
	MaxAttempts int
	// Provider is FileQuery.Provider.
	Provider string
	// MadeBefore, when set, keeps files that may have been created after it. A file's creation is bounded by its
	// batch's: an input file is uploaded before its batch is created, output and error files are written before the
	// batch ends.
	MadeBefore time.Time
	// RootBatchID, when set, limits the page to the files of that batch and of the batches whose root it is (its
	// lineage, when it is a root).
	RootBatchID string
	// After is the last file of the previous page; nil for the first.
	After *BatchFile
	// Limit is the page size.
	Limit int
}

// neededSQL is a CTE, needed (file_id), of the files some tracked batch still needs (FileQuery's rules). $1 is the
// max attempts, 0 for no bound.
func (s *Store) neededSQL() string {
	batches := s.table("batches")
	pending := `b.results_loaded_at is not null and b.resubmitted_at is null and ($1::int = 0 or b.attempt < $1::int)
		and ` + resubmittableSQL
	return `needed (file_id) as (
		select f.file_id from ` + batches + ` b
			cross join lateral (values (b.input_file_id), (b.output_file_id), (b.error_file_id)) f (file_id)
			where f.file_id is not null and b.results_loaded_at is null
		union
		select b.input_file_id from ` + batches + ` b where b.input_file_id is not null and ` + pending + `
		union
		select r.input_file_id from ` + batches + ` b join ` + batches + ` r on r.batch_id = coalesce(b.root_batch_id, b.batch_id)
			where r.input_file_id is not null and (b.results_loaded_at is null or (` + pending + `))
		union
		select q.input_file_id from ` + s.table("batch_queue") + ` q where q.state in ('queued', 'creating'))`
}

// batchFilesSQL turns each batches row b into its files f (ord, role, file_id, made_by); made_by is no earlier than
// the file's creation.
const batchFilesSQL = `cross join lateral (values (1, 'input', b.input_file_id, b.created_at),
	(2, 'output', b.output_file_id, b.ended_at), (3, 'error', b.error_file_id, b.ended_at)) f (ord, role, file_id, made_by)`

// ListBatchFiles returns the files of the batches q selects, newest batch first, each batch's input, output and
// error file in that order, with whether a batch still needs each and batchctl's record of its deletion.
func (s *Store) ListBatchFiles(ctx context.Context, q FileQuery) ([]BatchFile, error) {
	var limit *int
	if len(q.BatchIDs) == 0 && q.Limit > 0 {
		limit = &q.Limit
	}
	rows, err := s.pool.Query(ctx, `with `+s.neededSQL()+`,
		picked as (select * from `+s.table("batches")+` b where (coalesce(cardinality($2::text[]), 0) = 0 or b.batch_id = any($2))
				and b.provider = coalesce($4, 'openai')
			order by b.created_at desc, b.batch_id desc limit $3)
		select f.file_id, b.batch_id, f.role, coalesce(b.root_batch_id, b.batch_id), b.status, b.results_loaded_at,
			exists (select 1 from needed n where n.file_id = f.file_id),
			d.batch_id, d.role, d.deleted_at, d.gone, d.deleted_by
		from picked b `+batchFilesSQL+`
		left join `+s.table("deleted_files")+` d on d.file_id = f.file_id
		where f.file_id is not null
		order by b.created_at desc, b.batch_id desc, f.ord`, q.MaxAttempts, q.BatchIDs, limit, nullable(q.Provider))
	if err != nil {
		return nil, translate("list batch files", err)
	}
	files, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (BatchFile, error) {
		var (
			f                  BatchFile
			dBatch, dRole, dBy *string
			dAt                *time.Time
			dGone              *bool
		)
		err := row.Scan(&f.FileID, &f.BatchID, &f.Role, &f.RootBatchID, &f.BatchStatus, &f.ResultsLoadedAt, &f.Needed,
			&dBatch, &dRole, &dAt, &dGone, &dBy)
		if dAt != nil {
			f.Deleted = &FileDeletion{FileID: f.FileID, BatchID: deref(dBatch), Role: deref(dRole), DeletedAt: *dAt,
				Gone: dGone != nil && *dGone, DeletedBy: deref(dBy)}
		}
		return f, err
	})
	return files, translate("list batch files", err)
}

// PrunableFiles returns a page of the files that a prune may delete: files of tracked batches whose results are
// loaded, that no tracked batch needs (FileQuery's rules) and that batchctl has not deleted yet, in batch ID order.
// The next page starts after the last file of this one (PruneQuery.After), so a file whose delete failed is not
// returned again by the same pass.
func (s *Store) PrunableFiles(ctx context.Context, q PruneQuery) ([]BatchFile, error) {
	if q.Limit <= 0 {
		return nil, fmt.Errorf("prunable files: page size %d", q.Limit)
	}
	afterBatch, afterOrd := "", 0
	if q.After != nil {
		afterBatch, afterOrd = q.After.BatchID, roleOrder[q.After.Role]
	}
	var madeBefore *time.Time
	if !q.MadeBefore.IsZero() {
		madeBefore = &q.MadeBefore
	}
	rows, err := s.pool.Query(ctx, `with `+s.neededSQL()+`
		select f.file_id, b.batch_id, f.role, coalesce(b.root_batch_id, b.batch_id), b.status, b.results_loaded_at
		from `+s.table("batches")+` b `+batchFilesSQL+`
		where f.file_id is not null and b.results_loaded_at is not null
			and (b.batch_id, f.ord) > ($2, $3)
			and ($4 = '' or b.root_batch_id = $4 or b.batch_id = $4)
			and ($5::timestamptz is null or f.made_by <= $5)
			and not exists (select 1 from `+s.table("deleted_files")+` d where d.file_id = f.file_id)
			and not exists (select 1 from needed n where n.file_id = f.file_id)
			and b.provider = coalesce($7, 'openai')
		order by b.batch_id, f.ord
		limit $6`, q.MaxAttempts, afterBatch, afterOrd, q.RootBatchID, madeBefore, q.Limit, nullable(q.Provider))
	if err != nil {
		return nil, translate("list prunable files", err)
	}
	files, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (BatchFile, error) {
		var f BatchFile
		err := row.Scan(&f.FileID, &f.BatchID, &f.Role, &f.RootBatchID, &f.BatchStatus, &f.ResultsLoadedAt)
		return f, err
	})
	return files, translate("list prunable files", err)
}

// RecordFileDeleted records that the API no longer holds a file: batchctl deleted it, or found it gone. A file
// recorded before keeps its first record.
func (s *Store) RecordFileDeleted(ctx context.Context, d FileDeletion) error {
	_, err := s.pool.Exec(ctx, `insert into `+s.table("deleted_files")+` (file_id, batch_id, role, gone, deleted_by)
		values ($1, $2, $3, $4, $5) on conflict (file_id) do nothing`, d.FileID, d.BatchID, d.Role, d.Gone, d.DeletedBy)
	return translate("record deletion of file "+d.FileID, err)
}
