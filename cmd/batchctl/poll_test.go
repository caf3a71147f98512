package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/store"
)

// apiEnv is an emulator over real HTTP and a migrated schema, with the environment a batchctl process needs.
type apiEnv struct {
	emu    *emulator.Server
	api    openai.Client
	env    map[string]string
	schema string
	store  *store.Store
}

func newAPIEnv(t *testing.T, opts emulator.Options) *apiEnv {
	t.Helper()
	emu, baseURL := emulator.Start(t, opts)
	s := pgtest.NewStore(t)
	return &apiEnv{
		emu: emu,
		api: openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey("sk-test-secret")),
		env: map[string]string{"DATABASE_URL": pgtest.URL(t), "BATCHCTL_SCHEMA": s.Schema(), "OPENAI_API_KEY": "sk-test-secret",
			"OPENAI_BASE_URL": baseURL},
		schema: s.Schema(),
		store:  s,
	}
}

// createBatch uploads n chat requests and creates their batch (untracked).
func (e *apiEnv) createBatch(t *testing.T, prefix string, n int, bodyPad int) (fileID, batchID string) {
	t.Helper()
	var buf bytes.Buffer
	pad := strings.Repeat("x", bodyPad)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&buf, `{"custom_id":"%s-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"item %d %s"}]}}`+"\n", prefix, i, i, pad)
	}
	ctx := context.Background()
	f, err := e.api.Files.New(ctx, openai.FileNewParams{File: openai.File(&buf, "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	require.NoError(t, err)
	b, err := e.api.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	require.NoError(t, err)
	return f.ID, b.ID
}

func (e *apiEnv) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, e.store.Pool().QueryRow(context.Background(), strings.ReplaceAll(query, "$schema", e.schema), args...).Scan(&n))
	return n
}

var fastPoll = []string{"poll", "--exit-when-done", "--poll-interval", "50ms,500ms", "--fetch-interval", "50ms", "--sweep-interval", "200ms"}

func TestTrackThenPollUntilDone(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t, emulator.Options{})
	f1, b1 := e.createBatch(t, "a", 12, 0)
	_, b2 := e.createBatch(t, "b", 7, 0)

	stdin := fmt.Sprintf(`{"batch_id":%q,"input_file_id":%q,"requests":12,"bytes":100,"spool_sha256":"abc","source":"reviews.jsonl","endpoint":"/v1/chat/completions","model":"gpt-4o-mini","part":1}`+"\n\n%s\n", b1, f1, b2)
	r := runCLI(t, stdin, e.env, "track")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, fmt.Sprintf(`{"batch_id":%q,"tracked":true}`+"\n"+`{"batch_id":%q,"tracked":true}`+"\n", b1, b2), r.stdout)

	r = runCLI(t, "", e.env, "track", b2)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, fmt.Sprintf(`{"batch_id":%q,"tracked":false}`+"\n", b2), r.stdout, "tracking twice is harmless")

	r = runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.NotContains(t, r.stderr, "sk-test-secret", "the API key is never logged")

	require.Equal(t, 12, e.count(t, `select count(*) from $schema.results where batch_id = $1`, b1))
	require.Equal(t, 7, e.count(t, `select count(*) from $schema.results where batch_id = $1`, b2))
	require.Equal(t, 1, e.count(t, `select count(*) from $schema.batches where batch_id = $1 and source = 'reviews.jsonl' and spool_sha256 = 'abc' and status = 'completed'`, b1))
	require.Zero(t, e.count(t, `select count(*) from $schema.batches where metadata::text like '%sk-test%' or errors::text like '%sk-test%'`))
}

func TestTrackRejectsBadLines(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t, emulator.Options{})
	for _, tt := range []struct{ stdin, want string }{
		{"batch_ok1\nnot-a-batch\n", "stdin:2"},
		{"{\"batch_id\": 7}\n", "stdin:1: not a batchctl submit line"},
	} {
		r := runCLI(t, tt.stdin, e.env, "track")
		require.Equal(t, exitInput, r.code, r.stderr)
		require.Contains(t, r.stderr, tt.want)
	}
}

func TestPollNeedsAnAPIKeyAndADatabase(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "", map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1:1/x"}, "poll")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "OPENAI_API_KEY")
	r = runCLI(t, "", map[string]string{"OPENAI_API_KEY": "k"}, "poll")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "DATABASE_URL")
	r = runCLI(t, "", map[string]string{"OPENAI_API_KEY": "k"}, "poll", "--poll-interval", "fast")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "invalid poll interval")
}

// TestPollRejectsNegativeDurations: a negative timeout or interval is a usage error, not a silent default (a negative
// --load-timeout once meant loads that could never finish).
func TestPollRejectsNegativeDurations(t *testing.T) {
	t.Parallel()
	env := map[string]string{"OPENAI_API_KEY": "k", "DATABASE_URL": "postgres://x@127.0.0.1:1/x"}
	for _, flag := range []string{"--load-timeout", "--rescue-after", "--lifeline-interval", "--sweep-interval", "--token-limit-backoff", "--output-grace"} {
		r := runCLI(t, "", env, "poll", flag, "-1s")
		require.Equal(t, exitUsage, r.code, "%s -1s: %s", flag, r.stderr)
		require.Contains(t, r.stderr, flag+" -1s: want a positive duration")
	}
}

// buildBinary compiles batchctl once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "batchctl")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

