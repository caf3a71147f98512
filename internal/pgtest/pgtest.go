package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batchctl/batchctl/migrations"
	"github.com/batchctl/batchctl/store"
)

// databaseURL is the server the package's tests use, set by Main.
var databaseURL string

// Main runs a package's tests against DATABASE_URL, or against a throwaway cluster started for the run when
// DATABASE_URL is unset. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if url := os.Getenv("DATABASE_URL"); url != "" {
		databaseURL = url
		return m.Run()
	}
	c, err := Start(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: start a throwaway Postgres: %v\n", err)
		return 1
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop Postgres: %v\n", err)
		}
	}()
	databaseURL = c.URL()
	return m.Run()
}

// URL is the database URL the tests run against. It fails the test when the package's TestMain does not call Main.
func URL(t testing.TB) string {
	t.Helper()
	if databaseURL == "" {
		t.Fatal("pgtest: no database: call pgtest.Main(m) from TestMain")
	}
	return databaseURL
}

// NewSchema creates a fresh schema, empty, for one test and drops it when the test ends, so tests never see each
// other's rows. It returns the database URL and the schema name.
func NewSchema(t testing.TB) (url, schema string) {
	t.Helper()
	url = URL(t)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema = "test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "create schema "+schema); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Errorf("pgtest: connect to drop schema %s: %v", schema, err)
			return
		}
		defer pool.Close()
		if _, err := pool.Exec(ctx, "drop schema "+schema+" cascade"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", schema, err)
		}
	})
	return url, schema
}

// MigratedSchema is NewSchema with River's and batchctl's migrations applied.
func MigratedSchema(t testing.TB) (url, schema string) {
	t.Helper()
	url, schema = NewSchema(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer pool.Close()
	if _, err := migrations.Up(ctx, pool, schema, nil); err != nil {
		t.Fatalf("pgtest: migrate schema %s: %v", schema, err)
	}
	return url, schema
}

// NewStore opens a store on a fresh migrated schema (MigratedSchema) and closes it when the test ends.
func NewStore(t testing.TB) *store.Store {
	t.Helper()
	url, schema := MigratedSchema(t)
	s, err := store.Open(context.Background(), url, schema)
	if err != nil {
		t.Fatalf("pgtest: open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}
