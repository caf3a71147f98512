package files_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/files"
	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/poll"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
	"github.com/batchctl/batchctl/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is one test's world: an emulator over real HTTP, a migrated schema, and a store.
type env struct {
	emu   *emulator.Server
	api   openai.Client
	store *store.Store
}

func newEnv(t *testing.T, opts emulator.Options) *env {
	t.Helper()
	emu, baseURL := emulator.Start(t, opts)
	return &env{
		emu:   emu,
		api:   openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey("test-key"), option.WithMaxRetries(5)),
		store: pgtest.NewStore(t),
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() || os.Getenv("BATCHCTL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// upload stores n chat requests prefix-1..prefix-n as a batch input file and returns its ID.
func (e *env) upload(t *testing.T, prefix string, n int) string {
	t.Helper()
	var buf bytes.Buffer
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&buf, `{"custom_id":"%s-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"item %d"}]}}`+"\n", prefix, i, i)
	}
	f, err := e.api.Files.New(context.Background(), openai.FileNewParams{File: openai.File(&buf, "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	require.NoError(t, err)
	return f.ID
}

// submit uploads n requests, creates their batch and tracks it, as batchctl submit does with a database.
func (e *env) submit(t *testing.T, prefix string, n int) string {
	t.Helper()
	ctx := context.Background()
	fileID := e.upload(t, prefix, n)
	b, err := e.api.Batches.New(ctx, openai.BatchNewParams{InputFileID: fileID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	require.NoError(t, err)
	_, err = e.store.TrackBatch(ctx, store.Batch{BatchID: b.ID, Status: store.StatusValidating, Endpoint: "/v1/chat/completions",
		InputFileID: fileID, Source: "test"})
	require.NoError(t, err)
	return b.ID
}

// waitEnded waits until the emulator has ended batchID.
func (e *env) waitEnded(t *testing.T, batchID string) {
	t.Helper()
	require.Eventually(t, func() bool {
		rec, _ := e.emu.Batch(batchID)
		return rec.Status == emulator.StatusCompleted || rec.Status == emulator.StatusExpired
	}, 30*time.Second, 5*time.Millisecond)
}

// config is a poller configuration paced for tests.
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

// poll runs a poller until every tracked batch is loaded.
func (e *env) poll(t *testing.T, cfg poll.Config) {
	t.Helper()
	d, err := poll.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, d.Run(ctx))
	require.NoError(t, ctx.Err(), "the poller did not finish")
}

// resubmit resubmits batchID's retryable requests as a child batch, as batchctl resubmit does, and returns the child.
func (e *env) resubmit(t *testing.T, batchID string) string {
	t.Helper()
	r := &poll.Resubmitter{Store: e.store, Providers: oaiprov.Set(&batchapi.Client{API: &e.api}), Dir: t.TempDir()}
	res, err := r.Resubmit(context.Background(), batchID)
	require.NoError(t, err)
	require.NotEmpty(t, res.Child, "skipped: %s", res.Skipped)
	return res.Child
}

func (e *env) pruner(t *testing.T) *files.Pruner {
	return &files.Pruner{Store: e.store, API: files.OpenAI{Client: &e.api}, Logger: testLogger(t), By: "test"}
}

// batch reads a batch row.
func (e *env) batch(t *testing.T, batchID string) store.Batch {
	t.Helper()
	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	return b
}

// live reports whether the emulator still holds the file.
func (e *env) live(t *testing.T, fileID string) bool {
	t.Helper()
	f, ok := e.emu.File(fileID)
	require.True(t, ok, "the emulator never had %s", fileID)
	return !f.Deleted
}

// recorded returns the files in deleted_files, by file ID, with whether the API had them gone already.
func (e *env) recorded(t *testing.T) map[string]bool {
	t.Helper()
	rows, err := e.store.Pool().Query(context.Background(), `select file_id, gone from `+e.store.Schema()+`.deleted_files`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		var gone bool
		require.NoError(t, rows.Scan(&id, &gone))
		out[id] = gone
	}
	require.NoError(t, rows.Err())
	return out
}
