package main

import (
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/internal/pgtest"
)

func TestMigrateConcurrentRunsBothSucceed(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.NewSchema(t)
	env := map[string]string{"DATABASE_URL": url}

	var wg sync.WaitGroup
	results := make([]result, 2)
	for i := range results {
		wg.Go(func() { results[i] = runCLI(t, "", env, "migrate", "--schema", schema) })
	}
	wg.Wait()
	for _, r := range results {
		require.Equal(t, exitOK, r.code, r.stderr)
	}

	r := runCLI(t, "", env, "migrate", "--schema", schema, "--status")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Greater(t, len(lines), 2)
	require.Regexp(t, `^COMPONENT\s+VERSION\s+NAME\s+APPLIED$`, lines[0])
	require.Contains(t, r.stdout, "batches_and_results")
	for _, line := range lines[1:] {
		require.True(t, strings.HasSuffix(line, "yes"), "not applied: %s", line)
	}
}

func TestMigrateStatusBeforeMigrate(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.NewSchema(t)
	r := runCLI(t, "", map[string]string{"DATABASE_URL": url, "BATCHCTL_SCHEMA": schema}, "migrate", "--status")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.NotContains(t, r.stdout, "yes")
	require.Contains(t, r.stdout, "river")
}

func TestMigrateErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no database", nil, []string{"migrate"}, exitUsage, "needs a database"},
		{"unreachable database", map[string]string{"DATABASE_URL": "postgres://bob:hunter2@127.0.0.1:1/x?connect_timeout=2"},
			[]string{"migrate"}, exitError, "connect to database"},
		{"bad schema", map[string]string{"DATABASE_URL": "postgres://bob@127.0.0.1:1/x"}, []string{"migrate", "--schema", "No-Good"},
			exitError, "invalid schema name"},
		{"extra argument", nil, []string{"migrate", "now"}, exitUsage, "unknown command"},
		{"bad log level", nil, []string{"--log-level", "loud", "version"}, exitUsage, "invalid --log-level"},
		{"unknown command", nil, []string{"frobnicate"}, exitUsage, "unknown command"},
		{"unknown flag", nil, []string{"version", "--nope"}, exitUsage, "unknown flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, "", tt.env, tt.args...)
			require.Equal(t, tt.wantCode, r.code, r.stderr)
			require.Contains(t, r.stderr, tt.wantErr)
			require.NotContains(t, r.stderr, "hunter2")
			require.Empty(t, r.stdout)
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "", nil, "version")
	require.Equal(t, exitOK, r.code)
	require.Regexp(t, `^batchctl \S+ go1\.\d+`, r.stdout)
}
