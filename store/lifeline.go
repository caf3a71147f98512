package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server-side TCP keepalives of a lifeline session: Postgres ends the session of a poller whose host vanished (power
// loss, network cut) after about KeepaliveIdle + KeepaliveCount × KeepaliveInterval (20 s), which releases the
// poller's lock. A killed process needs none of this: its kernel closes the socket and Postgres notices at once.
const (
	KeepaliveIdle     = 5 * time.Second
	KeepaliveInterval = 5 * time.Second
	KeepaliveCount    = 3
)

// lifelinePingTimeout bounds the look at a lifeline session's health; a slower answer counts as a broken session.
const lifelinePingTimeout = 5 * time.Second

// ErrLifelineLost: the lifeline's session broke and could not yet be replaced with one holding the lock.
var ErrLifelineLost = errors.New("lifeline session lost")

// Poller describes one poller daemon as the pollers table records it.
type Poller struct {
	ClientID  string // the River client ID, as river_job.attempted_by names it
	Hostname  string
	PID       int
	StartedAt time.Time
}

// Lifeline is a registered poller's proof of life: a dedicated database session, outside the pool, that holds a
// session-level advisory lock keyed on the poller's client ID. While the session lives, no other session can take the
// lock; once it is gone (process killed, host lost, Postgres restarted), any session can, and RescueDeadPollers hands
// the poller's running jobs back. Its methods are safe for concurrent use.
type Lifeline struct {
	s      *Store
	poller Poller

	mu   sync.Mutex
	conn *pgx.Conn // nil while broken
}

// Register takes p's lock on a new dedicated session and then records p in the pollers table. Register the poller
// before its River client works any job: a job attempted by a client without a lifeline is only rescued after
// RescueDeadPollers' orphanAfter.
func (s *Store) Register(ctx context.Context, p Poller) (*Lifeline, error) {
	l := &Lifeline{s: s, poller: p}
	if err := l.connect(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// lockKey is the string the advisory lock of a poller is hashed from: unique per schema and client ID.
func (s *Store) lockKey(clientID string) string { return "batchctl:" + s.schema + ":" + clientID }

// connect opens the dedicated session, sets its keepalives, takes the lock (waiting is no option: a session the
// server has not yet seen die may still hold it; then the call fails and the next Check tries again) and upserts the
// poller's row. Called with l.mu held, or before l is shared.
func (l *Lifeline) connect(ctx context.Context) error {
	cfg := l.s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "batchctl poller " + l.poller.ClientID
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("open lifeline session: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = conn.Close(context.Background())
		}
	}()
	secs := func(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }
	if _, err := conn.Exec(ctx, `set tcp_keepalives_idle = `+secs(KeepaliveIdle)+`; set tcp_keepalives_interval = `+
		secs(KeepaliveInterval)+`; set tcp_keepalives_count = `+strconv.Itoa(KeepaliveCount)); err != nil {
		return translate("set lifeline keepalives", err)
	}
	var locked bool
	if err := conn.QueryRow(ctx, `select pg_try_advisory_lock(hashtextextended($1, 0))`, l.s.lockKey(l.poller.ClientID)).Scan(&locked); err != nil {
		return translate("take lifeline lock", err)
	}
	if !locked {
		return fmt.Errorf("take lifeline lock of %s: %w (another session holds it)", l.poller.ClientID, ErrLifelineLost)
	}
	// A rescue that took the lock while the old session was gone has deleted the row: write it again.
	if _, err := conn.Exec(ctx, `insert into `+l.s.table("pollers")+` (client_id, hostname, pid, started_at)
		values ($1, $2, $3, coalesce($4, now()))
		on conflict (client_id) do update set locked_at = now()`,
		l.poller.ClientID, l.poller.Hostname, l.poller.PID, nullTime(l.poller.StartedAt)); err != nil {
		return translate("register poller "+l.poller.ClientID, err)
	}
	ok = true
	l.conn = conn
	return nil
}

// Check makes sure the lifeline session is alive and still holds the lock: when the session broke (a Postgres
// restart, a network cut), it opens a new one and takes the lock again. It reports whether it had to; a lifeline
// replaced after a gap may have had its running jobs handed to other pollers meanwhile, which is safe (a load holds its
// batch's row lock) but worth a log line. It returns ErrLifelineLost (wrapped) when the session is still broken.
func (l *Lifeline) Check(ctx context.Context) (reconnected bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		pingCtx, cancel := context.WithTimeout(ctx, lifelinePingTimeout)
		err := l.conn.Ping(pingCtx)
		cancel()
		if err == nil {
			return false, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		_ = l.conn.Close(context.Background())
		l.conn = nil
	}
	if err := l.connect(ctx); err != nil {
		return false, fmt.Errorf("%w: %w", ErrLifelineLost, err)
	}
	return true, nil
}

// Close unregisters the poller: it deletes its row, then ends the session, which releases the lock. Call it once
// the poller's River client has stopped.
func (l *Lifeline) Close(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		_, err := l.s.pool.Exec(ctx, `delete from `+l.s.table("pollers")+` where client_id = $1`, l.poller.ClientID)
		return translate("unregister poller "+l.poller.ClientID, err)
	}
	_, err := l.conn.Exec(ctx, `delete from `+l.s.table("pollers")+` where client_id = $1`, l.poller.ClientID)
	cerr := l.conn.Close(ctx)
	l.conn = nil
	if err != nil {
		return translate("unregister poller "+l.poller.ClientID, err)
	}
	if cerr != nil {
		return fmt.Errorf("close lifeline session: %w", cerr)
	}
	return nil
}

// Rescue is what one RescueDeadPollers round did.
type Rescue struct {
	DeadPollers []string // client IDs of the pollers found dead, now unregistered
	Jobs        int64    // their running jobs made available again
	OrphanJobs  int64    // running jobs of clients never registered, made available after orphanAfter
}

// RescueDeadPollers looks at every registered poller but self: one whose lock can be taken has lost its session, so
// in the same transaction its running jobs (those whose latest attempt it made) become available at once, with an
// entry in their errors as River's rescuer writes, River's leadership it held is released, and its row is deleted.
// The transaction-level lock it takes is held until the commit, so the owner cannot come back half way.
//
// A poller whose session lives is never touched, however long its jobs run. Running jobs whose latest attempt was
// made by a client that never registered (a batchctl without the lifeline) are made available once they have run
// for orphanAfter (zero: never).
func (s *Store) RescueDeadPollers(ctx context.Context, self string, orphanAfter time.Duration) (Rescue, error) {
	var res Rescue
	rows, err := s.pool.Query(ctx, `select client_id from `+s.table("pollers")+` where client_id <> $1 order by started_at`, self)
	if err != nil {
		return res, translate("list pollers", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return res, translate("list pollers", err)
	}
	for _, id := range ids {
		var dead bool
		var n int64
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `select pg_try_advisory_xact_lock(hashtextextended($1, 0))`, s.lockKey(id)).Scan(&dead); err != nil {
				return translate("try the lifeline lock of "+id, err)
			}
			if !dead {
				return nil
			}
			var err error
			if n, err = s.rescueJobs(ctx, tx, `j.attempted_by[array_length(j.attempted_by, 1)] = $1`,
				"poller "+id+" died (its database session ended); job rescued by the lifeline of "+self, id); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `delete from `+s.table("river_leader")+` where leader_id = $1`, id); err != nil {
				return translate("release the leadership of "+id, err)
			}
			_, err = tx.Exec(ctx, `delete from `+s.table("pollers")+` where client_id = $1`, id)
			return translate("unregister dead poller "+id, err)
		})
		if err != nil {
			return res, err
		}
		if dead {
			res.DeadPollers = append(res.DeadPollers, id)
			res.Jobs += n
		}
	}
	if orphanAfter > 0 {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var err error
			res.OrphanJobs, err = s.rescueJobs(ctx, tx, `j.attempted_at < now() - $1::interval
				and not exists (select 1 from `+s.table("pollers")+` p where p.client_id = j.attempted_by[array_length(j.attempted_by, 1)])`,
				"job running for over "+orphanAfter.String()+" in a client without a lifeline; rescued by the lifeline of "+self, orphanAfter)
			return err
		})
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// rescueJobs makes the running jobs matching where (a predicate over river_job j, with $1 its argument) available
// now, appending reason to their errors in River's AttemptError shape and counting the rescue in their metadata, as
// River's own rescuer does. It returns how many it rescued.
func (s *Store) rescueJobs(ctx context.Context, tx pgx.Tx, where, reason string, arg any) (int64, error) {
	tag, err := tx.Exec(ctx, `update `+s.table("river_job")+` j set
			state = 'available',
			scheduled_at = now(),
			errors = array_append(j.errors, jsonb_build_object('at', now(), 'attempt', greatest(j.attempt, 0),
				'error', $2::text, 'trace', '')),
			metadata = j.metadata || jsonb_build_object('batchctl:lifeline_rescue_count',
				coalesce(case when jsonb_typeof(j.metadata -> 'batchctl:lifeline_rescue_count') = 'number'
					then (j.metadata ->> 'batchctl:lifeline_rescue_count')::int end, 0) + 1)
		where j.state = 'running' and `+where, arg, reason)
	if err != nil {
		return 0, translate("rescue running jobs", err)
	}
	return tag.RowsAffected(), nil
}

// Pollers lists the registered pollers, oldest first.
func (s *Store) Pollers(ctx context.Context) ([]Poller, error) {
	rows, err := s.pool.Query(ctx, `select client_id, hostname, pid, started_at from `+s.table("pollers")+` order by started_at, client_id`)
	if err != nil {
		return nil, translate("list pollers", err)
	}
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Poller, error) {
		var p Poller
		err := r.Scan(&p.ClientID, &p.Hostname, &p.PID, &p.StartedAt)
		return p, err
	})
	return ps, translate("list pollers", err)
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
