package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/pgtest"
)

// anthropicEnv is an apiEnv whose batchctl processes have Anthropic's credentials only, the emulator behind next
// (the emulator itself, or a handler that cuts answers).
func anthropicEnv(t *testing.T, opts emulator.Options, wrap func(http.Handler) http.Handler) *apiEnv {
	t.Helper()
	if opts.PhaseDelay == 0 {
		opts.PhaseDelay = emulator.TestPhaseDelay
	}
	emu, err := emulator.New(opts)
	require.NoError(t, err)
	var h http.Handler = emu
	if wrap != nil {
		h = wrap(emu)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		ts.Close()
		_ = emu.Close()
	})
	s := pgtest.NewStore(t)
	return &apiEnv{emu: emu, schema: s.Schema(), store: s, env: map[string]string{
		"DATABASE_URL": pgtest.URL(t), "BATCHCTL_SCHEMA": s.Schema(), "BATCHCTL_SPOOL_DIR": t.TempDir(),
		"ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": ts.URL, "BATCHCTL_PROVIDER": "anthropic",
		"BATCHCTL_RECONCILE_SETTLE": "200ms",
	}}
}

// TestAnthropicSubmitThenPoll: submit --provider anthropic → poll → one result row per request under the user's
// own custom_id and input line, whether the IDs could be sent as they are or had to be mapped; errored requests
// become error rows with the API's error.
func TestAnthropicSubmitThenPoll(t *testing.T) {
	t.Parallel()
	e := anthropicEnv(t, emulator.Options{RequestFailRate: 0.1, Seed: 3}, nil)
	dir := t.TempDir()
	valid, validIDs := writeRecords(t, dir, "valid.jsonl", "ok", 30) // ok-001 …: Anthropic takes them as they are
	mapped, _ := writeRecords(t, dir, "mapped.jsonl", "x", 20)       // ids are generated "mapped.jsonl:N": mapped

	r := runCLI(t, "", e.env, "submit", "--model", "claude-haiku-4-5", "--max-output-tokens", "64", "--id-field", "id",
		"--max-requests", "20", valid)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Len(t, submitLines(t, r.stdout), 2, "30 records in batches of 20")
	r = runCLI(t, "", e.env, "submit", "--model", "claude-haiku-4-5", "--max-output-tokens", "64", mapped)
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := submitLines(t, r.stdout)
	require.Len(t, lines, 1)
	require.Equal(t, "anthropic", lines[0]["provider"])
	mappedBatch := lines[0]["batch_id"].(string)
	rec, ok := e.emu.MessageBatch(mappedBatch)
	require.True(t, ok)
	require.Equal(t, "r1", rec.CustomIDs[0], "an ID Anthropic refuses is sent as r<line>")
	require.Equal(t, 3, e.emu.Stats().Anthropic.BatchesCreated)

	r = runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 3, e.count(t, `select count(*) from $schema.batches where provider = 'anthropic' and status = 'completed'
		and results_count = request_total`))
	require.Equal(t, 50, e.count(t, `select count(*) from $schema.results`))
	require.Equal(t, 30, e.count(t, `select count(*) from $schema.results where custom_id = any($1) and api_custom_id is null
		and input_line is not null`, validIDs))
	for i := 1; i <= 20; i++ {
		require.Equal(t, 1, e.count(t, `select count(*) from $schema.results where batch_id = $1 and custom_id = $2
			and api_custom_id = $3 and input_line = $4`, mappedBatch, fmt.Sprintf("%s:%d", mapped, i), fmt.Sprintf("r%d", i), i),
			"request %d comes back under the user's ID and line", i)
	}
	// Usage and cost: prompt tokens are the whole prompt (Anthropic's input_tokens plus cache reads and writes), as
	// the emulator counted them; claude-haiku-4-5 has a price, so every batch has a cost.
	var input, output int64
	for _, b := range e.emu.MessageBatches() {
		input, output = input+b.InputTokens, output+b.OutputTokens
	}
	require.Positive(t, input)
	require.Equal(t, int(input), e.count(t, `select sum(prompt_tokens)::int from $schema.batches`))
	require.Equal(t, int(output), e.count(t, `select sum(completion_tokens)::int from $schema.batches`))
	require.Equal(t, 3, e.count(t, `select count(*) from $schema.batches where cost_usd > 0`))
	errored := e.count(t, `select count(*) from $schema.results where status_code is null and error->>'code' <> ''`)
	require.Positive(t, errored, "RequestFailRate gives errored results")
	require.Equal(t, errored, e.emu.Stats().Anthropic.ErroredRequests)
	require.Equal(t, 50-errored, e.count(t, `select count(*) from $schema.results where status_code = 200
		and response->>'type' = 'message'`))
}

