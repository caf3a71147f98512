package main

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// submit --output-expires-after 1h, and no poller runs until the output has expired: poll gives the batch up
// (exiting, not retrying) and status says its output expired before it was loaded, in the table and in JSON.
func TestStatusShowsOutputExpiredBeforeTheLoad(t *testing.T) {
	t.Parallel()
	// The emulator's clock runs two hours behind while the batch runs: its output, written then, expires an hour
	// before the real now the clock then catches up with.
	var behind atomic.Int64
	behind.Store(int64(2 * time.Hour))
	e := newDownstreamEnv(t, emulator.Options{Now: func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) }})
	file, _ := writeRecords(t, t.TempDir(), "reviews.jsonl", "rev", 6)
	r := runCLI(t, "", e.env, "submit", "--model", "gpt-4o-mini", "--id-field", "id", "--output-expires-after", "1h", file)
	require.Equal(t, exitOK, r.code, r.stderr)
	var created struct {
		BatchID            string `json:"batch_id"`
		OutputExpiresAfter int64  `json:"output_expires_after"`
	}
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &created))
	require.EqualValues(t, 3600, created.OutputExpiresAfter)
	require.Eventually(t, func() bool {
		b, _ := e.emu.Batch(created.BatchID)
		return b.Status == emulator.StatusCompleted
	}, 30*time.Second, 10*time.Millisecond)
	behind.Store(0)

	r = runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stderr, "output expired before it was loaded")

	r = runCLI(t, "", e.env, "status")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 3, r.stdout)
	require.Regexp(t, `^batch_\S+\s+completed\s+\S+\s+6/6/0\s+lost: output expired\s+-\s+-\s+1$`, lines[1])

	r = runCLI(t, "", e.env, "status", "--output", "json", created.BatchID)
	require.Equal(t, exitOK, r.code, r.stderr)
	var st struct {
		ResultsLoadedAt    *time.Time `json:"results_loaded_at"`
		ResultsLostAt      *time.Time `json:"results_lost_at"`
		OutputExpiresAt    *time.Time `json:"output_expires_at"`
		OutputExpiresAfter int64      `json:"output_expires_after"`
		ExpectedRows       int        `json:"expected_rows"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	require.Nil(t, st.ResultsLoadedAt)
	require.NotNil(t, st.ResultsLostAt)
	require.NotNil(t, st.OutputExpiresAt)
	require.True(t, st.OutputExpiresAt.Before(time.Now()))
	require.EqualValues(t, 3600, st.OutputExpiresAfter)
	require.Equal(t, 6, st.ExpectedRows)
}
