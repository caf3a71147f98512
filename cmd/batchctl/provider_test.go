package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// runCLIFor runs batchctl like runCLI, stopping it (as SIGTERM would) after d.
func runCLIFor(t *testing.T, d time.Duration, env map[string]string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	streams := &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	code := run(ctx, args, streams, func(k string) string { return env[k] })
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// submitLines parses submit's JSON lines.
func submitLines(t *testing.T, stdout string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		lines = append(lines, m)
	}
	return lines
}

// TestAzureSubmitThenPoll runs submit --provider azure → poll → result rows against the emulator's Azure paths,
// with the api-version paths (openai-go's azure package) and with the v1 paths.
func TestAzureSubmitThenPoll(t *testing.T) {
	t.Parallel()
	for _, paths := range []string{"api-version", "v1"} {
		t.Run(paths, func(t *testing.T) {
			t.Parallel()
			e := newDownstreamEnv(t, emulator.Options{})
			endpoint := strings.TrimSuffix(e.env["OPENAI_BASE_URL"], "/v1")
			if paths == "v1" {
				endpoint += "/openai/v1"
			}
			// Only Azure's credentials: the OpenAI key must not be needed, nor sent.
			delete(e.env, "OPENAI_API_KEY")
			e.env["AZURE_OPENAI_ENDPOINT"], e.env["AZURE_OPENAI_API_KEY"] = endpoint, "azure-test-key"
			file, ids := writeRecords(t, t.TempDir(), "reviews.jsonl", "rev", 25)

			r := runCLI(t, "", e.env, "submit", "--provider", "azure", "--model", "my-gpt4o-deployment", "--id-field", "id",
				"--max-output-tokens", "50", file)
			require.Equal(t, exitOK, r.code, r.stderr)
			lines := submitLines(t, r.stdout)
			require.Len(t, lines, 1, "25 records fit one Azure batch")
			require.Equal(t, "azure", lines[0]["provider"])
			require.Equal(t, "/v1/chat/completions", lines[0]["endpoint"])
			batchID := lines[0]["batch_id"].(string)

			rec, ok := e.emu.Batch(batchID)
			require.True(t, ok)
			require.Equal(t, "/chat/completions", rec.Endpoint, "Azure's batch endpoint has no /v1")

			r = runCLI(t, "", e.env, fastPoll...)
			require.Equal(t, exitOK, r.code, r.stderr)
			require.Equal(t, 1, e.count(t, `select count(*) from $schema.batches where provider = 'azure' and status = 'completed'
				and results_loaded_at is not null`))
			require.Equal(t, 25, e.count(t, `select count(*) from $schema.results where status_code = 200 and custom_id = any($1)
				and input_line is not null`, ids))
			require.Equal(t, 0, e.count(t, `select count(*) from $schema.results where error is not null`),
				"Azure's empty error file of a clean batch loads no row")
		})
	}
}

// TestPollSkipsProvidersWithoutCredentials: a poller with OpenAI's key only loads the OpenAI batch and leaves the
// Azure batch as it is, never failed, saying which credentials it lacks; a poller with both then loads it.
func TestPollSkipsProvidersWithoutCredentials(t *testing.T) {
	t.Parallel()
	e := newDownstreamEnv(t, emulator.Options{})
	endpoint := strings.TrimSuffix(e.env["OPENAI_BASE_URL"], "/v1")
	azureEnv := map[string]string{"AZURE_OPENAI_ENDPOINT": endpoint, "AZURE_OPENAI_API_KEY": "azure-test-key"}
	for k, v := range e.env {
		azureEnv[k] = v
	}
	file, _ := writeRecords(t, t.TempDir(), "a.jsonl", "a", 5)
	r := runCLI(t, "", azureEnv, "submit", "--provider", "azure", "--model", "dep", "--id-field", "id", file)
	require.Equal(t, exitOK, r.code, r.stderr)
	azureBatch := submitLines(t, r.stdout)[0]["batch_id"].(string)
	file, _ = writeRecords(t, t.TempDir(), "o.jsonl", "o", 5)
	r = runCLI(t, "", e.env, "submit", "--model", "gpt-4o-mini", "--id-field", "id", file)
	require.Equal(t, exitOK, r.code, r.stderr)
	openaiBatch := submitLines(t, r.stdout)[0]["batch_id"].(string)

	// OpenAI's credentials only: the OpenAI batch loads; the Azure one stays unloaded and not failed.
	require.Eventually(t, func() bool {
		rec, _ := e.emu.Batch(azureBatch)
		return rec.Status == emulator.StatusCompleted
	}, 20*time.Second, 20*time.Millisecond)
	r = runCLIFor(t, 4*time.Second, e.env, "poll", "--poll-interval", "50ms,500ms", "--fetch-interval", "50ms", "--sweep-interval", "200ms")
	require.Contains(t, r.stderr, "AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY", "the log names the missing credentials")
	require.Equal(t, 1, e.count(t, `select count(*) from $schema.batches where batch_id = $1 and results_loaded_at is not null`, openaiBatch))
	require.Equal(t, 1, e.count(t, `select count(*) from $schema.batches where batch_id = $1 and results_loaded_at is null
		and status <> 'failed'`, azureBatch))

	r = runCLI(t, "", azureEnv, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 10, e.count(t, `select count(*) from $schema.results where status_code = 200`))
	require.Equal(t, 1, e.count(t, `select count(*) from $schema.batches where batch_id = $1 and provider = 'azure'`, azureBatch))
}

func TestSubmitProviderUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file, _ := writeRecords(t, dir, "r.jsonl", "r", 2)
	env := map[string]string{"BATCHCTL_SPOOL_DIR": t.TempDir()}
	// Keys that reach no API: the options are refused before any call.
	withKey := map[string]string{"BATCHCTL_SPOOL_DIR": env["BATCHCTL_SPOOL_DIR"], "ANTHROPIC_API_KEY": "sk-ant-test",
		"OPENAI_API_KEY": "sk-test", "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:1", "AZURE_OPENAI_API_KEY": "k"}
	for _, c := range []struct {
		args []string
		want string
		env  map[string]string
	}{
		{[]string{"--provider", "bedrock", "--model", "m"}, `unknown provider "bedrock"`, nil},
		{[]string{"--provider", "azure", "--model", "m"}, "set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY", nil},
		{[]string{"--provider", "anthropic", "--model", "m", "--max-output-tokens", "10"}, "set ANTHROPIC_API_KEY", nil},
		{[]string{"--provider", "anthropic", "--model", "m"}, "--max-output-tokens", withKey},
		{[]string{"--provider", "anthropic", "--model", "m", "--max-output-tokens", "10", "--endpoint", "/v1/chat/completions"}, "Anthropic's batches take only /v1/messages", withKey},
		{[]string{"--provider", "azure", "--model", "m", "--max-requests", "100001"}, "want 1 to 100000 (azure's limit)", withKey},
		{[]string{"--model", "m", "--max-requests", "50001"}, "want 1 to 50000 (openai's limit)", withKey},
		{[]string{"--provider", "anthropic", "--model", "m", "--max-output-tokens", "9", "--output-expires-after", "2h"}, "no files to expire", withKey},
		{[]string{"--provider", "azure", "--model", "m", "--file-expires-after", "24h"}, "Azure takes 336h0m0s to 720h0m0s", withKey},
	} {
		args := append(append([]string{"submit"}, c.args...), file)
		runEnv := env
		if c.env != nil {
			runEnv = c.env
		}
		r := runCLI(t, "", runEnv, args...)
		require.Equal(t, exitUsage, r.code, fmt.Sprint(c.args, r.stderr))
		require.Contains(t, r.stderr, c.want, c.args)
	}
}

// TestTrackRecordsTheProvider: a submit line names its provider; a bare msgbatch_ ID is Anthropic's; any other bare
// ID is --provider's.
func TestTrackRecordsTheProvider(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t, emulator.Options{})
	line := `{"batch_id":"batch_fromline","provider":"azure","requests":3,"spool_sha256":"ab","source":"s","endpoint":"/v1/chat/completions","model":"dep","part":1}`
	r := runCLI(t, line+"\nmsgbatch_bare1\nbatch_bare2\n", e.env, "track", "--provider", "openai")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = runCLI(t, "", e.env, "track", "--provider", "azure", "batch_bare3")
	require.Equal(t, exitOK, r.code, r.stderr)
	for id, want := range map[string]string{"batch_fromline": "azure", "msgbatch_bare1": "anthropic", "batch_bare2": "openai", "batch_bare3": "azure"} {
		require.Equal(t, 1, e.count(t, `select count(*) from $schema.batches where batch_id = $1 and provider = $2`, id, want), id)
	}
	r = runCLI(t, "", e.env, "track", "--provider", "bedrock", "batch_x")
	require.Equal(t, exitUsage, r.code, r.stderr)
}
