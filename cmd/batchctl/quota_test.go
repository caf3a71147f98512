package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/store"
)

func TestQuotaSetShowUnset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.NewStore(t)
	env := map[string]string{"DATABASE_URL": pgtest.URL(t), "BATCHCTL_SCHEMA": s.Schema()}

	r := runCLI(t, "", env, "quota")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "MODEL  QUOTA  IN FLIGHT  QUEUED  QUEUED TOKENS  OLDEST QUEUED  ESTIMATE RATIO\n", r.stdout, "no models yet")

	r = runCLI(t, "", env, "quota", "set", "gpt-4o-mini", "2000000")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Empty(t, r.stdout)
	tokens, ok, err := s.Quota(ctx, "gpt-4o-mini")
	require.NoError(t, err)
	require.True(t, ok)
	require.EqualValues(t, 2_000_000, tokens)

	// A queued batch of a model without a quota shows too, and one being admitted counts in flight.
	_, err = s.Enqueue(ctx, store.QueuedBatch{Intent: "i1", Model: "gpt-4o", Endpoint: "/v1/chat/completions",
		InputFileID: "file-1", EstimatedTokens: 500})
	require.NoError(t, err)
	q, err := s.Enqueue(ctx, store.QueuedBatch{Intent: "i2", Model: "gpt-4o-mini", Endpoint: "/v1/chat/completions",
		InputFileID: "file-2", EstimatedTokens: 700})
	require.NoError(t, err)
	require.NoError(t, s.MarkCreating(ctx, q.QueueID, time.Now()))

	r = runCLI(t, "", env, "quota")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 3, r.stdout)
	require.Regexp(t, `^gpt-4o\s+-\s+0\s+1\s+500\s+\d+s\s+-$`, lines[1])
	require.Regexp(t, `^gpt-4o-mini\s+2000000\s+700\s+0\s+0\s+-\s+-$`, lines[2])

	r = runCLI(t, "", env, "quota", "-o", "json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var rows []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m))
		rows = append(rows, m)
	}
	require.Len(t, rows, 2)
	require.Equal(t, "gpt-4o", rows[0]["model"])
	require.Nil(t, rows[0]["token_limit"])
	require.EqualValues(t, 1, rows[0]["queued_batches"])
	require.EqualValues(t, 500, rows[0]["queued_tokens"])
	require.NotNil(t, rows[0]["oldest_queued_at"])
	require.Equal(t, "gpt-4o-mini", rows[1]["model"])
	require.EqualValues(t, 2_000_000, rows[1]["token_limit"])
	require.EqualValues(t, 700, rows[1]["inflight_tokens"])
	require.Contains(t, rows[1], "estimate_ratio")
	require.Nil(t, rows[1]["estimate_ratio"])

	r = runCLI(t, "", env, "quota", "unset", "gpt-4o-mini")
	require.Equal(t, exitOK, r.code, r.stderr)
	_, ok, err = s.Quota(ctx, "gpt-4o-mini")
	require.NoError(t, err)
	require.False(t, ok)
	r = runCLI(t, "", env, "quota", "unset", "gpt-4o-mini")
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.stderr, "model gpt-4o-mini has no quota")
}

func TestQuotaUsageErrors(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1:1/x"}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no database", map[string]string{}, []string{"quota"}, "DATABASE_URL"},
		{"tokens not a number", env, []string{"quota", "set", "m", "lots"}, "positive whole number"},
		{"tokens not positive", env, []string{"quota", "set", "m", "0"}, "positive whole number"},
		{"missing tokens", env, []string{"quota", "set", "m"}, "want MODEL and TOKENS"},
		{"unset without model", env, []string{"quota", "unset"}, "accepts 1 arg"},
		{"bad output", env, []string{"quota", "-o", "yaml"}, "want table or json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, "", tc.env, tc.args...)
			require.Equal(t, exitUsage, r.code, r.stderr)
			require.Contains(t, r.stderr, tc.want)
		})
	}
}
