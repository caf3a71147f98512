package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/pack"
)

// TestPackedDemoEndToEnd is the demo's 3 000 reviews packed 10 a request, through the emulator with a tenth of the
// packed answers garbled, and poll --resubmit sending the records of the garbled ones again unpacked: every review
// ends with exactly one final ok row, under its own custom_id, in input order.
func TestPackedDemoEndToEnd(t *testing.T) {
	t.Parallel()
	e := newDownstreamEnv(t, emulator.Options{GarbleRate: 0.1})
	labels := filepath.Join(t.TempDir(), "label.json")
	require.NoError(t, os.WriteFile(labels, []byte(`{"type":"string","enum":["positive","negative","neutral"]}`), 0o600))

	r := runCLI(t, "", e.env, "submit", "--model", "gpt-4o-mini", "--system", "Classify the sentiment of the review.",
		"--id-field", "id", "--pack", "10", "--answer-schema", labels, "--max-requests", "100", "../../examples/reviews.jsonl")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 3, strings.Count(r.stdout, "\n"), "3000 records, 300 requests of 10, 100 a batch")
	require.Equal(t, 3000, e.count(t, `select count(*) from $schema.packed_records`))

	// 10 attempts: a record garbled at a tenth of its requests is left failed with a chance of 1e-10.
	r = runCLI(t, "", e.env, append(fastPoll, "--resubmit", "--max-attempts", "10")...)
	require.Equal(t, exitOK, r.code, r.stderr)

	// The first attempt: one row per record, the garbled answers' records with their own packed_answer_* errors.
	require.Equal(t, 3000, e.count(t, `select count(*) from $schema.results r join $schema.batches b using (batch_id) where b.attempt = 1`))
	failed := e.count(t, `select count(*) from $schema.results where error->>'code' like 'packed\_answer\_%'`)
	require.Positive(t, failed)
	for a := 1; a <= 4; a++ {
		t.Logf("attempt %d: %d batches, %d rows, %d packed errors", a, e.count(t, `select count(*) from $schema.batches where attempt = $1`, a),
			e.count(t, `select count(*) from $schema.results r join $schema.batches b using (batch_id) where b.attempt = $1`, a),
			e.count(t, `select count(*) from $schema.results r join $schema.batches b using (batch_id) where b.attempt = $1 and r.error is not null`, a))
	}
	for _, code := range []string{pack.CodeMissing, pack.CodeDuplicate, pack.CodeUnparseable, pack.CodeTruncated} {
		require.Positive(t, e.count(t, `select count(*) from $schema.results where error->>'code' = $1`, code), code)
	}
	// Children send them one record a request.
	require.Positive(t, e.count(t, `select count(*) from $schema.batches where attempt > 1`))
	require.Zero(t, e.count(t, `select count(*) from $schema.batches where attempt > 1 and metadata->>'batchctl_pack' <> '1'`))

	// The final outcome: exactly one ok row per review, under its own id.
	require.Equal(t, 3000, e.count(t, `select count(*) from $schema.final_results`))
	require.Equal(t, 3000, e.count(t, `select count(distinct custom_id) from $schema.final_results
		where status_code = 200 and error is null and custom_id like 'rev-%' and packed_custom_id like 'pack:rev-%'`))

	r = runCLI(t, "", e.env, "results", "--all", "--order", "input")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 3000)
	for i, line := range lines {
		var row struct {
			CustomID       string `json:"custom_id"`
			PackedCustomID string `json:"packed_custom_id"`
			Response       struct {
				Index  int    `json:"index"`
				Answer string `json:"answer"`
				Usage  struct {
					PromptTokens int `json:"prompt_tokens"`
				} `json:"usage"`
			} `json:"response"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &row))
		require.Equal(t, fmt.Sprintf("rev-%05d", i+1), row.CustomID, "input order")
		require.Contains(t, []string{"positive", "negative", "neutral"}, row.Response.Answer)
		require.Regexp(t, `^pack:rev-\d{5}$`, row.PackedCustomID)
		require.Positive(t, row.Response.Usage.PromptTokens)
	}
}

func TestPackUsageErrors(t *testing.T) {
	t.Parallel()
	env := map[string]string{"OPENAI_API_KEY": "k", "DATABASE_URL": "postgres://x@127.0.0.1:1/x"}
	r := runCLI(t, "", env, "poll", "--resubmit-pack", "-1")
	require.Equal(t, exitUsage, r.code, r.stderr)
	require.Contains(t, r.stderr, "--resubmit-pack -1")
	r = runCLI(t, "", env, "resubmit", "--all", "--resubmit-pack", "1001")
	require.Equal(t, exitUsage, r.code, r.stderr)
	require.Contains(t, r.stderr, "--resubmit-pack 1001")
	r = runCLI(t, "", map[string]string{"OPENAI_API_KEY": "k", "BATCHCTL_SPOOL_DIR": t.TempDir()},
		"submit", "--model", "m", "--pack", "10", "../../examples/reviews.jsonl")
	require.Equal(t, exitUsage, r.code, r.stderr)
	require.Contains(t, r.stderr, "DATABASE_URL")
	r = runCLI(t, "", map[string]string{"OPENAI_API_KEY": "k", "BATCHCTL_SPOOL_DIR": t.TempDir()},
		"submit", "--model", "m", "--answer-schema", "/nonexistent.json", "--pack", "2", "--dry-run", "../../examples/reviews.jsonl")
	require.Equal(t, exitUsage, r.code, r.stderr)
}
