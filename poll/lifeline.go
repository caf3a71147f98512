package poll

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/batchctl/batchctl/store"
)

// DefaultLifelineInterval is how often every poller looks for dead pollers. With store's keepalives it bounds the
// time from a poller's death to the rescue of its jobs: a killed process is noticed at the next look (at most this
// long), a vanished host once Postgres has ended its session (about 20 s) and then at the next look.
const DefaultLifelineInterval = 10 * time.Second

// DefaultRescueAfter is River's own rescue of jobs left running, a backstop only: the lifeline decides whether a
// poller is alive. It also bounds how long a job attempted by a client without a lifeline (a batchctl from before it)
// may run before it is taken to be dead.
const DefaultRescueAfter = 2 * time.Hour

// newClientID names a poller's River client: host, process and a random suffix, so that a restarted process (same
// host, perhaps the same pid in a container) never reuses a dead one's ID. River allows 100 characters.
func newClientID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r == '.' || r == ' ' {
			return '_'
		}
		return r
	}, host)
	if host == "" {
		host = "unknown_host"
	}
	if len(host) > 60 {
		host = host[:60]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "_" + strconv.Itoa(os.Getpid()) + "_" + hex.EncodeToString(b[:])
}

// register records this poller and takes its lifeline lock; it must precede the River client's start.
func (d *Daemon) register(ctx context.Context) error {
	host, _ := os.Hostname()
	l, err := d.store.Register(ctx, store.Poller{ClientID: d.cfg.ClientID, Hostname: host, PID: os.Getpid(), StartedAt: time.Now()})
	if err != nil {
		return err
	}
	d.lifeline = l
	return nil
}

// unregister deletes this poller's row and ends its lifeline session; after the River client has stopped.
func (d *Daemon) unregister() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.lifeline.Close(ctx); err != nil {
		d.log.Warn("unregister poller", "error", err) // the next poller's lifeline check removes the row
	}
}

// runLifeline checks this poller's own lifeline and rescues dead pollers' jobs every LifelineInterval until ctx
// ends. Every poller runs it, not only River's leader: the leader may be the one that died.
func (d *Daemon) runLifeline(ctx context.Context) {
	t := time.NewTicker(d.cfg.LifelineInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		reconnected, err := d.lifeline.Check(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			d.log.Warn("lifeline session lost; retrying (other pollers may take this poller's running jobs; a load holds its batch's row lock, so a second copy of it waits and finds it done)",
				"client_id", d.cfg.ClientID, "error", err)
		case reconnected:
			d.log.Warn("lifeline session replaced after a break", "client_id", d.cfg.ClientID)
		}
		d.rescueDead(ctx)
	}
}

// rescueDead runs one lifeline round: dead pollers' running jobs become available to the live ones. It reports how
// many jobs it handed back (0 on error).
func (d *Daemon) rescueDead(ctx context.Context) int64 {
	res, err := d.store.RescueDeadPollers(ctx, d.cfg.ClientID, d.cfg.RescueAfter)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
			d.log.Warn("lifeline: look for dead pollers", "error", err)
		}
		return 0
	}
	if len(res.DeadPollers) > 0 {
		d.log.Warn("lifeline: pollers died; their running jobs are available again", "dead", res.DeadPollers, "jobs", res.Jobs)
	}
	if res.OrphanJobs > 0 {
		d.log.Warn("lifeline: jobs left running by a client without a lifeline are available again",
			"jobs", res.OrphanJobs, "running_for_over", d.cfg.RescueAfter)
	}
	return res.Jobs + res.OrphanJobs
}
