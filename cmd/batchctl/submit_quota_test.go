package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/submit"
)

// A run at 4× a model's enqueued-token limit, unattended: submit queues what does not fit and exits, the poller
// admits the queue as batches end, and every request gets exactly one result row with no token_limit_exceeded.
func TestSubmitWithQuotaRunsUnattended(t *testing.T) {
	t.Parallel()
	const batches, per = 8, 10
	text := strings.Repeat("a fairly long review of a product that arrived on time ", 4)
	limit := int64(2 * per * (len(text)/4 + 1)) // about two batches, in the emulator's count
	e := newAPIEnv(t, emulator.Options{PhaseDelay: 150 * time.Millisecond,
		TokenLimitPerModel: map[string]int64{"gpt-4o-mini": limit}})
	e.env["BATCHCTL_SPOOL_DIR"] = t.TempDir()
	e.env["BATCHCTL_RECONCILE_SETTLE"] = "10ms"
	require.Equal(t, exitOK, runCLI(t, "", e.env, "quota", "set", "gpt-4o-mini", fmt.Sprint(limit)).code)

	var in strings.Builder
	for i := range batches * per {
		fmt.Fprintf(&in, `{"id":"r-%03d","text":%q}`+"\n", i+1, text)
	}
	file := filepath.Join(t.TempDir(), "reviews.jsonl")
	require.NoError(t, os.WriteFile(file, []byte(in.String()), 0o600))

	res := runCLI(t, "", e.env, "submit", "--model", "gpt-4o-mini", "--id-field", "id", "--max-requests", fmt.Sprint(per), file)
	require.Equal(t, exitOK, res.code, res.stderr)
	queued := 0
	for _, l := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		var c submit.Created
		require.NoError(t, json.Unmarshal([]byte(l), &c))
		require.Positive(t, c.EstimatedTokens)
		if c.Queued {
			queued++
			require.Empty(t, c.BatchID)
		}
	}
	require.Positive(t, queued, "what does not fit waits in the queue")
	require.Less(t, len(e.emu.Batches()), batches)

	res = runCLI(t, "", e.env, "poll", "--exit-when-done", "--poll-interval", "50ms,200ms", "--fetch-interval", "20ms")
	require.Equal(t, exitOK, res.code, res.stderr)
	require.Len(t, e.emu.Batches(), batches)
	require.Zero(t, e.emu.Stats().TokenLimitFailures)
	require.LessOrEqual(t, e.emu.Stats().PeakEnqueuedTokens["gpt-4o-mini"], limit)
	var rows, distinct int
	require.NoError(t, e.store.Pool().QueryRow(t.Context(), `select count(*), count(distinct custom_id) from `+e.schema+
		`.final_results where status_code = 200`).Scan(&rows, &distinct))
	require.Equal(t, batches*per, rows)
	require.Equal(t, batches*per, distinct)

	// A batch file over the quota is refused before upload, naming the fix; cut with --max-tokens, it goes.
	uploads := e.emu.Stats().FileUploads
	big := filepath.Join(t.TempDir(), "big.jsonl")
	require.NoError(t, os.WriteFile(big, []byte(strings.ReplaceAll(in.String(), "r-", "big-")), 0o600))
	res = runCLI(t, "", e.env, "submit", "--model", "gpt-4o-mini", "--id-field", "id", big)
	require.Equal(t, exitInput, res.code, res.stderr)
	require.Contains(t, res.stderr, "--max-tokens")
	require.Equal(t, uploads, e.emu.Stats().FileUploads, "nothing uploaded")
	res = runCLI(t, "", e.env, "submit", "--model", "gpt-4o-mini", "--id-field", "id", "--max-tokens", fmt.Sprint(limit/2), big)
	require.Equal(t, exitOK, res.code, res.stderr)

	// A --max-tokens larger than the quota could never be admitted.
	res = runCLI(t, "", e.env, "submit", "--model", "gpt-4o-mini", "--max-tokens", fmt.Sprint(limit+1), file)
	require.Equal(t, exitUsage, res.code, res.stderr)
	require.Contains(t, res.stderr, "quota")
}
