// Package migrations holds the SQL migrations of batchctl's own tables, embedded in the binary, and applies them
// together with River's migrations inside one Postgres schema.
//
// The app's migrations run through jackc/tern; River's through rivermigrate. Up holds a Postgres advisory lock for
// the whole run, so two processes migrating the same schema at once serialise instead of colliding.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/batchctl/batchctl/store"
)

//go:embed sql/*.sql
var sqlFiles embed.FS

// versionTable is tern's bookkeeping table, created inside the target schema.
const versionTable = "batchctl_schema_version"

// Migration is one migration and whether it is applied.
type Migration struct {
	Component string // "river" or "batchctl"
	Version   int
	Name      string
	Applied   bool
}

// Up creates schema when missing and applies every pending River and batchctl migration in it. It is idempotent,
// and concurrent calls for the same schema wait for each other. It returns the migrations it applied. A schema name
// store.CheckSchema refuses (an SQL keyword to this server) is refused before anything is created.
func Up(ctx context.Context, pool *pgxpool.Pool, schema string, logger *slog.Logger) ([]Migration, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := store.ValidateSchema(schema); err != nil {
		return nil, err
	}
	pooled, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire connection: %w", err)
	}
	// The connection leaves the pool and is closed at the end: closing the session is what releases the advisory
	// lock, whatever state the run ends in.
	conn := pooled.Hijack()
	defer conn.Close(context.Background())

	// Before anything is created: River's SQL would fail on a keyword half way through.
	if err := store.CheckSchema(ctx, conn, schema); err != nil {
		return nil, err
	}
	if err := lock(ctx, conn, schema); err != nil {
		return nil, err
	}

	if _, err := conn.Exec(ctx, "create schema if not exists "+pgx.Identifier{schema}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create schema %s: %w", schema, err)
	}

	var applied []Migration
	rm, err := riverMigrator(pool, schema, logger)
	if err != nil {
		return nil, err
	}
	res, err := rm.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return nil, fmt.Errorf("apply River migrations in schema %s: %w", schema, err)
	}
	for _, v := range res.Versions {
		applied = append(applied, Migration{Component: "river", Version: v.Version, Name: v.Name, Applied: true})
	}

	tm, err := ternMigrator(ctx, conn, schema)
	if err != nil {
		return nil, err
	}
	tm.OnStart = func(seq int32, name, _, _ string) {
		logger.Info("applying migration", "component", "batchctl", "version", seq, "name", name, "schema", schema)
		applied = append(applied, Migration{Component: "batchctl", Version: int(seq), Name: name, Applied: true})
	}
	if err := tm.Migrate(ctx); err != nil {
		return nil, fmt.Errorf("apply batchctl migrations in schema %s: %w", schema, err)
	}
	return applied, nil
}

// Status lists every River and batchctl migration and whether it is applied in schema.
func Status(ctx context.Context, pool *pgxpool.Pool, schema string) ([]Migration, error) {
	if err := store.ValidateSchema(schema); err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	if err := store.CheckSchema(ctx, conn, schema); err != nil {
		return nil, err
	}

	var exists bool
	if err := conn.QueryRow(ctx, "select exists (select 1 from pg_namespace where nspname = $1)", schema).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up schema %s: %w", schema, err)
	}

	var out []Migration
	rm, err := riverMigrator(pool, schema, nil)
	if err != nil {
		return nil, err
	}
	appliedRiver := map[int]bool{}
	if exists {
		var tableExists bool
		if err := conn.QueryRow(ctx, "select to_regclass($1) is not null", schema+".river_migration").Scan(&tableExists); err != nil {
			return nil, fmt.Errorf("look up River's migration table: %w", err)
		}
		if tableExists {
			existing, err := rm.ExistingVersions(ctx)
			if err != nil {
				return nil, fmt.Errorf("read River migrations in schema %s: %w", schema, err)
			}
			for _, m := range existing {
				appliedRiver[m.Version] = true
			}
		}
	}
	for _, m := range rm.AllVersions() {
		out = append(out, Migration{Component: "river", Version: m.Version, Name: m.Name, Applied: appliedRiver[m.Version]})
	}

	names, err := migrate.FindMigrations(sqlDir())
	if err != nil {
		return nil, fmt.Errorf("list embedded migrations: %w", err)
	}
	current := int32(0)
	if exists {
		var tableExists bool
		if err := conn.QueryRow(ctx, "select to_regclass($1) is not null", schema+"."+versionTable).Scan(&tableExists); err != nil {
			return nil, fmt.Errorf("look up %s: %w", versionTable, err)
		}
		if tableExists {
			if err := conn.QueryRow(ctx, "select version from "+schema+"."+versionTable).Scan(&current); err != nil {
				return nil, fmt.Errorf("read batchctl migration version: %w", err)
			}
		}
	}
	for i, name := range names {
		out = append(out, Migration{Component: "batchctl", Version: i + 1, Name: name, Applied: int32(i+1) <= current})
	}
	return out, nil
}

func riverMigrator(pool *pgxpool.Pool, schema string, logger *slog.Logger) (*rivermigrate.Migrator[pgx.Tx], error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: schema, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("create River migrator: %w", err)
	}
	return m, nil
}

func ternMigrator(ctx context.Context, conn *pgx.Conn, schema string) (*migrate.Migrator, error) {
	m, err := migrate.NewMigrator(ctx, conn, schema+"."+versionTable)
	if err != nil {
		return nil, fmt.Errorf("create migrator: %w", err)
	}
	// Migrations name their tables {{.schema}}.x so that one database can hold several batchctl schemas.
	m.Data["schema"] = pgx.Identifier{schema}.Sanitize()
	if err := m.LoadMigrations(sqlDir()); err != nil {
		return nil, fmt.Errorf("load embedded migrations: %w", err)
	}
	return m, nil
}

func sqlDir() fs.FS {
	sub, err := fs.Sub(sqlFiles, "sql")
	if err != nil {
		panic(err) // the embedded directory is fixed at build time
	}
	return sub
}

// lock takes a session advisory lock keyed by the schema name; it lasts until conn closes.
func lock(ctx context.Context, conn *pgx.Conn, schema string) error {
	h := fnv.New64a()
	h.Write([]byte("batchctl migrate " + schema))
	if _, err := conn.Exec(ctx, "select pg_advisory_lock($1)", int64(h.Sum64())); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	return nil
}
