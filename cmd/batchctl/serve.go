package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/poll"
	"github.com/batchctl/batchctl/store"
	"github.com/batchctl/batchctl/web"
)

func init() { subcommands = append(subcommands, newServeCmd) }

// Timeouts of the web server.
const (
	// httpReadHeaderTimeout bounds a request's headers; the event stream has no write timeout (it lasts).
	httpReadHeaderTimeout = 10 * time.Second
	// httpShutdownTimeout is how long a stop waits for requests in flight.
	httpShutdownTimeout = 5 * time.Second
)

// httpOptions are the web surface's flags, shared by serve and poll --http.
type httpOptions struct {
	authToken     string
	webhookSecret string
	allowActions  bool
	noRiverUI     bool
}

func addHTTPFlags(cmd *cobra.Command, g *globalOptions, prefix string) *httpOptions {
	o := &httpOptions{}
	f := cmd.Flags()
	f.StringVar(&o.authToken, prefix+"auth-token", g.getenv("BATCHCTL_HTTP_TOKEN"),
		"bearer token required by every route but the webhook (env BATCHCTL_HTTP_TOKEN); a browser opens the page once with ?token=...")
	f.StringVar(&o.webhookSecret, "webhook-secret", g.getenv("BATCHCTL_WEBHOOK_SECRET"),
		"whsec_... secret verifying /webhooks/openai (env BATCHCTL_WEBHOOK_SECRET); without it every webhook is refused")
	f.BoolVar(&o.allowActions, prefix+"allow-actions", false, "show cancel and resubmit buttons (CSRF-protected) and allow River UI's job actions")
	f.BoolVar(&o.noRiverUI, prefix+"no-riverui", false, "do not mount River UI at /riverui/")
	return o
}

// serveHTTP serves the web surface on addr until ctx ends. It refuses a non-loopback address without a token. ready,
// when not nil, gets the address listened on.
func serveHTTP(ctx context.Context, addr string, o *httpOptions, s *store.Store, reg prometheus.Gatherer, log *slog.Logger) (stop func(), err error) {
	if !web.IsLoopback(addr) && o.authToken == "" {
		return nil, usageError{fmt.Errorf("%s is not a loopback address: serving the dashboard beyond this machine needs --auth-token (or BATCHCTL_HTTP_TOKEN)", addr)}
	}
	h, err := web.New(web.Options{Store: s, Logger: log, Gatherer: reg, AuthToken: o.authToken,
		WebhookSecret: o.webhookSecret, AllowActions: o.allowActions, NoRiverUI: o.noRiverUI})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	if err := h.Start(ctx); err != nil {
		cancel()
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: httpReadHeaderTimeout,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("web server", "error", err)
		}
	}()
	log.Info("serving the dashboard", "url", "http://"+ln.Addr().String()+"/", "riverui", !o.noRiverUI,
		"webhooks", o.webhookSecret != "", "auth", o.authToken != "", "actions", o.allowActions)
	return func() {
		cancel() // ends the event streams, so Shutdown does not wait for them
		sctx, c := context.WithTimeout(context.Background(), httpShutdownTimeout)
		defer c()
		_ = srv.Shutdown(sctx)
		<-done
	}, nil
}

// newRegistry is the Prometheus registry of poll --metrics-addr and serve's /metrics: the Go and process
// collectors and the poller's metrics, whose gauges read the database at scrape time.
func newRegistry(s *store.Store, log *slog.Logger) (*prometheus.Registry, *poll.Metrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg, poll.NewMetrics(reg, s, log)
}

type serveOptions struct {
	global  *globalOptions
	streams *IOStreams
	addr    string
	http    *httpOptions
}

func newServeCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &serveOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the live batch dashboard, River UI, metrics and OpenAI's webhooks",
		Long: `Serve batchctl's web surface. It needs only the database (DATABASE_URL) and runs beside any number of
pollers; 'batchctl poll --http ADDR' serves the same from inside a poller.

  /                  the live batch dashboard: batches in flight with progress and age against the completion
                     window, recently ended batches with rows loaded, tokens, cost and lineage, totals by status,
                     filters, and a detail view; pushed live (server-sent events) from the batchctl_batches and
                     batchctl_batch_progress NOTIFY channels, polling while the stream is down
  /riverui/          River UI: the job queue (polls, loads, resubmissions, retries and errors)
  /metrics           the Prometheus metrics of 'poll --metrics-addr'
  /webhooks/openai   OpenAI's signed batch webhooks (Standard Webhooks; --webhook-secret): a batch.* event queues
                     an immediate refresh of that batch, so its results load in seconds instead of at its next poll
                     (a poller works the job; webhooks of batches not tracked here are acknowledged and ignored)

Security: it listens on loopback by default, and refuses another address without --auth-token. The token protects
every route but the webhook, which carries its own signature; without a token, only localhost Host names are
answered. The surface is read-only unless --allow-actions, whose buttons carry a per-process CSRF token and are
refused from another origin. It holds no API key: cancels and resubmissions are River jobs the pollers work.`,
		Example: `  batchctl serve
  batchctl serve --addr 127.0.0.1:8080 --webhook-secret whsec_...
  BATCHCTL_HTTP_TOKEN=$(openssl rand -hex 16) batchctl serve --addr 0.0.0.0:8080 --allow-actions`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.addr, "addr", envOr(g.getenv, "BATCHCTL_HTTP_ADDR", "127.0.0.1:8080"),
		"address to serve on (env BATCHCTL_HTTP_ADDR); port 0 picks a free port")
	opts.http = addHTTPFlags(cmd, g, "")
	return cmd
}

func runServe(ctx context.Context, opts *serveOptions) error {
	s, err := opts.global.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.CheckMigrated(ctx); err != nil {
		return err
	}
	log := opts.global.Logger()
	reg, _ := newRegistry(s, log)
	stop, err := serveHTTP(ctx, opts.addr, opts.http, s, reg, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	return nil
}
