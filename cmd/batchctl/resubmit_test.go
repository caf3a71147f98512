package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

func TestResubmitCommandAfterExpiry(t *testing.T) {
	t.Parallel()
	e := newDownstreamEnv(t, emulator.Options{ExpireRate: 1, ExpireCompletedShare: 0.5})
	_, root := e.createBatch(t, "x", 20, 0)
	require.Equal(t, exitOK, runCLI(t, "", e.env, "track", root).code)
	require.Eventually(t, func() bool {
		rec, _ := e.emu.Batch(root)
		return rec.Status == emulator.StatusExpired
	}, 30*time.Second, 5*time.Millisecond)
	e.emu.SetFaults(emulator.Faults{})

	r := runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)

	r = runCLI(t, "", e.env, "resubmit", "--all")
	require.Equal(t, exitOK, r.code, r.stderr)
	var res struct {
		BatchID       string `json:"batch_id"`
		ResubmittedAs string `json:"resubmitted_as"`
		Requests      int    `json:"requests"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res))
	require.Equal(t, root, res.BatchID)
	require.NotEmpty(t, res.ResubmittedAs)
	require.Positive(t, res.Requests)

	r = runCLI(t, "", e.env, "resubmit", root)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, `"skipped":"already resubmitted"`)

	r = runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)

	// The export of the root shows the final outcome of every request, in input order.
	r = runCLI(t, "", e.env, "results", root)
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 20)
	for i, line := range lines {
		var row struct {
			CustomID   string `json:"custom_id"`
			StatusCode int    `json:"status_code"`
			Attempt    int    `json:"attempt"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &row))
		require.Equal(t, fmt.Sprintf("x-%d", i+1), row.CustomID)
		require.Equal(t, 200, row.StatusCode)
	}
	require.Equal(t, res.Requests, strings.Count(r.stdout, `"attempt":2`))

	r = runCLI(t, "", e.env, "status", "--output", "json", res.ResubmittedAs)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, `"attempt":2`)
	require.Contains(t, r.stdout, fmt.Sprintf(`"parent_batch_ids":[%q]`, root))

	require.Equal(t, exitUsage, runCLI(t, "", e.env, "resubmit").code)
}

func TestPollResubmitFlag(t *testing.T) {
	t.Parallel()
	e := newDownstreamEnv(t, emulator.Options{Seed: 11, RequestFailRate: 1})
	_, root := e.createBatch(t, "p", 16, 0)
	require.Equal(t, exitOK, runCLI(t, "", e.env, "track", root).code)

	r := runCLI(t, "", e.env, append(fastPoll, "--resubmit", "--max-attempts", "3")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 3, e.count(t, `select count(*) from $schema.batches where root_batch_id = $1`, root), "attempts 1, 2 and 3")
	require.Equal(t, 16, e.count(t, `select count(*) from $schema.final_results where root_batch_id = $1`, root))
	require.Zero(t, e.count(t, `select count(*) from $schema.batches where attempt > 3`))
}
