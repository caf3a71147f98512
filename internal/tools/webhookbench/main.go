// Command webhookbench measures, for make bench, how long after a batch ends its result rows are loaded: with
// OpenAI's webhooks (the emulator sends batch.completed to `batchctl serve`, which queues an immediate refresh) and
// with polling alone, at the poller's default interval. Both modes run `batchctl poll` with its defaults against
// an emulator in this process, on batches created a few seconds apart so that their ends fall anywhere in the
// poll cycle.
//
// A batch's end is when the emulator first reports it ended (read every 10 ms in this process); its load is
// results_loaded_at in Postgres, on the same machine's clock. For each mode it prints one line of key=value figures on
// stdout (seconds) and a sentence on stderr.
//
//	go run ./internal/tools/webhookbench -batchctl bin/batchctl
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/tools/benchkit"
)

// secret signs the emulator's webhooks and verifies them in serve.
const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

type config struct {
	batchctl    string
	batches     int
	stagger     time.Duration
	phase       time.Duration
	modes       string
	timeout     time.Duration
	databaseURL string
}

func main() {
	var c config
	flag.StringVar(&c.batchctl, "batchctl", "bin/batchctl", "the batchctl binary")
	flag.IntVar(&c.batches, "batches", 6, "batches per mode")
	flag.DurationVar(&c.stagger, "stagger", 2500*time.Millisecond, "time between two batch creations")
	flag.DurationVar(&c.phase, "phase", 2*time.Second, "how long each batch phase lasts in the emulator")
	flag.StringVar(&c.modes, "modes", "webhook,poll", "modes to run")
	flag.DurationVar(&c.timeout, "timeout", 3*time.Minute, "longest a mode may take")
	flag.Parse()
	c.databaseURL = os.Getenv("DATABASE_URL")
	if c.databaseURL == "" {
		fmt.Fprintln(os.Stderr, "webhookbench: DATABASE_URL is not set")
		os.Exit(2)
	}
	for _, mode := range strings.Split(c.modes, ",") {
		if err := runMode(c, mode); err != nil {
			fmt.Fprintf(os.Stderr, "webhookbench: %s: %v\n", mode, err)
			os.Exit(1)
		}
	}
}

// process is a batchctl command running in the background.
type process struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func start(c config, env []string, args ...string) (*process, error) {
	p := &process{cmd: exec.Command(c.batchctl, args...), stderr: &bytes.Buffer{}}
	p.cmd.Env, p.cmd.Stderr = env, p.stderr
	return p, p.cmd.Start()
}

// stop sends SIGINT (a graceful stop) and waits.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

