package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/emulator"
)

func init() { subcommands = append(subcommands, newEmulatorCmd) }

// Timeouts of the emulator's HTTP server.
const (
	emulatorShutdownTimeout   = 10 * time.Second
	emulatorReadHeaderTimeout = 10 * time.Second
)

type emulatorOptions struct {
	global  *globalOptions
	streams *IOStreams

	addr        string
	apiKey      string
	dataDir     string
	phaseDelay  time.Duration
	seed        int64
	maxRequests int
	maxFileMB   int64
	maxUploadMB int64
	maxCreates  int

	failRate     float64
	garbleRate   float64
	rate429      float64
	rate500      float64
	resetRate    float64
	truncateRate float64
	downloadBPS  int
	retryAfter   time.Duration
	expireRate   float64
	expireShare  float64
	tokenLimits  []string
	diskFailRate float64
	workers      int

	webhookURL    string
	webhookSecret string
}

func newEmulatorCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &emulatorOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "emulator",
		Short: "Serve a local OpenAI, Azure OpenAI and Anthropic batch API for tests and demos",
		Long: `Serve a stateful emulator of the OpenAI Files and Batches API until SIGINT or SIGTERM, with Azure OpenAI's
global batch (/openai/..., api-key, api-version) and Anthropic's Message Batches (/v1/messages/batches, x-api-key,
anthropic-version) on the same port, over their own paths.

Batches go through the real lifecycle (validating, in_progress, finalizing, completed; or failed, expired,
cancelled), one --phase-delay per phase, and every request line gets a deterministic fake answer. Input files are
validated like the real service does (JSON, unique custom_id, POST, the batch's url, one model, line and size
limits); output lines come back in an order that is not the input order.

Faults make clients prove they survive the real service: 429 and 500 answers, connections cut after the call took
effect, slow and truncated downloads, failed request lines, expired batches, enqueued-token limits.

When ready, one JSON line {"base_url": "...", "azure_endpoint": "...", "anthropic_base_url": "..."} is printed on
stdout; point OPENAI_BASE_URL, AZURE_OPENAI_ENDPOINT or ANTHROPIC_BASE_URL at it. Any non-empty API key is accepted
unless --api-key is set.`,
		Example: `  batchctl emulator
  batchctl emulator --addr 127.0.0.1:0 --phase-delay 100ms     # free port: read base_url from stdout
  OPENAI_BASE_URL=http://127.0.0.1:8089/v1 OPENAI_API_KEY=test batchctl submit --model gpt-4o-mini in.jsonl
  AZURE_OPENAI_ENDPOINT=http://127.0.0.1:8089 AZURE_OPENAI_API_KEY=test batchctl submit --provider azure --model my-deployment in.jsonl
  ANTHROPIC_BASE_URL=http://127.0.0.1:8089 ANTHROPIC_API_KEY=test batchctl submit --provider anthropic \
      --model claude-haiku-4-5 --max-output-tokens 256 in.jsonl
  batchctl emulator --rate-429 0.1 --rate-500 0.05 --reset-rate 0.02 --fail-rate 0.1 \
      --truncate-rate 0.2 --expire-rate 0.1 --token-limit gpt-4o-mini=2000000`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runEmulator(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.addr, "addr", "127.0.0.1:8089", "address to listen on (port 0 picks a free port)")
	f.StringVar(&opts.apiKey, "api-key", g.getenv("BATCHCTL_EMULATOR_API_KEY"), "the only API key accepted; empty accepts any non-empty key (env BATCHCTL_EMULATOR_API_KEY)")
	f.StringVar(&opts.dataDir, "data-dir", "", "directory for file bodies (default a temporary directory removed on exit)")
	f.DurationVar(&opts.phaseDelay, "phase-delay", emulator.DefaultPhaseDelay, "how long each batch phase lasts (validating, in_progress, finalizing, cancelling)")
	f.Int64Var(&opts.seed, "seed", 0, "seed of the fault choices and of the output order")
	f.IntVar(&opts.maxRequests, "max-requests", emulator.DefaultMaxRequestsPerFile, "request lines allowed per batch input file")
	f.Int64Var(&opts.maxFileMB, "max-file-mb", emulator.DefaultMaxFileBytes>>20, "size allowed per batch input file, in MB")
	f.Int64Var(&opts.maxUploadMB, "max-upload-mb", emulator.DefaultMaxUploadBytes>>20, "size allowed per uploaded file of any purpose, in MB")
	f.IntVar(&opts.maxCreates, "max-batch-creates-per-hour", emulator.DefaultMaxBatchCreatesPerHour, "batch creations allowed in any hour; more are answered 429 (negative: no cap)")

	f.Float64Var(&opts.failRate, "fail-rate", 0, "share of request lines answered with a failure (error file or non-200 status_code)")
	f.Float64Var(&opts.garbleRate, "garble-rate", 0, "share of structured answers (JSON-schema response formats, as submit --pack asks) broken: an item dropped or repeated, JSON cut short, or cut at the output limit")
	f.Float64Var(&opts.rate429, "rate-429", 0, "share of API calls answered 429 rate_limit_exceeded with Retry-After")
	f.Float64Var(&opts.rate500, "rate-500", 0, "share of API calls answered 500 server_error")
	f.Float64Var(&opts.resetRate, "reset-rate", 0, "share of API calls whose connection is cut mid-response (after the call took effect)")
	f.Float64Var(&opts.truncateRate, "truncate-rate", 0, "share of file downloads cut short (Content-Length still announces the full size)")
	f.IntVar(&opts.downloadBPS, "download-bps", 0, "throttle file downloads to this many bytes per second (0 = unlimited)")
	f.DurationVar(&opts.retryAfter, "retry-after", emulator.DefaultRetryAfter, "wait announced by injected 429 answers")
	f.Float64Var(&opts.expireRate, "expire-rate", 0, "share of batches that expire instead of completing")
	f.Float64Var(&opts.expireShare, "expire-completed-share", 0.5, "share of an expiring batch's requests answered before it expires")
	f.StringArrayVar(&opts.tokenLimits, "token-limit", nil, "MODEL=TOKENS: cap on enqueued prompt tokens for a model (repeatable)")
	f.Float64Var(&opts.diskFailRate, "disk-fail-rate", 0, "share of batches whose answering fails inside the emulator as on a full disk (they end failed with a server_error)")
	f.IntVar(&opts.workers, "workers", emulator.DefaultWorkers, "batch lifecycle steps worked at once, whatever the batches in flight (bounds goroutines and open files)")
	f.StringVar(&opts.webhookURL, "webhook-url", "", "send OpenAI's signed batch.completed/failed/expired/cancelled events here as batches end, e.g. http://127.0.0.1:8080/webhooks/openai")
	f.StringVar(&opts.webhookSecret, "webhook-secret", g.getenv("BATCHCTL_WEBHOOK_SECRET"), "whsec_... secret signing the events (env BATCHCTL_WEBHOOK_SECRET)")
	return cmd
}

