package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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

// TestMigrateRejectsKeywordSchemas: River's SQL splices the schema name in unquoted, so a name the server treats as
// a keyword (user: reserved; left: not a plain name; time: not usable as a type's schema) would half-migrate and
// then fail with syntax errors. migrate refuses it up front, by the server's own keyword list, and creates nothing.
func TestMigrateRejectsKeywordSchemas(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	for _, name := range []string{"user", "left", "time"} {
		t.Run(name, func(t *testing.T) {
			t.Cleanup(func() { _, _ = pool.Exec(ctx, "drop schema if exists "+pgx.Identifier{name}.Sanitize()+" cascade") })
			r := runCLI(t, "", map[string]string{"DATABASE_URL": url}, "migrate", "--schema", name)
			require.Equal(t, exitError, r.code, r.stderr)
			require.Contains(t, errorLine(r.stderr), fmt.Sprintf("schema name %q is an SQL keyword", name))
			require.NotContains(t, r.stderr, "syntax error")
			var n int
			require.NoError(t, pool.QueryRow(ctx, "select count(*) from pg_namespace where nspname = $1", name).Scan(&n))
			require.Zero(t, n, "no schema created")
		})
	}
	r := runCLI(t, "", map[string]string{"DATABASE_URL": url}, "status", "--schema", "user")
	require.Equal(t, exitError, r.code, r.stderr)
	require.Contains(t, errorLine(r.stderr), `schema name "user" is an SQL keyword`, "every command opening the store checks")
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "", nil, "version")
	require.Equal(t, exitOK, r.code)
	require.Regexp(t, `^batchctl \S+ go1\.\d+`, r.stdout)
}
