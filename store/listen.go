package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
)

// Listen receives the notifications of NotifyChannel and ProgressChannel for this store's schema and calls fn with each,
// until ctx ends or the connection fails; it returns the error (ctx's when it ended). The session is a connection of
// its own, outside the pool: it is held for as long as Listen runs. ready, when not nil, is called once the session
// listens, so a caller can tell when no notification can be missed any more.
func (s *Store) Listen(ctx context.Context, ready func(), fn func(Notification)) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connect to listen on %s: %w", NotifyChannel, err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, "listen "+NotifyChannel+"; listen "+ProgressChannel); err != nil {
		return translate("listen "+NotifyChannel, err)
	}
	if ready != nil {
		ready()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("wait for %s: %w", NotifyChannel, err)
		}
		var msg Notification
		if err := json.Unmarshal([]byte(n.Payload), &msg); err != nil || msg.Schema != s.schema {
			continue // another schema's batches, or not batchctl's payload
		}
		fn(msg)
	}
}

// EnqueueRefresh queues the immediate refresh of a tracked batch (RefreshBatchArgs). It reports whether a job was
// inserted: false when one for the batch is already queued, running or done. ErrNotFound when the batch is not
// tracked here (a webhook about another application's batch).
func (s *Store) EnqueueRefresh(ctx context.Context, batchID string) (inserted bool, err error) {
	return s.enqueueFor(ctx, batchID, RefreshBatchArgs{BatchID: batchID})
}

// EnqueueCancel queues the cancel of a tracked batch (CancelBatchArgs); see EnqueueRefresh for the results.
func (s *Store) EnqueueCancel(ctx context.Context, batchID string) (inserted bool, err error) {
	return s.enqueueFor(ctx, batchID, CancelBatchArgs{BatchID: batchID})
}

// EnqueueResubmit queues the resubmission of a tracked batch's retryable requests (ResubmitArgs), as poll
// --resubmit would; see EnqueueRefresh for the results.
func (s *Store) EnqueueResubmit(ctx context.Context, batchID string) (inserted bool, err error) {
	return s.enqueueFor(ctx, batchID, ResubmitArgs{BatchID: batchID})
}

// enqueueFor inserts a job about a tracked batch, in the transaction that checks the batch is tracked.
func (s *Store) enqueueFor(ctx context.Context, batchID string, args river.JobArgs) (inserted bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `select 1 from `+s.table("batches")+` where batch_id = $1`, batchID).Scan(&one); err != nil {
			return translate("read batch "+batchID, err)
		}
		res, err := s.river.InsertTx(ctx, tx, args, nil)
		if err != nil {
			return translate("enqueue "+args.Kind()+" for "+batchID, err)
		}
		inserted = !res.UniqueSkippedAsDuplicate
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
	}
	return inserted, err
}
