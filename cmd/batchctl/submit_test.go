package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/submit"
)

func submitEnv(t *testing.T) (*emulator.Server, map[string]string) {
	t.Helper()
	srv, baseURL := emulator.Start(t, emulator.Options{PhaseDelay: 5 * time.Millisecond})
	return srv, map[string]string{
		"OPENAI_API_KEY":     "sk-test",
		"OPENAI_BASE_URL":    baseURL,
		"BATCHCTL_SPOOL_DIR": t.TempDir(),
	}
}

func TestSubmitCommand(t *testing.T) {
	t.Parallel()
	srv, env := submitEnv(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "reviews.jsonl")
	require.NoError(t, os.WriteFile(file, []byte("{\"id\":\"r-1\",\"text\":\"great\"}\n{\"id\":\"r-2\",\"text\":\"bad\"}\n{\"id\":\"r-3\",\"text\":\"ok\"}\n"), 0o600))

	res := runCLI(t, "", env, "submit", "--model", "gpt-4o-mini", "--id-field", "id", "--max-requests", "2",
		"--metadata", "team=data", file)
	require.Equal(t, exitOK, res.code, res.stderr)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, lines, 2)
	for _, l := range lines {
		var c submit.Created
		require.NoError(t, json.Unmarshal([]byte(l), &c))
		require.NotEmpty(t, c.BatchID)
		require.Equal(t, "gpt-4o-mini", c.Model)
		b, ok := srv.Batch(c.BatchID)
		require.True(t, ok)
		require.Equal(t, "data", b.Metadata["team"])
	}
	require.NotContains(t, res.stderr, "sk-test")

	// The same command again creates nothing.
	res = runCLI(t, "", env, "submit", "--model", "gpt-4o-mini", "--id-field", "id", "--max-requests", "2",
		"--metadata", "team=data", file)
	require.Equal(t, exitOK, res.code, res.stderr)
	require.Equal(t, 2, strings.Count(res.stdout, `"existing":true`))
	require.Len(t, srv.Batches(), 2)
}

func TestSubmitCommandStdin(t *testing.T) {
	t.Parallel()
	srv, env := submitEnv(t)
	res := runCLI(t, "first question\n\nsecond question\n", env, "submit", "--format", "text", "--model", "m", "-")
	require.Equal(t, exitOK, res.code, res.stderr)
	var c submit.Created
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &c))
	require.Equal(t, 2, c.Requests)
	require.Equal(t, "stdin", c.Source)
	require.Len(t, srv.Batches(), 1)
}

func TestSubmitCommandBadInput(t *testing.T) {
	t.Parallel()
	srv, env := submitEnv(t)
	file := filepath.Join(t.TempDir(), "in.jsonl")
	require.NoError(t, os.WriteFile(file, []byte("{\"text\":\"a\"}\n{\"text\":\n"), 0o600))
	res := runCLI(t, "", env, "submit", "--model", "m", file)
	require.Equal(t, exitInput, res.code)
	require.Contains(t, res.stderr, "in.jsonl:2: invalid JSON")
	require.Empty(t, res.stdout)
	require.Zero(t, srv.Stats().FileUploads)

	res = runCLI(t, "", env, "submit", "--model", "m", "--max-requests", "60000", file)
	require.Equal(t, exitUsage, res.code)
}

func TestSubmitCommandDryRun(t *testing.T) {
	t.Parallel()
	srv, env := submitEnv(t)
	delete(env, "OPENAI_API_KEY") // a dry run needs no key
	res := runCLI(t, `{"text":"a"}`+"\n", env, "submit", "--model", "m", "--dry-run")
	require.Equal(t, exitOK, res.code, res.stderr)
	require.Contains(t, res.stdout, `"dry_run":true`)
	require.Zero(t, srv.Stats().FileUploads)
}