func runEmulator(ctx context.Context, opts *emulatorOptions) error {
	log := opts.global.Logger()
	limits, err := parseTokenLimits(opts.tokenLimits)
	if err != nil {
		return usageError{err}
	}
	for name, rate := range map[string]float64{
		"--fail-rate": opts.failRate, "--garble-rate": opts.garbleRate, "--rate-429": opts.rate429, "--rate-500": opts.rate500, "--reset-rate": opts.resetRate,
		"--truncate-rate": opts.truncateRate, "--expire-rate": opts.expireRate, "--expire-completed-share": opts.expireShare,
		"--disk-fail-rate": opts.diskFailRate,
	} {
		if rate < 0 || rate > 1 {
			return usageError{fmt.Errorf("%s %v: want a share between 0 and 1", name, rate)}
		}
	}
	if opts.phaseDelay <= 0 {
		return usageError{fmt.Errorf("--phase-delay %v: want a positive duration", opts.phaseDelay)}
	}
	if opts.webhookURL != "" && opts.webhookSecret == "" {
		return usageError{fmt.Errorf("--webhook-url needs --webhook-secret (or BATCHCTL_WEBHOOK_SECRET) to sign the events")}
	}
	srv, err := emulator.New(emulator.Options{
		DataDir: opts.dataDir, APIKey: opts.apiKey, PhaseDelay: opts.phaseDelay, Seed: opts.seed, Logger: log,
		MaxRequestsPerFile: opts.maxRequests, MaxFileBytes: opts.maxFileMB << 20, MaxUploadBytes: opts.maxUploadMB << 20,
		MaxBatchCreatesPerHour: opts.maxCreates,
		RequestFailRate:        opts.failRate, HTTP429Rate: opts.rate429, HTTP500Rate: opts.rate500, ResetRate: opts.resetRate,
		TruncateDownloadRate: opts.truncateRate, DownloadBytesPerSec: opts.downloadBPS, RetryAfter: opts.retryAfter,
		ExpireRate: opts.expireRate, ExpireCompletedShare: opts.expireShare, TokenLimitPerModel: limits,
		GarbleRate: opts.garbleRate, DiskFailRate: opts.diskFailRate, Workers: opts.workers,
		WebhookURL: opts.webhookURL, WebhookSecret: opts.webhookSecret,
	})
	if err != nil {
		return fmt.Errorf("start emulator: %w", err)
	}
	defer func() {
		if err := srv.Close(); err != nil {
			log.Error("close emulator", "err", err)
		}
	}()

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", opts.addr)
	if err != nil {
		return fmt.Errorf("emulator listen on %s: %w", opts.addr, err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: emulatorReadHeaderTimeout}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	root := "http://" + ln.Addr().String()
	baseURL := root + "/v1"
	log.Info("emulator listening", "base_url", baseURL, "data_dir", srv.DataDir(), "phase_delay", opts.phaseDelay)
	// One port, three providers: OPENAI_BASE_URL, AZURE_OPENAI_ENDPOINT, ANTHROPIC_BASE_URL.
	ready, _ := json.Marshal(map[string]string{"base_url": baseURL, "azure_endpoint": root, "anthropic_base_url": root})
	if _, err := fmt.Fprintln(opts.streams.Out, string(ready)); err != nil {
		_ = hs.Close()
		return fmt.Errorf("write base_url: %w", err)
	}

	select {
	case err := <-served:
		return fmt.Errorf("emulator server: %w", err)
	case <-ctx.Done():
	}
	log.Info("emulator shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), emulatorShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		_ = hs.Close()
		return fmt.Errorf("emulator shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("emulator server: %w", err)
	}
	return nil
}

// parseTokenLimits reads repeated MODEL=TOKENS flags.
func parseTokenLimits(specs []string) (map[string]int64, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	limits := make(map[string]int64, len(specs))
	for _, spec := range specs {
		model, n, ok := strings.Cut(spec, "=")
		tokens, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
		if !ok || strings.TrimSpace(model) == "" || err != nil || tokens <= 0 {
			return nil, fmt.Errorf("--token-limit %q: want MODEL=TOKENS with a positive number of tokens", spec)
		}
		limits[strings.TrimSpace(model)] = tokens
	}
	return limits, nil
}