func environ(env map[string]string) []string {
	out := os.Environ()
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// TestPollKilledMidLoadRestarts kills a poller with SIGKILL while it streams a batch's output into Postgres, then
// starts another: the results hold every request exactly once.
func TestPollKilledMidLoadRestarts(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	e := newAPIEnv(t, emulator.Options{})
	_, batchID := e.createBatch(t, "k", 300, 200)
	r := runCLI(t, "", e.env, "track", batchID)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Eventually(t, func() bool {
		rec, _ := e.emu.Batch(batchID)
		return rec.Status == emulator.StatusCompleted
	}, 30*time.Second, 10*time.Millisecond)

	// Slow downloads: the load is still streaming when the poller dies.
	e.emu.SetFaults(emulator.Faults{DownloadBytesPerSec: 40_000})
	var logs bytes.Buffer
	first := exec.Command(bin, append(fastPoll[:1:1], "--poll-interval", "50ms,500ms", "--fetch-interval", "50ms")...)
	first.Env = environ(e.env)
	first.Stderr = &logs
	require.NoError(t, first.Start())
	require.Eventually(t, func() bool { return e.emu.Stats().ContentDownloads >= 2 }, 30*time.Second, 5*time.Millisecond,
		"the poller started downloading the output file; its log:\n%s", &logs)
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, first.Process.Signal(syscall.SIGKILL))
	_ = first.Wait()
	require.Zero(t, e.count(t, `select count(*) from $schema.results where batch_id = $1`, batchID), "a killed load leaves no rows")
	require.Zero(t, e.count(t, `select count(*) from $schema.batches where results_loaded_at is not null`))

	e.emu.SetFaults(emulator.Faults{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	// Default rescue settings: the second poller's lifeline finds the first one dead as it starts.
	second := exec.CommandContext(ctx, bin, fastPoll...)
	second.Env = environ(e.env)
	out, err := second.CombinedOutput()
	require.NoError(t, err, "first poller:\n%s\nsecond poller:\n%s", logs.String(), out)
	t.Logf("the restarted poller finished the load in %s", time.Since(start).Round(time.Millisecond))

	require.Equal(t, 300, e.count(t, `select count(*) from $schema.results where batch_id = $1`, batchID))
	require.Equal(t, 300, e.count(t, `select count(distinct custom_id) from $schema.results where batch_id = $1 and input_line is not null`, batchID))
}

// TestSubmitThenPollEndToEnd runs the pipeline a user runs: submit with a database configured (rows and poll jobs
// written as batches are created), then the poller until everything is loaded.
func TestSubmitThenPollEndToEnd(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t, emulator.Options{})
	e.env["BATCHCTL_SPOOL_DIR"] = t.TempDir()
	var in strings.Builder
	for i := 1; i <= 25; i++ {
		fmt.Fprintf(&in, `{"id":"rev-%02d","text":"review %d"}`+"\n", i, i)
	}
	file := filepath.Join(t.TempDir(), "reviews.jsonl")
	require.NoError(t, os.WriteFile(file, []byte(in.String()), 0o600))

	r := runCLI(t, "", e.env, "submit", "--model", "gpt-4o-mini", "--id-field", "id", "--max-requests", "10", file)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 3, strings.Count(r.stdout, "\n"), "25 records in batches of 10")
	require.Equal(t, 3, e.count(t, `select count(*) from $schema.batches where source = $1 and spool_sha256 is not null`, file))
	require.Equal(t, 3, e.count(t, `select count(*) from $schema.river_job where kind = 'batchctl_poll_batch'`))

	// Submitting again tracks nothing new.
	r = runCLI(t, "", e.env, "submit", "--model", "gpt-4o-mini", "--id-field", "id", "--max-requests", "10", file)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 3, e.count(t, `select count(*) from $schema.batches`))

	r = runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 25, e.count(t, `select count(*) from $schema.results where status_code = 200`))
	// Input order across the whole submission: batch parts in order, then input_line.
	rows, err := e.store.Pool().Query(context.Background(), `select r.custom_id from `+e.schema+`.results r
		join `+e.schema+`.batches b using (batch_id) order by (b.metadata->>'batchctl_part')::int, r.input_line`)
	require.NoError(t, err)
	var ids []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	require.Len(t, ids, 25)
	for i, id := range ids {
		require.Equal(t, fmt.Sprintf("rev-%02d", i+1), id)
	}
}

func TestPollServesMetrics(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t, emulator.Options{})
	_, batchID := e.createBatch(t, "m", 5, 0)
	require.Equal(t, exitOK, runCLI(t, "", e.env, "track", batchID).code)
	addr := freeAddr(t)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		var out, errOut bytes.Buffer
		done <- run(ctx, []string{"poll", "--poll-interval", "50ms,500ms", "--fetch-interval", "50ms", "--metrics-addr", addr},
			&IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, func(k string) string { return e.env[k] })
	}()
	body := scrapeUntil(t, addr, "batchctl_result_rows_loaded_total 5", 30*time.Second)
	for _, want := range []string{`batchctl_batches{status="completed"} 1`, `batchctl_requests_total{outcome="ok"} 5`,
		"batchctl_oldest_in_flight_seconds 0", `batchctl_api_calls_total{kind="download"} 2`, "batchctl_load_duration_seconds_count 1",
		`batchctl_batch_requests{status="completed"} 5`, `batchctl_batch_requests{status="in_progress"} 0`,
		`batchctl_batch_duration_seconds_count{status="completed"} 1`, "go_goroutines"} {
		require.Contains(t, body, want)
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	cancel()
	require.Equal(t, exitOK, <-done, "SIGINT/SIGTERM (a cancelled context) stops the poller cleanly")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// scrapeUntil reads http://addr/metrics until it holds want, failing the test after timeout (msgAndArgs say more
// then), and returns the last page read.
func scrapeUntil(t *testing.T, addr, want string, timeout time.Duration, msgAndArgs ...any) string {
	t.Helper()
	var body string
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, want)
	}, timeout, 50*time.Millisecond, msgAndArgs...)
	return body
}