// TestSubmitCommandHourlyCreateCap: past the API's batch creations an hour, submit stops with the API's answer
// (exit 4) instead of sleeping for an hour; run again once the hour has passed, it creates the rest, nothing twice.
func TestSubmitCommandHourlyCreateCap(t *testing.T) {
	t.Parallel()
	start := time.Now()
	var elapsed atomic.Int64
	srv, baseURL := emulator.Start(t, emulator.Options{PhaseDelay: time.Hour, MaxBatchCreatesPerHour: 1,
		Now: func() time.Time { return start.Add(time.Duration(elapsed.Load())) }})
	env := map[string]string{"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": baseURL, "BATCHCTL_SPOOL_DIR": t.TempDir()}
	file := filepath.Join(t.TempDir(), "in.jsonl")
	require.NoError(t, os.WriteFile(file, []byte("{\"text\":\"a\"}\n{\"text\":\"b\"}\n"), 0o600))
	args := []string{"submit", "--model", "m", "--max-requests", "1", file}

	res := runCLI(t, "", env, args...)
	require.Equal(t, exitAPI, res.code, res.stderr)
	require.Contains(t, res.stderr, "Rate limit reached for batch creation: at most 1 batches an hour")
	require.Equal(t, 1, strings.Count(res.stdout, `"batch_id"`), "the first batch is out before the cap")
	require.Len(t, srv.Batches(), 1)

	elapsed.Store(int64(time.Hour + time.Second))
	res = runCLI(t, "", env, args...)
	require.Equal(t, exitOK, res.code, res.stderr)
	require.Equal(t, 1, strings.Count(res.stdout, `"existing":true`))
	require.Equal(t, 2, strings.Count(res.stdout, `"batch_id"`))
	require.Len(t, srv.Batches(), 2, "the second batch, once; the first not again")
	require.Equal(t, 2, srv.Stats().FileUploads, "the refused batch's upload is reused")
}

func TestSubmitCommandMaxTokens(t *testing.T) {
	t.Parallel()
	srv, env := submitEnv(t)
	// Each body, {"model":"m","messages":[{"role":"user","content":"a"}]}, is 56 bytes: 14 tokens.
	in := strings.Repeat(`{"text":"a"}`+"\n", 5)
	res := runCLI(t, in, env, "submit", "--model", "m", "--dry-run", "--max-tokens", "28")
	require.Equal(t, exitOK, res.code, res.stderr)
	require.Equal(t, 3, strings.Count(res.stdout, `"dry_run":true`), "two requests a batch: %s", res.stdout)
	require.Zero(t, srv.Stats().FileUploads)

	res = runCLI(t, in, env, "submit", "--model", "m", "--dry-run", "--max-tokens", "-1")
	require.Equal(t, exitUsage, res.code)
	require.Contains(t, res.stderr, "max tokens -1 is negative")
}

