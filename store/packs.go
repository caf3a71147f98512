package store

import (
	"context"
	"encoding/json"
	"iter"

	"github.com/jackc/pgx/v5"
)

// Pack describes the packed requests of one batch file (submit --pack): how many records a request holds at most,
// the endpoint, and the JSON schema of one record's answer they asked for.
type Pack struct {
	SpoolSHA256  string
	Endpoint     string
	Size         int
	AnswerSchema json.RawMessage
}

// PackedRecord is one item of a packed request: the request's custom_id and the item's index (1..N), the record's
// own custom_id, and its line among the records of the batch file.
type PackedRecord struct {
	PackedCustomID string `json:"packed_custom_id"`
	Index          int    `json:"index"`
	CustomID       string `json:"custom_id"`
	Line           int    `json:"line"`
}

// SavePack records a batch file's packing and the items of its packed requests, as recs yields them. It is
// idempotent: a file recorded already is left as it is, so a resumed submit may call it again.
func (s *Store) SavePack(ctx context.Context, p Pack, recs iter.Seq2[PackedRecord, error]) error {
	next, stop := iter.Pull2(recs)
	defer stop()
	return translate("save the packed records of "+p.SpoolSHA256, pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock(hashtext('batchctl packs ' || $1))`, p.SpoolSHA256); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `insert into `+s.table("packs")+` (spool_sha256, endpoint, pack_size, answer_schema)
			values ($1, $2, $3, $4) on conflict (spool_sha256) do nothing`, p.SpoolSHA256, p.Endpoint, p.Size, string(p.AnswerSchema))
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		var iterErr error
		_, err = tx.CopyFrom(ctx, pgx.Identifier{s.schema, "packed_records"},
			[]string{"spool_sha256", "packed_custom_id", "item_index", "custom_id", "line"},
			pgx.CopyFromFunc(func() ([]any, error) {
				r, err, ok := next()
				if err != nil || !ok {
					iterErr = err
					return nil, err
				}
				return []any{p.SpoolSHA256, r.PackedCustomID, int32(r.Index), r.CustomID, int64(r.Line)}, nil
			}))
		if iterErr != nil {
			return iterErr
		}
		return err
	}))
}

// GetPack reads the packing of a batch file; nil when its requests were not packed, or not recorded.
func (s *Store) GetPack(ctx context.Context, spoolSHA256 string) (*Pack, error) {
	if spoolSHA256 == "" {
		return nil, nil
	}
	p := Pack{SpoolSHA256: spoolSHA256}
	var schema []byte
	err := s.pool.QueryRow(ctx, `select endpoint, pack_size, answer_schema from `+s.table("packs")+` where spool_sha256 = $1`,
		spoolSHA256).Scan(&p.Endpoint, &p.Size, &schema)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, translate("read the packing of "+spoolSHA256, err)
	}
	p.AnswerSchema = schema
	return &p, nil
}

// PackedRecords reads the items of a batch file's packed requests, by packed custom_id, each request's in index
// order: of the requests ids when ids is not nil (a load looks a chunk of lines up at a time), else of all of them
// (one entry per record of the batch file in memory).
func (s *Store) PackedRecords(ctx context.Context, spoolSHA256 string, ids []string) (map[string][]PackedRecord, error) {
	rows, err := s.pool.Query(ctx, `select packed_custom_id, item_index, custom_id, line from `+s.table("packed_records")+`
		where spool_sha256 = $1 and ($2::text[] is null or packed_custom_id = any($2))
		order by packed_custom_id, item_index`, spoolSHA256, ids)
	if err != nil {
		return nil, translate("read the packed records of "+spoolSHA256, err)
	}
	out := map[string][]PackedRecord{}
	var r PackedRecord
	var line int64
	var idx int32
	var last string
	_, err = pgx.ForEachRow(rows, []any{&r.PackedCustomID, &idx, &r.CustomID, &line}, func() error {
		if r.PackedCustomID == last { // one copy of the request's custom_id for all its records
			r.PackedCustomID = last
		}
		last = r.PackedCustomID
		r.Index, r.Line = int(idx), int(line)
		out[r.PackedCustomID] = append(out[r.PackedCustomID], r)
		return nil
	})
	return out, translate("read the packed records of "+spoolSHA256, err)
}
