package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
)

// writeRecords writes n data records {"id": "<prefix>-NN", "text": ...} to a file and returns its path and the ids.
func writeRecords(t *testing.T, dir, name, prefix string, n int) (string, []string) {
	t.Helper()
	var b strings.Builder
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%03d", prefix, i+1)
		fmt.Fprintf(&b, `{"id":%q,"text":"review %d of %s"}`+"\n", ids[i], i+1, prefix)
	}
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path, ids
}

// submitAndLoad submits the files (batches of maxRequests) with the database configured and polls until done.
func submitAndLoad(t *testing.T, e *apiEnv, maxRequests int, files ...string) []string {
	t.Helper()
	args := append([]string{"submit", "--model", "gpt-4o-mini", "--id-field", "id", "--max-requests", fmt.Sprint(maxRequests)}, files...)
	r := runCLI(t, "", e.env, args...)
	require.Equal(t, exitOK, r.code, r.stderr)
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var c struct {
			BatchID string `json:"batch_id"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &c))
		ids = append(ids, c.BatchID)
	}
	r = runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)
	return ids
}

func newDownstreamEnv(t *testing.T, opts emulator.Options) *apiEnv {
	e := newAPIEnv(t, opts)
	e.env["BATCHCTL_SPOOL_DIR"] = t.TempDir()
	return e
}

func TestStatusShowsBatchesAndTotals(t *testing.T) {
	t.Parallel()
	e := newDownstreamEnv(t, emulator.Options{})
	file, _ := writeRecords(t, t.TempDir(), "reviews.jsonl", "rev", 25)
	batchIDs := submitAndLoad(t, e, 10, file)
	require.Len(t, batchIDs, 3)

	r := runCLI(t, "", e.env, "status")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 5, r.stdout)
	require.Regexp(t, `^BATCH\s+STATUS\s+AGE\s+REQUESTS \(TOTAL/DONE/FAILED\)\s+LOADED\s+TOKENS\s+COST \(USD\)\s+ATTEMPT$`, lines[0])
	for _, line := range lines[1:4] {
		require.Regexp(t, `^batch_\S+\s+completed\s+\d+s\s+(10/10/0|5/5/0)\s+(10|5)\s+\d+\s+0\.\d{6}\s+1$`, line)
	}
	require.Regexp(t, `^TOTAL \(3 batches\)\s+25/25/0\s+25\s+\d+\s+0\.\d{6}$`, strings.TrimSpace(lines[4]))

	r = runCLI(t, "", e.env, "status", "--output", "json", batchIDs[0])
	require.Equal(t, exitOK, r.code, r.stderr)
	var st struct {
		BatchID, Status string
		TotalTokens     *int64       `json:"total_tokens"`
		ResultsCount    *int         `json:"results_count"`
		CostUSD         *json.Number `json:"cost_usd"`
		Attempt         int
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	require.NotNil(t, st.CostUSD, "gpt-4o-mini has a price")
	require.Equal(t, "completed", st.Status)
	require.Equal(t, 10, *st.ResultsCount)
	require.Positive(t, *st.TotalTokens)
	require.Equal(t, 1, st.Attempt)

	r = runCLI(t, "", e.env, "status", "batch_nope")
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.stderr, "not tracked")
}

func TestResultsExportOrdersAndSplits(t *testing.T) {
	t.Parallel()
	e := newDownstreamEnv(t, emulator.Options{})
	dir := t.TempDir()
	fileA, idsA := writeRecords(t, dir, "a.jsonl", "a", 23)
	fileB, idsB := writeRecords(t, dir, "b.jsonl", "b", 7)
	submitAndLoad(t, e, 10, fileA)
	submitAndLoad(t, e, 10, fileB)

	exportIDs := func(stdout string) []string {
		var ids []string
		for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
			var row struct {
				CustomID   string          `json:"custom_id"`
				StatusCode int             `json:"status_code"`
				Response   json.RawMessage `json:"response"`
				InputLine  int             `json:"input_line"`
			}
			require.NoError(t, json.Unmarshal([]byte(line), &row))
			require.Equal(t, 200, row.StatusCode)
			require.Contains(t, string(row.Response), "chat.completion")
			ids = append(ids, row.CustomID)
		}
		return ids
	}

	// Input order is the original input's order exactly, across batch parts and sources.
	r := runCLI(t, "", e.env, "results", "--all", "--order", "input")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, append(append([]string{}, idsA...), idsB...), exportIDs(r.stdout))

	r = runCLI(t, "", e.env, "results", "--all", "--order", "completion")
	require.Equal(t, exitOK, r.code, r.stderr)
	got := exportIDs(r.stdout)
	sort.Strings(got)
	require.Equal(t, append(append([]string{}, idsA...), idsB...), got)

	r = runCLI(t, "", e.env, "results", "--all", "--format", "csv", "--since", "1h")
	require.Equal(t, exitOK, r.code, r.stderr)
	records, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	require.NoError(t, err)
	require.Len(t, records, 31)
	require.Equal(t, csvHeader, records[0])
	require.Equal(t, "a-001", records[1][2])
	require.Equal(t, "1", records[1][3], "input_line")

	r = runCLI(t, "", e.env, "results", "--all", "--since", "2999-01-01T00:00:00Z")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Empty(t, r.stdout)

	out := t.TempDir()
	r = runCLI(t, "", e.env, "results", "--all", "--out", out, "--split-by", "batch")
	require.Equal(t, exitOK, r.code, r.stderr)
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	require.Len(t, entries, 4, "3 batches of a, 1 of b")
	total := 0
	for _, en := range entries {
		require.True(t, strings.HasPrefix(en.Name(), "batch_") && strings.HasSuffix(en.Name(), ".jsonl"))
		data, err := os.ReadFile(filepath.Join(out, en.Name()))
		require.NoError(t, err)
		total += strings.Count(string(data), "\n")
	}
	require.Equal(t, 30, total)

	out = t.TempDir()
	r = runCLI(t, "", e.env, "results", "--all", "--out", out, "--split-by", "source", "--format", "csv")
	require.Equal(t, exitOK, r.code, r.stderr)
	a, err := os.ReadFile(filepath.Join(out, "a.jsonl.csv"))
	require.NoError(t, err)
	require.Equal(t, 24, strings.Count(string(a), "\n"), "header and 23 rows")
	b, err := os.ReadFile(filepath.Join(out, "b.jsonl.csv"))
	require.NoError(t, err)
	require.Equal(t, 8, strings.Count(string(b), "\n"))

	for _, bad := range [][]string{{"results"}, {"results", "--all", "--order", "random"}, {"results", "--all", "--format", "xml"},
		{"results", "--all", "--since", "yesterday"}, {"results", "--all", "batch_x"}} {
		r = runCLI(t, "", e.env, bad...)
		require.Equal(t, exitUsage, r.code, "%v: %s", bad, r.stderr)
	}
}

// TestResultsInputOrderKeepsRunsApart: two submit runs that share a source name (two stdin streams: both "stdin",
// both numbering their parts from 1) created their batches in turns. Input order gives each run whole, in part
// order, the runs in the order they started; ordering by source and part would interleave them.
func TestResultsInputOrderKeepsRunsApart(t *testing.T) {
	t.Parallel()
	start := time.Now().Add(-time.Hour)
	var clock atomic.Int64 // the emulator's clock, seconds past start: each batch is created a second after the last
	e := newDownstreamEnv(t, emulator.Options{Now: func() time.Time { return start.Add(time.Duration(clock.Load()) * time.Second) }})
	ctx := context.Background()

	var track strings.Builder
	create := func(run string, part int) []string {
		var buf strings.Builder
		ids := make([]string, 3)
		for i := range ids {
			ids[i] = fmt.Sprintf("%s-part%d-%d", run, part, i+1)
			fmt.Fprintf(&buf, `{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}`+"\n", ids[i])
		}
		f, err := e.api.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(buf.String()), "part.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
		require.NoError(t, err)
		clock.Add(1)
		b, err := e.api.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
			CompletionWindow: openai.BatchNewParamsCompletionWindow24h, Metadata: map[string]string{
				batchapi.MetaSource: "stdin", "batchctl_part": fmt.Sprint(part), batchapi.MetaRun: "run-" + run,
				"batchctl_intent": run + fmt.Sprint(part), batchapi.MetaSpoolSHA256: run + fmt.Sprint(part)}})
		require.NoError(t, err)
		fmt.Fprintf(&track, `{"batch_id":%q,"input_file_id":%q,"requests":3,"source":"stdin","endpoint":"/v1/chat/completions","model":"gpt-4o-mini","part":%d}`+"\n", b.ID, f.ID, part)
		return ids
	}
	a1, b1, a2, b2 := create("a", 1), create("b", 1), create("a", 2), create("b", 2)

	r := runCLI(t, track.String(), e.env, "track")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)

	r = runCLI(t, "", e.env, "results", "--all", "--order", "input")
	require.Equal(t, exitOK, r.code, r.stderr)
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var row struct {
			CustomID string `json:"custom_id"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &row))
		got = append(got, row.CustomID)
	}
	require.Equal(t, slices.Concat(a1, a2, b1, b2), got)
}

