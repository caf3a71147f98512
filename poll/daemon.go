package poll

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/batchctl/batchctl/cost"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// Defaults of Config's durations.
const (
	DefaultWorkers         = 10
	DefaultLoadTimeout     = 10 * time.Minute
	DefaultShutdownTimeout = 30 * time.Second
	DefaultSweepInterval   = time.Minute
	// DefaultDeadline: a poll job gives up on a batch this long after its creation: the API's 24 h window, up to
	// 10 minutes of cancelling, and an hour of slack.
	DefaultDeadline = 24*time.Hour + 10*time.Minute + time.Hour
	// DefaultOutputGrace: a batch reported completed, with answered requests but no output_file_id, is read again
	// at every minimum poll interval for this long after it ended before its load gives up waiting and loads what
	// there is (loudly: an error log and batchctl_loads_without_output_total).
	DefaultOutputGrace = time.Hour
	// notFoundGrace: a batch the API does not know yet this soon after creation is not alarming.
	notFoundGrace = time.Minute
)

// Config configures a Daemon. Store and Providers are required; zero values of the rest take the defaults above.
type Config struct {
	Store *store.Store
	// Providers are the batch APIs this daemon has credentials for. A batch at a provider not in the set is
	// skipped with an error naming the missing credentials, never marked failed.
	Providers provider.Set
	Logger    *slog.Logger
	// Metrics; nil creates unregistered ones.
	Metrics *Metrics

	Interval Interval // poll interval bounds
	Workers  int      // jobs worked at once by this daemon
	// LoadTimeout bounds one results load, downloads included; a load of large files gets longer (see MinLoadRate).
	LoadTimeout time.Duration
	// MinLoadRate (bytes per second) extends LoadTimeout for large files: a load may take as long as its files
	// need at this rate (default MinLoadRate).
	MinLoadRate int64
	// ClientID names this daemon's River client and its row in the pollers table; unique per process (default
	// host_pid_random).
	ClientID string
	// LifelineInterval is how often this daemon looks for dead pollers and hands their running jobs back
	// (DefaultLifelineInterval).
	LifelineInterval time.Duration
	// RescueAfter is the backstop of the lifeline (DefaultRescueAfter): River's rescuer retries a poll, refresh or
	// sweep job still running this long after it started, and the lifeline a job of a client that never registered.
	// Shorter is safe: a load holds its batch's row lock, so a rescued copy of a live load waits for it and then
	// finds the results loaded.
	RescueAfter   time.Duration
	SweepInterval time.Duration // how often stranded batches are looked for
	// OutputGrace is how long after its end a completed batch's load waits for a missing output file
	// (DefaultOutputGrace).
	OutputGrace     time.Duration
	Deadline        time.Duration // after creation, when a batch's poll job gives up
	ShutdownTimeout time.Duration // how long a stop waits for running jobs before cancelling them
	// FetchPollInterval is how often River looks for due jobs (snoozed polls); River's default when zero.
	FetchPollInterval time.Duration
	// ExitWhenDone makes Run return once no batch is in flight, every ended batch has its results loaded (and, with
	// Resubmit, resubmitted where it had to be), and no batch waits in the admission queue (queued within its
	// quota, or being created).
	ExitWhenDone bool

	// Resubmit sends again, as child batches, the requests of ended batches that failed for a retryable cause; see
	// Resubmitter. MaxAttempts and TokenLimitBackoff configure it; ResubmitDir holds its request files.
	Resubmit          bool
	MaxAttempts       int
	TokenLimitBackoff time.Duration
	ResubmitDir       string
	// ResubmitPack is the pack size failed packed records are sent again in (DefaultResubmitPack when 0).
	ResubmitPack int

	// Prices is the price table that gives each loaded batch its cost_usd (default cost.Default()).
	Prices *cost.Table

	// DeleteFiles deletes each batch's API files as soon as no batch needs them: its output and error files once its
	// results are loaded, its input file once nothing will read it again (see Daemon.deleteFiles).
	DeleteFiles bool
}

// Daemon runs the poller's River workers.
type Daemon struct {
	cfg       Config
	log       *slog.Logger
	store     *store.Store
	providers provider.Set
	m         *Metrics
	client    *river.Client[pgx.Tx]
	// lifeline is this daemon's registration in the pollers table, set by Run.
	lifeline *store.Lifeline
	// noCredsAt is when batches of a provider without credentials were last reported skipped.
	noCredsMu sync.Mutex
	noCredsAt map[string]time.Time
	// unknownPrices warns once per model loaded without a price.
	unknownPrices cost.UnknownWarner
	// rounds are the last bulk refresh rounds, as poll jobs last read them.
	rounds refreshRounds
	// started is when Run started.
	started time.Time
}

