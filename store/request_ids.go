package store

import (
	"context"
	"iter"

	"github.com/jackc/pgx/v5"
)

// RequestID is one request of a batch file as the submitter sent it: its line in the file, the user's custom_id,
// and the custom_id the API was sent (the same unless the provider allows fewer characters).
type RequestID struct {
	Line        int
	CustomID    string
	APICustomID string
}

// SaveRequestIDs records the requests of the batch file whose sha256 is spoolSHA256, as ids yields them. It is
// idempotent: a file recorded already is left as it is, so a resumed submit may call it again.
func (s *Store) SaveRequestIDs(ctx context.Context, spoolSHA256 string, ids iter.Seq2[RequestID, error]) error {
	next, stop := iter.Pull2(ids)
	defer stop()
	return translate("save request ids of "+spoolSHA256, pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Under a lock of the file's: a concurrent submit of the same file may be recording it.
		if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock(hashtext('batchctl request_ids ' || $1))`, spoolSHA256); err != nil {
			return err
		}
		var known bool
		if err := tx.QueryRow(ctx, `select exists (select from `+s.table("request_ids")+` where spool_sha256 = $1)`,
			spoolSHA256).Scan(&known); err != nil || known {
			return err
		}
		var iterErr error
		_, err := tx.CopyFrom(ctx, pgx.Identifier{s.schema, "request_ids"},
			[]string{"spool_sha256", "api_custom_id", "custom_id", "line"},
			pgx.CopyFromFunc(func() ([]any, error) {
				r, err, ok := next()
				if err != nil || !ok {
					iterErr = err
					return nil, err
				}
				return []any{spoolSHA256, r.APICustomID, r.CustomID, int64(r.Line)}, nil
			}))
		if iterErr != nil {
			return iterErr
		}
		return err
	}))
}

// RequestIDs reads the requests recorded for a batch file, by the custom_id the API was sent; nil when none were
// (a provider with an input file at the API, or a submit without a database).
func (s *Store) RequestIDs(ctx context.Context, spoolSHA256 string) (map[string]RequestID, error) {
	if spoolSHA256 == "" {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `select api_custom_id, custom_id, line from `+s.table("request_ids")+`
		where spool_sha256 = $1`, spoolSHA256)
	if err != nil {
		return nil, translate("read request ids of "+spoolSHA256, err)
	}
	defer rows.Close()
	var ids map[string]RequestID
	for rows.Next() {
		var r RequestID
		var line int64
		if err := rows.Scan(&r.APICustomID, &r.CustomID, &line); err != nil {
			return nil, translate("read request ids of "+spoolSHA256, err)
		}
		r.Line = int(line)
		if ids == nil {
			ids = map[string]RequestID{}
		}
		ids[r.APICustomID] = r
	}
	return ids, translate("read request ids of "+spoolSHA256, rows.Err())
}
