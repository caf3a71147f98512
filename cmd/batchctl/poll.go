package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/pack"
	"github.com/batchctl/batchctl/poll"
)

func init() { subcommands = append(subcommands, newPollCmd) }

type pollOptions struct {
	global  *globalOptions
	streams *IOStreams
	api     *apiOptions

	interval      string
	workers       int
	loadTimeout   time.Duration
	rescueAfter   time.Duration
	lifelineEvery time.Duration
	outputGrace   time.Duration
	sweepEvery    time.Duration
	exitWhenDone  bool
	metricsAddr   string
	httpAddr      string
	http          *httpOptions
	fetchEvery    time.Duration

	resubmit          bool
	maxAttempts       int
	resubmitPack      int
	tokenLimitBackoff time.Duration
	deleteFiles       bool

	prices *pricesOptions
}

func newPollCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &pollOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "poll",
		Short: "Run the poller daemon: track batches and load their results into Postgres",
		Long: `Run River workers against the configured database until SIGINT or SIGTERM.

Every tracked batch (rows inserted by 'batchctl submit' or 'batchctl track') is refreshed until it ends: a bulk
refresh reads GET /v1/batches pages (about N/100 calls for N batches in flight) and each batch's own poll job asks
for it only when no refresh did, at an interval that grows with the batch's age. When a batch ends (completed,
failed, expired, cancelled), its output and error files are streamed into the results table, one row per request,
in one transaction.

Run as many pollers against one database as you like; River shares the work. Each poller registers in the pollers
table and holds a Postgres advisory lock on a session of its own for as long as it lives; every poller looks every
--lifeline-interval for pollers whose lock is free (process killed, host gone, about 20 s for a vanished host) and
makes their running jobs available again, so a dead poller's work resumes within about 30 s. A live poller's jobs
are never taken, however long they run. Run 'batchctl migrate' first.

Each loaded batch's cost is stored with its results (batches.cost_usd), at the Batch API prices of the built-in
price table or of --prices; a model without a price gets a null cost and a warning.

With --delete-files, each batch's API files are deleted as soon as no batch needs them, as 'batchctl files prune'
would (see its --help): the output and error files once the results are loaded, the input file once nothing will
read it again. Off by default: the results table is then the only copy of the answers.`,
		Example: `  batchctl poll
  batchctl poll --poll-interval 30s,15m --metrics-addr :9090
  batchctl poll --exit-when-done        # for cron and scripts: exit 0 once everything is loaded
  batchctl poll --resubmit --max-attempts 3
  batchctl poll --http 127.0.0.1:8080    # with the dashboard of batchctl serve
  batchctl poll --resubmit --delete-files   # keep no API file longer than a batch needs it`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPoll(cmd.Context(), opts)
		},
	}
	opts.api = addAPIFlags(cmd, g)
	opts.prices = addPricesFlag(cmd, g)
	f := cmd.Flags()
	f.StringVar(&opts.interval, "poll-interval", poll.Interval{Min: poll.DefaultMinInterval, Max: poll.DefaultMaxInterval}.String(),
		"MIN[,MAX]: bounds of the per-batch poll interval (a tenth of the batch's age); MIN is also the bulk refresh period")
	f.IntVar(&opts.workers, "workers", poll.DefaultWorkers, "jobs this daemon works at once")
	f.DurationVar(&opts.loadTimeout, "load-timeout", poll.DefaultLoadTimeout,
		fmt.Sprintf("longest time one batch's results load may take, extended for large files to their size at %d MiB/s", poll.MinLoadRate>>20))
	f.DurationVar(&opts.lifelineEvery, "lifeline-interval", poll.DefaultLifelineInterval, "how often to look for dead pollers and make their running jobs available again")
	f.DurationVar(&opts.rescueAfter, "rescue-after", poll.DefaultRescueAfter,
		"backstop of the lifeline: retry a poll, refresh or sweep job still running after this long, or a job of a poller without a lifeline")
	f.DurationVar(&opts.outputGrace, "output-grace", poll.DefaultOutputGrace,
		"how long after its end a completed batch with answered requests but no output_file_id is read again before its load gives up waiting")
	f.DurationVar(&opts.sweepEvery, "sweep-interval", poll.DefaultSweepInterval, "how often to look for batches that lost their jobs")
	f.BoolVar(&opts.exitWhenDone, "exit-when-done", false, "exit 0 once no batch is in flight and every ended batch has its results loaded")
	f.StringVar(&opts.metricsAddr, "metrics-addr", "", "serve Prometheus metrics (/metrics) and Go profiles (/debug/pprof/) on this address, e.g. 127.0.0.1:9090")
	f.StringVar(&opts.httpAddr, "http", "", "also serve the web surface of batchctl serve (dashboard, River UI, metrics, webhooks) on this address, e.g. 127.0.0.1:8080")
	opts.http = addHTTPFlags(cmd, g, "http-")
	f.BoolVar(&opts.resubmit, "resubmit", false, "send again, as child batches, requests that failed for a retryable cause (see batchctl resubmit --help)")
	f.IntVar(&opts.maxAttempts, "max-attempts", poll.DefaultMaxAttempts, "with --resubmit: attempts a request gets in all")
	f.DurationVar(&opts.tokenLimitBackoff, "token-limit-backoff", poll.DefaultTokenLimitBackoff, "with --resubmit: wait before resending a batch that failed with token_limit_exceeded")
	f.IntVar(&opts.resubmitPack, "resubmit-pack", poll.DefaultResubmitPack, "with --resubmit: records a request when failed packed records (submit --pack) are sent again (1: unpacked, one record a request)")
	f.BoolVar(&opts.deleteFiles, "delete-files", false, "delete each batch's API files once no batch needs them (see batchctl files prune --help)")
	f.DurationVar(&opts.fetchEvery, "fetch-interval", 0, "how often River looks for due jobs (River's default 1s)")
	_ = f.MarkHidden("fetch-interval")
	return cmd
}

