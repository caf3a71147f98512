package poll_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/poll"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
	"github.com/batchctl/batchctl/store"
)

// env is one test's world: an emulator over real HTTP, a migrated schema, and a store.
type env struct {
	emu   *emulator.Server
	api   openai.Client
	store *store.Store
}

func newEnv(t *testing.T, opts emulator.Options) *env {
	t.Helper()
	emu, baseURL := emulator.Start(t, opts)
	return newEnvAt(t, emu, baseURL)
}

// newEnvWrapped is newEnv with the emulator served through wrap: a test's own fault in front of the real handler.
func newEnvWrapped(t *testing.T, opts emulator.Options, wrap func(http.Handler) http.Handler) *env {
	t.Helper()
	if opts.PhaseDelay == 0 {
		opts.PhaseDelay = emulator.TestPhaseDelay
	}
	emu, err := emulator.New(opts)
	require.NoError(t, err)
	ts := httptest.NewServer(wrap(emu))
	t.Cleanup(func() {
		ts.Close()
		_ = emu.Close()
	})
	return newEnvAt(t, emu, ts.URL+"/v1")
}

func newEnvAt(t *testing.T, emu *emulator.Server, baseURL string) *env {
	t.Helper()
	s := pgtest.NewStore(t)
	return &env{
		emu:   emu,
		api:   openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey("test-key"), option.WithMaxRetries(5)),
		store: s,
	}
}

// requestFile renders n chat requests with custom_ids prefix-1..prefix-n.
func requestFile(prefix, model string, n int) ([]byte, []string) {
	var buf bytes.Buffer
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i+1)
		fmt.Fprintf(&buf, `{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"review number %d"}]}}`+"\n",
			ids[i], model, i+1)
	}
	return buf.Bytes(), ids
}

// submit uploads body, creates a batch and tracks it, as batchctl submit does with a database configured.
func (e *env) submit(t *testing.T, body []byte) string {
	t.Helper()
	fileID, batchID := e.createUntracked(t, body)
	_, err := e.store.TrackBatch(context.Background(), store.Batch{BatchID: batchID, Status: store.StatusValidating,
		Endpoint: "/v1/chat/completions", InputFileID: fileID, Source: "test"})
	require.NoError(t, err)
	return batchID
}

// config is a daemon configuration paced for tests.
func (e *env) config(t *testing.T) poll.Config {
	return poll.Config{
		Store: e.store, Providers: oaiprov.Set(&batchapi.Client{API: &e.api}), Logger: testLogger(t),
		Interval:          poll.Interval{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		SweepInterval:     200 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
		LoadTimeout:       time.Minute,
		ExitWhenDone:      true,
	}
}

// runUntilDone runs a daemon with cfg until it exits by itself, failing the test after timeout.
func runUntilDone(t *testing.T, cfg poll.Config, timeout time.Duration) {
	t.Helper()
	d, err := poll.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	require.NoError(t, d.Run(ctx))
	require.NoError(t, ctx.Err(), "the daemon did not finish within %s", timeout)
}

// startDaemon runs a daemon with cfg on its own goroutine for at most timeout: Run's error arrives on done, and
// runCtx ends when the time is up.
func startDaemon(t *testing.T, cfg poll.Config, timeout time.Duration) (done <-chan error, runCtx context.Context) {
	t.Helper()
	d, err := poll.New(cfg)
	require.NoError(t, err)
	runCtx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	ch := make(chan error, 1)
	go func() { ch <- d.Run(runCtx) }()
	return ch, runCtx
}

// runDaemon runs a daemon with cfg on its own goroutine until the returned stop is called, which waits for it and
// returns Run's error.
func runDaemon(t *testing.T, cfg poll.Config) (stop func() error) {
	t.Helper()
	d, err := poll.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	return func() error { cancel(); return <-done }
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() || os.Getenv("BATCHCTL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// resultRow is a results row as a consumer reads it.
type resultRow struct {
	CustomID   string
	InputLine  *int
	StatusCode *int
	Response   []byte
	Error      []byte
}

func (e *env) results(t *testing.T, batchID string) []resultRow {
	t.Helper()
	rows, err := e.store.Pool().Query(context.Background(), `select custom_id, input_line, status_code, response, error
		from `+e.store.Schema()+`.results where batch_id = $1 order by input_line nulls last, custom_id`, batchID)
	require.NoError(t, err)
	defer rows.Close()
	var out []resultRow
	for rows.Next() {
		var r resultRow
		require.NoError(t, rows.Scan(&r.CustomID, &r.InputLine, &r.StatusCode, &r.Response, &r.Error))
		out = append(out, r)
	}
	require.NoError(t, rows.Err())
	return out
}

// createUntracked uploads body and creates a batch without tracking it.
func (e *env) createUntracked(t *testing.T, body []byte) (fileID, batchID string) {
	t.Helper()
	ctx := context.Background()
	f, err := e.api.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(body), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	require.NoError(t, err)
	b, err := e.api.Batches.New(ctx, openai.BatchNewParams{
		InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
	})
	require.NoError(t, err)
	return f.ID, b.ID
}

// endedBatch creates a batch, waits for the emulator to complete it and records its end, which queues its load job;
// it returns the batch ID and the load job's ID.
func (e *env) endedBatch(t *testing.T, prefix string, n int) (string, []string, int64) {
	t.Helper()
	ctx := context.Background()
	body, ids := requestFile(prefix, "gpt-4o-mini", n)
	batchID := e.submit(t, body)
	require.Eventually(t, func() bool {
		rec, _ := e.emu.Batch(batchID)
		return rec.Status == emulator.StatusCompleted
	}, 30*time.Second, 5*time.Millisecond)
	b, err := e.api.Batches.Get(ctx, batchID)
	require.NoError(t, err)
	_, err = e.store.UpsertBatch(ctx, batchapi.Row(b))
	require.NoError(t, err)
	var jobID int64
	require.NoError(t, e.store.Pool().QueryRow(ctx, `select id from `+e.store.Schema()+`.river_job where kind = $1 and args->>'batch_id' = $2`,
		store.LoadResultsArgs{}.Kind(), batchID).Scan(&jobID))
	return batchID, ids, jobID
}

// markRunning makes a job look as if client is working it.
func (e *env) markRunning(t *testing.T, jobID int64, client string) {
	t.Helper()
	_, err := e.store.Pool().Exec(context.Background(), `update `+e.store.Schema()+`.river_job set state = 'running',
		attempt = attempt + 1, attempted_at = now(), attempted_by = array_append(attempted_by, $2) where id = $1`, jobID, client)
	require.NoError(t, err)
}
