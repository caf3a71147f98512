// Command quotabench measures quota admission for make bench: batches whose prompt tokens pass the model's
// enqueued-token limit several times over go through `batchctl submit` and `batchctl poll` against an emulator (in
// this process) that enforces the limit. It runs two modes on the same records:
//
//   - quota: the limit is set with `batchctl quota set`, so batches are admitted as capacity frees;
//   - retry: no quota, `poll --resubmit`: what batchctl did before admission — batches over the limit fail with
//     token_limit_exceeded and are sent again after --token-limit-backoff.
//
// For each it prints one line of key=value figures on stdout (and a sentence on stderr): token_limit_exceeded failures, the makespan (submit start to the poller's
// exit with every result loaded), the ideal makespan (batches packed in order by the emulator's own token counts,
// with no overhead at all), and the largest total of tokens the emulator held at once against the limit.
//
//	go run ./internal/tools/quotabench -batchctl bin/batchctl
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/tools/benchkit"
)

const model = "gpt-4o-mini"

type config struct {
	batchctl     string
	batches, per int
	over         float64
	phase        time.Duration
	textBytes    int
	retryBackoff time.Duration
	modes        string
	databaseURL  string
	work         string
}

func main() {
	var c config
	flag.StringVar(&c.batchctl, "batchctl", "bin/batchctl", "the batchctl binary")
	flag.IntVar(&c.batches, "batches", 20, "batches of the run")
	flag.IntVar(&c.per, "per", 100, "requests per batch")
	flag.Float64Var(&c.over, "over", 4, "the batches' prompt tokens over the limit")
	flag.DurationVar(&c.phase, "phase", 2*time.Second, "how long each batch phase lasts in the emulator")
	flag.IntVar(&c.textBytes, "text-bytes", 400, "bytes of each record's text")
	flag.DurationVar(&c.retryBackoff, "retry-backoff", 10*time.Second, "--token-limit-backoff of the retry mode")
	flag.StringVar(&c.modes, "modes", "quota,retry", "modes to run")
	flag.Parse()
	c.databaseURL = os.Getenv("DATABASE_URL")
	if c.databaseURL == "" {
		fmt.Fprintln(os.Stderr, "quotabench: DATABASE_URL is not set")
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "quotabench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	work, err := os.MkdirTemp("", "batchctl-quotabench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	c.work = work
	records, tokens, err := writeRecords(c)
	if err != nil {
		return err
	}
	var total, largest int64
	for _, t := range tokens {
		total += t
		largest = max(largest, t)
	}
	limit := max(int64(float64(total)/c.over+0.5), largest)
	for _, mode := range strings.Split(c.modes, ",") {
		if err := runMode(c, mode, records, tokens, limit); err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
	}
	return nil
}

// writeRecords writes the records and returns, per batch of c.per, the prompt tokens the emulator counts: a chat
// request's are EstimateTokens of its message text.
func writeRecords(c config) (string, []int64, error) {
	path := filepath.Join(c.work, "records.jsonl")
	var b strings.Builder
	tokens := make([]int64, c.batches)
	filler := strings.Repeat("the quick brown fox jumps over the lazy dog ", c.textBytes/44+1)
	for i := range c.batches * c.per {
		text := fmt.Sprintf("record %d: %s", i+1, filler)[:c.textBytes]
		fmt.Fprintf(&b, `{"id":"q-%05d","text":%q}`+"\n", i+1, text)
		tokens[i/c.per] += max(emulator.EstimateTokens(text), 1)
	}
	return path, tokens, os.WriteFile(path, []byte(b.String()), 0o600)
}

func runMode(c config, mode, records string, tokens []int64, limit int64) error {
	ctx := context.Background()
	emu, baseURL, stopEmulator, err := benchkit.Emulator(emulator.Options{PhaseDelay: c.phase, MaxBatchCreatesPerHour: -1,
		TokenLimitPerModel: map[string]int64{model: limit}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer stopEmulator()

	schema := fmt.Sprintf("bench_quota_%d_%s", os.Getpid(), mode)
	env := append(os.Environ(), "OPENAI_API_KEY=bench-key", "OPENAI_BASE_URL="+baseURL,
		"BATCHCTL_SCHEMA="+schema, "BATCHCTL_SPOOL_DIR="+filepath.Join(c.work, "spool-"+mode), "BATCHCTL_LOG_LEVEL=warn")
	defer benchkit.DropSchema(c.databaseURL, schema)
	batchctl := func(args ...string) error {
		cmd := exec.Command(c.batchctl, args...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, nil, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("batchctl %s: %w", strings.Join(args, " "), err)
		}
		return nil
	}
	if err := batchctl("migrate"); err != nil {
		return err
	}
	pollArgs := []string{"poll", "--exit-when-done", "--poll-interval", "200ms,1s", "--sweep-interval", "1s"}
	switch mode {
	case "quota":
		if err := batchctl("quota", "set", model, fmt.Sprint(limit)); err != nil {
			return err
		}
	case "retry":
		pollArgs = append(pollArgs, "--resubmit", "--max-attempts", "50", "--token-limit-backoff", c.retryBackoff.String())
	default:
		return fmt.Errorf("unknown mode (want quota or retry)")
	}

	start := time.Now()
	if err := batchctl("submit", "--progress", "never", "--model", model, "--id-field", "id",
		"--max-requests", fmt.Sprint(c.per), records); err != nil {
		return err
	}
	if err := batchctl(pollArgs...); err != nil {
		return err
	}
	makespan := time.Since(start)

	n := c.batches * c.per
	final, distinct, err := finalRows(ctx, c.databaseURL, schema)
	if err != nil {
		return err
	}
	if final != n || distinct != n {
		return fmt.Errorf("%d final ok rows for %d distinct custom_ids, want %d of each", final, distinct, n)
	}
	st := emu.Stats()
	ideal := idealMakespan(tokens, limit, c.phase)
	peak := st.PeakEnqueuedTokens[model]
	fmt.Fprintf(os.Stderr, "quotabench %s: %d batches of %d requests, %d tokens = %.1fx the limit of %d; %d token_limit_exceeded; makespan %.1f s, ideal %.1f s (%.2fx); peak in flight %d (%.2f of the limit)\n",
		mode, c.batches, c.per, sum(tokens), float64(sum(tokens))/float64(limit), limit, st.TokenLimitFailures,
		makespan.Seconds(), ideal.Seconds(), makespan.Seconds()/ideal.Seconds(), peak, float64(peak)/float64(limit))
	fmt.Printf("mode=%s batches=%d requests=%d tokens=%d limit=%d failures=%d makespan=%.1f ideal=%.1f ratio=%.2f peak=%d peak_ratio=%.2f\n",
		mode, c.batches, c.per, sum(tokens), limit, st.TokenLimitFailures, makespan.Seconds(), ideal.Seconds(),
		makespan.Seconds()/ideal.Seconds(), peak, float64(peak)/float64(limit))
	return nil
}

// idealMakespan packs the batches in order, each created at the first moment its tokens fit beside those of the
// batches in flight (created and not completed: validating, in progress, finalizing, one phase each — what
// admission counts, since a batch still validating will hold its tokens a moment later), knowing every batch's exact
// token count as the emulator counts it, and paying no overhead at all: no polling delay, no load, no upload.
func idealMakespan(tokens []int64, limit int64, phase time.Duration) time.Duration {
	type hold struct {
		from, to time.Duration
		tokens   int64
	}
	var holds []hold
	held := func(at time.Duration) (n int64) {
		for _, h := range holds {
			if h.from <= at && at < h.to {
				n += h.tokens
			}
		}
		return n
	}
	var at, end time.Duration
	for _, t := range tokens {
		for held(at)+t > limit {
			next := time.Duration(-1)
			for _, h := range holds {
				if h.to > at && (next < 0 || h.to < next) {
					next = h.to
				}
			}
			at = next
		}
		holds = append(holds, hold{from: at, to: at + 3*phase, tokens: t})
		end = max(end, at+3*phase)
	}
	return end
}

func sum(ts []int64) (n int64) {
	for _, t := range ts {
		n += t
	}
	return n
}

func finalRows(ctx context.Context, url, schema string) (ok, distinct int, err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `select count(*) filter (where status_code = 200), count(distinct custom_id) from `+
		pgx.Identifier{schema, "final_results"}.Sanitize()).Scan(&ok, &distinct)
	return ok, distinct, err
}