// New builds a Daemon; it starts nothing.
func New(cfg Config) (*Daemon, error) {
	if cfg.Store == nil {
		return nil, errors.New("poll: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Interval.Min <= 0 {
		cfg.Interval.Min = DefaultMinInterval
	}
	if cfg.Interval.Max < cfg.Interval.Min {
		cfg.Interval.Max = max(cfg.Interval.Min, DefaultMaxInterval)
	}
	cfg.Workers = cmp.Or(cfg.Workers, DefaultWorkers)
	cfg.LoadTimeout = cmp.Or(cfg.LoadTimeout, DefaultLoadTimeout)
	cfg.MinLoadRate = cmp.Or(cfg.MinLoadRate, MinLoadRate)
	cfg.RescueAfter = cmp.Or(cfg.RescueAfter, DefaultRescueAfter)
	cfg.LifelineInterval = cmp.Or(cfg.LifelineInterval, DefaultLifelineInterval)
	cfg.ClientID = cmp.Or(cfg.ClientID, newClientID())
	cfg.SweepInterval = cmp.Or(cfg.SweepInterval, DefaultSweepInterval)
	cfg.OutputGrace = cmp.Or(cfg.OutputGrace, DefaultOutputGrace)
	cfg.Deadline = cmp.Or(cfg.Deadline, DefaultDeadline)
	cfg.ShutdownTimeout = cmp.Or(cfg.ShutdownTimeout, DefaultShutdownTimeout)
	cfg.MaxAttempts = cmp.Or(cfg.MaxAttempts, DefaultMaxAttempts)
	cfg.TokenLimitBackoff = cmp.Or(cfg.TokenLimitBackoff, DefaultTokenLimitBackoff)
	if cfg.Prices == nil {
		cfg.Prices = cost.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil, cfg.Store, cfg.Logger)
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, store: cfg.Store, providers: cfg.Providers, m: cfg.Metrics}
	d.unknownPrices.Logger = cfg.Logger

	workers := river.NewWorkers()
	river.AddWorker(workers, &pollWorker{d: d})
	river.AddWorker(workers, &refreshBatchWorker{d: d})
	river.AddWorker(workers, &cancelBatchWorker{d: d})
	river.AddWorker(workers, &loadWorker{d: d})
	river.AddWorker(workers, &refreshWorker{d: d})
	river.AddWorker(workers, &sweepWorker{d: d})
	river.AddWorker(workers, &resubmitWorker{d: d})
	river.AddWorker(workers, &admitWorker{d: d})
	client, err := river.NewClient(riverpgxv5.New(cfg.Store.Pool()), &river.Config{
		// The lifeline finds a dead daemon's jobs by this ID in river_job.attempted_by.
		ID:      cfg.ClientID,
		Schema:  cfg.Store.Schema(),
		Queues:  map[string]river.QueueConfig{store.QueueBatches: {MaxWorkers: cfg.Workers}},
		Workers: workers,
		PeriodicJobs: []*river.PeriodicJob{
			river.NewPeriodicJob(river.PeriodicInterval(cfg.Interval.Min),
				func() (river.JobArgs, *river.InsertOpts) { return refreshArgs{}, nil },
				&river.PeriodicJobOpts{ID: "batchctl_refresh", RunOnStart: true}),
			river.NewPeriodicJob(river.PeriodicInterval(cfg.SweepInterval),
				func() (river.JobArgs, *river.InsertOpts) { return sweepArgs{}, nil },
				&river.PeriodicJobOpts{ID: "batchctl_sweep", RunOnStart: true}),
			river.NewPeriodicJob(river.PeriodicInterval(cfg.Interval.Min),
				func() (river.JobArgs, *river.InsertOpts) { return admitArgs{}, nil },
				&river.PeriodicJobOpts{ID: "batchctl_admit", RunOnStart: true}),
		},
		RetryPolicy:          retryPolicy{d},
		RescueStuckJobsAfter: cfg.RescueAfter,
		// Each per-batch worker sets its own timeout; the default is the periodic jobs'.
		JobTimeout:        d.jobTimeout(),
		FetchPollInterval: cfg.FetchPollInterval,
		FetchCooldown:     min(cfg.FetchPollInterval, 100*time.Millisecond),
		Logger:            cfg.Logger.With("component", "river"),
	})
	if err != nil {
		return nil, fmt.Errorf("create River client: %w", err)
	}
	d.client = client
	return d, nil
}