func TestCancelThenPartialLoad(t *testing.T) {
	t.Parallel()
	// A phase long enough that the cancel, a process of its own started once the batch is in progress, lands in
	// in_progress on a loaded machine running the race detector.
	e := newDownstreamEnv(t, emulator.Options{PhaseDelay: 3 * time.Second})
	_, batchID := e.createBatch(t, "c", 40, 0)
	require.Eventually(t, func() bool {
		rec, _ := e.emu.Batch(batchID)
		return rec.Status == emulator.StatusInProgress
	}, 10*time.Second, 5*time.Millisecond)

	r := runCLI(t, "", e.env, "cancel", batchID)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.JSONEq(t, fmt.Sprintf(`{"batch_id":%q,"provider":"openai","status":"cancelling"}`, batchID), r.stdout)

	r = runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 1, e.count(t, `select count(*) from $schema.batches where batch_id = $1 and status = 'cancelled'`, batchID))
	require.Equal(t, 40, e.count(t, `select count(*) from $schema.results where batch_id = $1`, batchID), "answered and cancelled requests each have a row")
	require.Positive(t, e.count(t, `select count(*) from $schema.results where batch_id = $1 and error->>'code' = 'batch_cancelled'`, batchID))

	r = runCLI(t, "", e.env, "cancel")
	require.Equal(t, exitUsage, r.code)
}
