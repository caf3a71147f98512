package migrations_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.URL(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// freshSchemaName names a schema that does not exist yet and drops it after the test.
func freshSchemaName(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "mig_" + hex.EncodeToString(b[:])
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "drop schema if exists "+name+" cascade") })
	return name
}

func TestUpIsIdempotentAndStatusReportsIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	schema := freshSchemaName(t, pool)

	before, err := migrations.Status(ctx, pool, schema)
	require.NoError(t, err)
	require.NotEmpty(t, before)
	for _, m := range before {
		require.False(t, m.Applied, "%s %d applied before migrate", m.Component, m.Version)
	}

	applied, err := migrations.Up(ctx, pool, schema, nil)
	require.NoError(t, err)
	require.Len(t, applied, len(before), "the first run applies every migration")

	again, err := migrations.Up(ctx, pool, schema, nil)
	require.NoError(t, err)
	require.Empty(t, again, "a second run applies nothing")

	after, err := migrations.Status(ctx, pool, schema)
	require.NoError(t, err)
	components := map[string]int{}
	for _, m := range after {
		require.True(t, m.Applied, "%s %d %s", m.Component, m.Version, m.Name)
		components[m.Component]++
	}
	require.Positive(t, components["river"])
	require.Positive(t, components["batchctl"])

	for _, table := range []string{"batches", "results", "river_job", "river_queue"} {
		var ok bool
		require.NoError(t, pool.QueryRow(ctx, "select to_regclass($1) is not null", schema+"."+table).Scan(&ok))
		require.True(t, ok, "table %s.%s exists", schema, table)
	}
}

func TestConcurrentUpBothSucceed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	schema := freshSchemaName(t, pool)

	const runs = 4
	errs := make([]error, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() {
			// Separate pools: separate sessions, as separate processes would have.
			p, err := pgxpool.New(ctx, pgtest.URL(t))
			if err != nil {
				errs[i] = err
				return
			}
			defer p.Close()
			_, errs[i] = migrations.Up(ctx, p, schema, nil)
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	status, err := migrations.Status(ctx, pool, schema)
	require.NoError(t, err)
	for _, m := range status {
		require.True(t, m.Applied)
	}
}

func TestUpRejectsBadSchemaName(t *testing.T) {
	t.Parallel()
	_, err := migrations.Up(context.Background(), newPool(t), `x"; drop table y; --`, nil)
	require.ErrorContains(t, err, "invalid schema name")
}

// TestUpRejectsKeywordSchemaNames: a name the server calls a keyword is refused before the schema or any table is
// created; an unreserved keyword (a plain identifier to the parser) is fine.
func TestUpRejectsKeywordSchemaNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	for _, name := range []string{"user", "left", "time"} {
		t.Cleanup(func() { _, _ = pool.Exec(ctx, "drop schema if exists "+pgx.Identifier{name}.Sanitize()+" cascade") })
		_, err := migrations.Up(ctx, pool, name, nil)
		require.ErrorContains(t, err, fmt.Sprintf("schema name %q is an SQL keyword", name))
		var n int
		require.NoError(t, pool.QueryRow(ctx, "select count(*) from pg_namespace where nspname = $1", name).Scan(&n))
		require.Zero(t, n, "schema %s created", name)
		_, err = migrations.Status(ctx, pool, name)
		require.ErrorContains(t, err, "SQL keyword")
	}
}