func runPoll(ctx context.Context, opts *pollOptions) error {
	interval, err := poll.ParseInterval(opts.interval)
	if err != nil {
		return usageError{err}
	}
	if err := opts.validate(); err != nil {
		return usageError{err}
	}
	providers, err := opts.api.providers(opts.global.Logger())
	if err != nil {
		return err
	}
	prices, err := opts.prices.table()
	if err != nil {
		return err
	}
	s, err := opts.global.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	log := opts.global.Logger()

	reg, metrics := newRegistry(s, log)
	if opts.httpAddr != "" {
		stop, err := serveHTTP(ctx, opts.httpAddr, opts.http, s, reg, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	if opts.metricsAddr != "" {
		ln, err := net.Listen("tcp", opts.metricsAddr)
		if err != nil {
			return fmt.Errorf("listen for metrics on %s: %w", opts.metricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		// Profiles of a live poller (heap, CPU during a load); keep --metrics-addr on a private interface.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "error", err)
			}
		}()
		defer srv.Close()
		log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	}

	d, err := poll.New(poll.Config{
		Store: s, Providers: providers, Logger: log, Metrics: metrics,
		Interval: interval, Workers: opts.workers, LoadTimeout: opts.loadTimeout, RescueAfter: opts.rescueAfter,
		LifelineInterval: opts.lifelineEvery, OutputGrace: opts.outputGrace,
		SweepInterval: opts.sweepEvery, ExitWhenDone: opts.exitWhenDone, FetchPollInterval: opts.fetchEvery,
		Resubmit: opts.resubmit, MaxAttempts: opts.maxAttempts, TokenLimitBackoff: opts.tokenLimitBackoff, ResubmitPack: opts.resubmitPack,
		Prices: prices, DeleteFiles: opts.deleteFiles,
	})
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// validate rejects negative durations and counts: zero takes the default, but a negative value is a typo, not a wish.
func (opts *pollOptions) validate() error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--load-timeout", opts.loadTimeout}, {"--rescue-after", opts.rescueAfter}, {"--lifeline-interval", opts.lifelineEvery}, {"--output-grace", opts.outputGrace},
		{"--sweep-interval", opts.sweepEvery}, {"--fetch-interval", opts.fetchEvery}, {"--token-limit-backoff", opts.tokenLimitBackoff},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s %v: want a positive duration (0 for the default)", d.flag, d.v)
		}
	}
	if opts.workers < 0 {
		return fmt.Errorf("--workers %d: want a positive number (0 for the default)", opts.workers)
	}
	if opts.maxAttempts < 0 {
		return fmt.Errorf("--max-attempts %d: want a positive number (0 for the default)", opts.maxAttempts)
	}
	if opts.resubmitPack < 0 || opts.resubmitPack > pack.MaxSize {
		return fmt.Errorf("--resubmit-pack %d: want 1 to %d records a request", opts.resubmitPack, pack.MaxSize)
	}
	return nil
}