func TestSubmitCommandUnreadableInput(t *testing.T) {
	t.Parallel()
	srv, env := submitEnv(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	require.NoError(t, os.WriteFile(good, []byte(`{"text":"a"}`+"\n"), 0o600))
	for _, tt := range []struct{ path, want string }{
		{filepath.Join(dir, "missing.jsonl"), "missing.jsonl: cannot read input: no such file or directory"},
		{dir, "is a directory, not a file of records"},
	} {
		res := runCLI(t, "", env, "submit", "--model", "m", good, tt.path)
		require.Equal(t, exitInput, res.code, res.stderr)
		require.Contains(t, res.stderr, tt.want)
		require.Empty(t, res.stdout)
	}
	require.Zero(t, srv.Stats().FileUploads, "nothing from any input is uploaded")
	entries, err := os.ReadDir(env["BATCHCTL_SPOOL_DIR"])
	require.NoError(t, err)
	require.Empty(t, entries, "nothing spooled")
}

// --rejects without --skip-invalid is a usage error that leaves the file as it was, instead of truncating it.
func TestSubmitRejectsNeedsSkipInvalid(t *testing.T) {
	t.Parallel()
	srv, env := submitEnv(t)
	dir := t.TempDir()
	rejects := filepath.Join(dir, "rejects.jsonl")
	require.NoError(t, os.WriteFile(rejects, []byte("kept\n"), 0o600))
	in := filepath.Join(dir, "in.jsonl")
	require.NoError(t, os.WriteFile(in, []byte(`{"text":"a"}`+"\n"), 0o600))
	res := runCLI(t, "", env, "submit", "--model", "m", "--rejects", rejects, in)
	require.Equal(t, exitUsage, res.code, res.stderr)
	require.Contains(t, res.stderr, "--skip-invalid")
	b, err := os.ReadFile(rejects)
	require.NoError(t, err)
	require.Equal(t, "kept\n", string(b))
	require.Zero(t, srv.Stats().FileUploads)
}

// A database whose schema is not migrated is refused before anything is uploaded, so it costs no batch.
func TestSubmitChecksTheSchemaBeforeUploading(t *testing.T) {
	t.Parallel()
	srv, env := submitEnv(t)
	url, schema := pgtest.NewSchema(t)
	env["DATABASE_URL"], env["BATCHCTL_SCHEMA"] = url, schema
	in := filepath.Join(t.TempDir(), "in.jsonl")
	require.NoError(t, os.WriteFile(in, []byte(`{"text":"a"}`+"\n"), 0o600))
	res := runCLI(t, "", env, "submit", "--model", "m", in)
	require.NotEqual(t, exitOK, res.code)
	require.Contains(t, res.stderr, "batchctl migrate")
	require.Zero(t, srv.Stats().FileUploads)
	require.Empty(t, srv.Batches())
}

// batchctl intents lists an intent a crash left unfinished, with the error that set it aside, and abandon gives it
// up; --resume then has nothing left.
func TestIntentsListAndAbandon(t *testing.T) {
	t.Parallel()
	srv, baseURL := emulator.Start(t, emulator.Options{APIKey: "sk-right"})
	env := map[string]string{"OPENAI_API_KEY": "sk-wrong", "OPENAI_BASE_URL": baseURL, "BATCHCTL_SPOOL_DIR": t.TempDir()}
	in := filepath.Join(t.TempDir(), "in.jsonl")
	require.NoError(t, os.WriteFile(in, []byte(`{"text":"a"}`+"\n"), 0o600))
	res := runCLI(t, "", env, "submit", "--model", "m", in)
	require.Equal(t, exitAPI, res.code, res.stderr)

	res = runCLI(t, "", env, "intents", "-o", "json")
	require.Equal(t, exitOK, res.code, res.stderr)
	var info submit.IntentInfo
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &info))
	require.Equal(t, submit.StatePending, info.State)
	require.Equal(t, 1, info.Requests)

	// Still refused: --resume sets it aside, says so, and exits non-zero.
	res = runCLI(t, "", env, "submit", "--resume", "--log-level", "error")
	require.Equal(t, exitAPI, res.code, res.stderr)
	require.Contains(t, res.stderr, "set aside")
	res = runCLI(t, "", env, "intents")
	require.Equal(t, exitOK, res.code, res.stderr)
	require.Contains(t, res.stdout, info.Intent)
	require.Contains(t, res.stdout, "401")

	res = runCLI(t, "", env, "intents", "abandon", info.Intent)
	require.Equal(t, exitOK, res.code, res.stderr)
	res = runCLI(t, "", env, "intents", "-o", "json")
	require.Equal(t, exitOK, res.code, res.stderr)
	require.Empty(t, strings.TrimSpace(res.stdout))
	env["OPENAI_API_KEY"] = "sk-right"
	res = runCLI(t, "", env, "submit", "--resume")
	require.Equal(t, exitOK, res.code, res.stderr)
	require.Empty(t, srv.Batches(), "an abandoned intent is never finished")

	res = runCLI(t, "", env, "intents", "abandon", "no-such-intent")
	require.Equal(t, exitUsage, res.code)
}

// Each submit line carries the estimated cost; --max-cost refuses a file whose estimate passes it, with exit 3 and
// nothing uploaded.
func TestSubmitEstimatesCostAndCapsIt(t *testing.T) {
	t.Parallel()
	srv, env := submitEnv(t)
	in := filepath.Join(t.TempDir(), "in.jsonl")
	require.NoError(t, os.WriteFile(in, []byte(`{"text":"a"}`+"\n"+`{"text":"b"}`+"\n"), 0o600))
	res := runCLI(t, "", env, "submit", "--model", "gpt-4o-mini", "--max-cost", "0.000000001", in)
	require.Equal(t, exitInput, res.code, res.stderr)
	require.Contains(t, res.stderr, "--max-cost")
	require.Zero(t, srv.Stats().FileUploads)

	res = runCLI(t, "", env, "submit", "--model", "gpt-4o-mini", "--max-cost", "1", "--dry-run", in)
	require.Equal(t, exitOK, res.code, res.stderr)
	var c submit.Created
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &c))
	require.NotNil(t, c.EstimatedCostUSD)
	require.Positive(t, c.EstimatedCostUSD.Pico)

	res = runCLI(t, "", env, "submit", "--model", "gpt-4o-mini", "--max-cost", "lots", in)
	require.Equal(t, exitUsage, res.code)
}