// TestAnthropicLostCreateAnswer: the API creates the batch and the answer is lost. The next attempt finds the batch
// by its creation time and request count instead of sending the requests again: one batch, tracked, loaded.
func TestAnthropicLostCreateAnswer(t *testing.T) {
	t.Parallel()
	var cut atomic.Int32
	e := anthropicEnv(t, emulator.Options{}, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/v1/messages/batches" && cut.Add(1) == 1 {
				next.ServeHTTP(httptest.NewRecorder(), r) // the batch is created…
				panic(http.ErrAbortHandler)               // …and the connection cut before the answer
			}
			next.ServeHTTP(w, r)
		})
	})
	// Another batch of the same size made meanwhile by someone else would be ambiguous; one made earlier is not
	// in the window. Ours must be told from a batch batchctl created already (it owns it).
	file, ids := writeRecords(t, t.TempDir(), "r.jsonl", "rec", 10)
	r := runCLI(t, "", e.env, "submit", "--model", "claude-haiku-4-5", "--max-output-tokens", "16", "--id-field", "id",
		"--max-requests", "5", file)
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := submitLines(t, r.stdout)
	require.Len(t, lines, 2)
	require.Equal(t, 2, e.emu.Stats().Anthropic.BatchesCreated, "the lost create was found, not repeated")
	require.GreaterOrEqual(t, e.emu.Stats().Anthropic.BatchCreates, 2)
	require.Contains(t, r.stderr, "found the batch of an interrupted create")

	r = runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 10, e.count(t, `select count(*) from $schema.results where custom_id = any($1) and status_code = 200`, ids))
}

// TestAnthropicLostCreateListCut: the API creates the batch and the answer is lost, and the batch lists that look
// for it are cut mid-answer, more often than the SDK retries a call. A search that could not finish is a transient
// failure like any other: the create backs off and searches again (it finds the batch, and creates nothing)
// instead of giving up the run.
func TestAnthropicLostCreateListCut(t *testing.T) {
	t.Parallel()
	const listCuts = 4 // anthropic-sdk-go makes 3 attempts of a call
	var creates, lists atomic.Int32
	e := anthropicEnv(t, emulator.Options{}, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.Method == http.MethodPost && r.URL.Path == "/v1/messages/batches" && creates.Add(1) == 1:
				next.ServeHTTP(httptest.NewRecorder(), r) // the batch is created, the answer lost
				panic(http.ErrAbortHandler)
			case r.Method == http.MethodGet && r.URL.Path == "/v1/messages/batches" && lists.Add(1) <= listCuts:
				// Half the list, under a Content-Length that announces all of it, then the connection goes.
				rec := httptest.NewRecorder()
				next.ServeHTTP(rec, r)
				body := rec.Body.Bytes()
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.WriteHeader(rec.Code)
				_, _ = w.Write(body[:len(body)/2])
				_ = http.NewResponseController(w).Flush()
				panic(http.ErrAbortHandler)
			}
			next.ServeHTTP(w, r)
		})
	})
	file, _ := writeRecords(t, t.TempDir(), "r.jsonl", "rec", 10)
	r := runCLI(t, "", e.env, "submit", "--model", "claude-haiku-4-5", "--max-output-tokens", "16", "--id-field", "id",
		"--max-requests", "5", file)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Len(t, submitLines(t, r.stdout), 2)
	require.Greater(t, lists.Load(), int32(listCuts), "the cut search was repeated")
	require.Equal(t, 2, e.emu.Stats().Anthropic.BatchesCreated, "the lost create was found, not repeated")
	require.Contains(t, r.stderr, "found the batch of an interrupted create")
}

// TestAnthropicCancel: batchctl cancel of a tracked message batch cancels it at Anthropic; the poller loads its
// unprocessed requests as canceled error rows.
func TestAnthropicCancel(t *testing.T) {
	t.Parallel()
	e := anthropicEnv(t, emulator.Options{PhaseDelay: 2 * time.Second}, nil)
	file, _ := writeRecords(t, t.TempDir(), "r.jsonl", "c", 8)
	r := runCLI(t, "", e.env, "submit", "--model", "claude-haiku-4-5", "--max-output-tokens", "16", "--id-field", "id", file)
	require.Equal(t, exitOK, r.code, r.stderr)
	batchID := submitLines(t, r.stdout)[0]["batch_id"].(string)

	r = runCLI(t, "", e.env, "cancel", batchID)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.JSONEq(t, fmt.Sprintf(`{"batch_id":%q,"provider":"anthropic","status":"cancelling"}`, batchID), r.stdout)

	r = runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 1, e.count(t, `select count(*) from $schema.batches where batch_id = $1 and status = 'cancelled'
		and results_count = 8`, batchID))
	require.Equal(t, 8, e.count(t, `select count(*) from $schema.results where batch_id = $1 and error->>'code' = 'canceled'`, batchID))
	require.True(t, strings.Contains(r.stderr, "results loaded"), r.stderr)
}