func runMode(c config, mode string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if mode != "webhook" && mode != "poll" {
		return fmt.Errorf("unknown mode (want webhook or poll)")
	}
	serveAddr, err := freeAddr()
	if err != nil {
		return err
	}
	opts := emulator.Options{PhaseDelay: c.phase, MaxBatchCreatesPerHour: -1, Logger: slog.New(slog.DiscardHandler)}
	if mode == "webhook" {
		opts.WebhookURL, opts.WebhookSecret = "http://"+serveAddr+"/webhooks/openai", secret
	}
	emu, baseURL, stopEmulator, err := benchkit.Emulator(opts)
	if err != nil {
		return err
	}
	defer stopEmulator()

	schema := fmt.Sprintf("bench_webhook_%d_%s", os.Getpid(), mode)
	env := append(os.Environ(), "OPENAI_API_KEY=bench-key", "OPENAI_BASE_URL="+baseURL, "BATCHCTL_SCHEMA="+schema,
		"BATCHCTL_LOG_LEVEL=info", "BATCHCTL_WEBHOOK_SECRET="+secret)
	defer benchkit.DropSchema(c.databaseURL, schema)
	if out, err := exec.Command(c.batchctl, "--schema", schema, "migrate").CombinedOutput(); err != nil {
		return fmt.Errorf("migrate: %v: %s", err, out)
	}
	conn, err := pgx.Connect(ctx, c.databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	if mode == "webhook" {
		serve, err := start(c, env, "serve", "--addr", serveAddr, "--no-riverui")
		if err != nil {
			return err
		}
		defer serve.stop()
		if err := waitHTTP(ctx, "http://"+serveAddr+"/api/dashboard"); err != nil {
			return fmt.Errorf("serve did not come up: %w: %s", err, serve.stderr)
		}
	}
	poller, err := start(c, env, "poll") // the default interval
	if err != nil {
		return err
	}
	defer poller.stop()

	// The emulator's view of each batch's end, read every 10 ms.
	var mu sync.Mutex
	ended := map[string]time.Time{}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-watchCtx.Done():
				return
			case now := <-tick.C:
				for _, b := range emu.Batches() {
					switch b.Status {
					case "completed", "failed", "expired", "cancelled":
						mu.Lock()
						if _, seen := ended[b.ID]; !seen {
							ended[b.ID] = now
						}
						mu.Unlock()
					}
				}
			}
		}
	}()

	client := openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey("bench-key"))
	var ids []string
	for i := range c.batches {
		if i > 0 {
			time.Sleep(c.stagger)
		}
		id, err := createBatch(ctx, client, i)
		if err != nil {
			return err
		}
		if out, err := exec.Command(c.batchctl, "--schema", schema, "track", id).CombinedOutput(); err != nil {
			return fmt.Errorf("track: %v: %s", err, out)
		}
		ids = append(ids, id)
	}

	loaded := map[string]time.Time{}
	for len(loaded) < len(ids) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d batches loaded in %v; poller: %s", len(loaded), len(ids), c.timeout, poller.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		rows, err := conn.Query(ctx, `select batch_id, results_loaded_at from `+pgx.Identifier{schema, "batches"}.Sanitize()+
			` where results_loaded_at is not null`)
		if err != nil {
			return err
		}
		var id string
		var at time.Time
		if _, err := pgx.ForEachRow(rows, []any{&id, &at}, func() error { loaded[id] = at; return nil }); err != nil {
			return err
		}
	}
	var delays []float64
	mu.Lock()
	for _, id := range ids {
		end, ok := ended[id]
		if !ok {
			mu.Unlock()
			return fmt.Errorf("batch %s loaded but never seen ended", id)
		}
		delays = append(delays, loaded[id].Sub(end).Seconds())
	}
	mu.Unlock()
	slices.Sort(delays)
	var sum float64
	for _, d := range delays {
		sum += d
	}
	median := delays[len(delays)/2]
	if len(delays)%2 == 0 {
		median = (delays[len(delays)/2-1] + delays[len(delays)/2]) / 2
	}
	st := emu.Stats()
	fmt.Fprintf(os.Stderr, "webhookbench %s: %d batches, end to rows loaded: median %.2f s, mean %.2f s, min %.2f s, max %.2f s; %d webhooks delivered\n",
		mode, len(delays), median, sum/float64(len(delays)), delays[0], delays[len(delays)-1], st.WebhooksDelivered)
	fmt.Printf("mode=%s batches=%d median=%.2f mean=%.2f min=%.2f max=%.2f webhooks=%d\n",
		mode, len(delays), median, sum/float64(len(delays)), delays[0], delays[len(delays)-1], st.WebhooksDelivered)
	return nil
}

// createBatch uploads 20 chat requests and creates their batch.
func createBatch(ctx context.Context, client openai.Client, n int) (string, error) {
	var buf bytes.Buffer
	for i := range 20 {
		fmt.Fprintf(&buf, `{"custom_id":"b%d-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"item %d"}]}}`+"\n", n, i, i)
	}
	f, err := client.Files.New(ctx, openai.FileNewParams{File: openai.File(&buf, "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		return "", err
	}
	b, err := client.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		return "", err
	}
	return b.ID, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitHTTP(ctx context.Context, url string) error {
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