// Run works jobs until ctx is cancelled (or, with ExitWhenDone, until there is nothing left to do), then stops
// gracefully: running jobs get ShutdownTimeout to finish; a load cut short rolls back and is retried later.
//
// Before it works any job, the daemon registers in the pollers table with its lifeline (see store.Lifeline) and hands
// back the running jobs of pollers that died; it keeps doing so every LifelineInterval.
func (d *Daemon) Run(ctx context.Context) error {
	d.started = time.Now()
	if err := d.register(ctx); err != nil {
		return fmt.Errorf("register poller: %w", err)
	}
	defer d.unregister()
	d.rescueDead(ctx)
	if err := d.client.Start(ctx); err != nil {
		return fmt.Errorf("start River client: %w", err)
	}
	d.log.Info("poller started", "schema", d.store.Schema(), "client_id", d.cfg.ClientID, "workers", d.cfg.Workers,
		"interval", d.cfg.Interval.String())
	lifelineCtx, stopLifeline := context.WithCancel(context.Background())
	lifelineDone := make(chan struct{})
	go func() {
		defer close(lifelineDone)
		d.runLifeline(lifelineCtx)
	}()
	// The lifeline outlives the River client's stop: jobs still finishing belong to a live poller.
	defer func() {
		stopLifeline()
		<-lifelineDone
	}()
	// One refresh and one admission pass now, rather than after River elects a leader to run the periodic ones
	// (seconds): a (re)started poller queues the loads of batches that ended while it was away, and creates the
	// batches queued while no poller ran, at once. Each is a unique job, a no-op when one is queued or running
	// already: four pollers starting together make one refresh round (N/100 list calls), not four.
	for _, args := range []river.JobArgs{refreshArgs{}, admitArgs{}} {
		if _, err := d.client.Insert(ctx, args, nil); err != nil && ctx.Err() == nil {
			d.log.Warn("queue a job at start", "kind", args.Kind(), "error", err)
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if d.cfg.ExitWhenDone {
		go func() {
			d.waitDone(runCtx)
			cancel()
		}()
	}
	<-runCtx.Done()

	stopCtx, stopCancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
	defer stopCancel()
	if err := d.client.Stop(stopCtx); err != nil {
		d.log.Warn("running jobs did not finish in time; cancelling them", "timeout", d.cfg.ShutdownTimeout)
		cancelCtx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		if err := d.client.StopAndCancel(cancelCtx); err != nil {
			return fmt.Errorf("stop River client: %w", err)
		}
	}
	d.log.Info("poller stopped")
	return nil
}

// waitDone returns once nothing is in flight, nothing waits to be loaded, nothing waits to be admitted, and no dead
// poller's job is left running.
func (d *Daemon) waitDone(ctx context.Context) {
	tick := time.NewTicker(min(d.cfg.Interval.Min, time.Second))
	defer tick.Stop()
	for {
		// One snapshot: a load moves its batch from unloaded to a resubmission candidate, and a resubmission its
		// child into flight, each in one transaction; two separate reads could miss the batch in both.
		maxAttempts := 0
		if d.cfg.Resubmit {
			maxAttempts = d.cfg.MaxAttempts
		}
		inFlight, unloaded, resubmits, queued, err := d.store.Pending(ctx, maxAttempts)
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Warn("count pending batches", "error", err) // a database restart: keep waiting
		case err == nil && inFlight == 0 && unloaded == 0 && resubmits == 0 && queued == 0:
			// A poller that died since the last lifeline round may still show jobs as running: hand them back
			// first and look again, so that an exit leaves nothing running in a dead poller's name.
			if d.rescueDead(ctx) > 0 {
				break
			}
			d.log.Info("every batch has been admitted, has ended and has its results loaded; exiting")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// resubmitter is the daemon's Resubmitter.
func (d *Daemon) resubmitter() *Resubmitter {
	return &Resubmitter{
		Store: d.store, Providers: d.providers, Logger: d.log,
		MaxAttempts: d.cfg.MaxAttempts, TokenLimitBackoff: d.cfg.TokenLimitBackoff, Dir: d.cfg.ResubmitDir,
		Pack: d.cfg.ResubmitPack,
	}
}

// jobTimeout is River's default job timeout, which the periodic jobs (refresh, sweep, admission) run under: River
// insists that it not exceed the rescue delay.
func (d *Daemon) jobTimeout() time.Duration { return min(pollTimeout, d.cfg.RescueAfter) }
