package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// ConnectTimeout bounds the first connection made by Open.
const ConnectTimeout = 10 * time.Second

// DefaultMaxConns is the pool size of Open when the URL sets no pool_max_conns: connections are opened as needed,
// up to this many.
const DefaultMaxConns = 16

// Errors callers check with errors.Is.
var (
	// ErrNotFound: no row for the given key.
	ErrNotFound = errors.New("not found")
	// ErrNotMigrated: the schema lacks batchctl's tables; run batchctl migrate.
	ErrNotMigrated = errors.New("schema is not migrated (run: batchctl migrate)")
	// ErrAlreadyLoaded: the batch's results were loaded before.
	ErrAlreadyLoaded = errors.New("results already loaded")
)

// Store is batchctl's access to Postgres: the batch-ID table, the results table and River's job table, all in one
// schema. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	schema string
	river  *river.Client[pgx.Tx] // insert-only: it never works jobs
}

// Open connects to databaseURL and checks the connection, and the schema name against the server's SQL keywords
// (CheckSchema). The error never repeats the URL's password.
func Open(ctx context.Context, databaseURL, schema string) (*Store, error) {
	if err := ValidateSchema(schema); err != nil {
		return nil, err
	}
	if databaseURL == "" {
		return nil, errors.New("no database configured: set --database-url or DATABASE_URL")
	}
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("invalid database URL: %s", redact(err.Error(), databaseURL))
	}
	if !strings.Contains(databaseURL, "pool_max_conns") {
		// pgx's default (the larger of 4 and the CPUs) is smaller than a poller's workers plus River's own
		// producer, completer and elector: they would queue for connections under load.
		cfg.MaxConns = max(cfg.MaxConns, DefaultMaxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %s", redact(err.Error(), databaseURL))
	}
	pingCtx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s: %s", describe(cfg), redact(err.Error(), databaseURL))
	}
	if err := CheckSchema(ctx, pool, schema); err != nil {
		pool.Close()
		return nil, err
	}
	return NewFromPool(pool, schema)
}

// NewFromPool wraps an existing pool; Close closes it.
func NewFromPool(pool *pgxpool.Pool, schema string) (*Store, error) {
	if err := ValidateSchema(schema); err != nil {
		return nil, err
	}
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Schema: schema})
	if err != nil {
		return nil, fmt.Errorf("create River client: %w", err)
	}
	return &Store{pool: pool, schema: schema, river: rc}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool is the connection pool, for River clients that work jobs.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Schema is the Postgres schema holding batchctl's and River's tables.
func (s *Store) Schema() string { return s.schema }

// table returns the schema-qualified name of one of batchctl's tables.
func (s *Store) table(name string) string { return s.schema + "." + name }

// translate turns Postgres errors into this package's errors; what stays a *pgconn.PgError is wrapped with op.
func translate(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") { // undefined_table, invalid_schema_name
		return fmt.Errorf("%s: %w: %s", op, ErrNotMigrated, pgErr.Message)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func describe(cfg *pgxpool.Config) string {
	return fmt.Sprintf("host=%s port=%d user=%s database=%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.User, cfg.ConnConfig.Database)
}

var passwordPatterns = []*regexp.Regexp{
	regexp.MustCompile(`://[^:/@\s]*:([^@\s]*)@`),
	regexp.MustCompile(`password=('[^']*'|\S+)`),
}

// redact removes from msg any password found in rawURL, whatever shape the message quotes it in.
func redact(msg, rawURL string) string {
	for _, re := range passwordPatterns {
		for _, m := range re.FindAllStringSubmatch(rawURL, -1) {
			if pw := strings.Trim(m[1], "'"); pw != "" {
				msg = strings.ReplaceAll(msg, pw, "xxxxx")
			}
		}
	}
	return msg
}

// CheckMigrated fails with ErrNotMigrated unless the schema holds batchctl's tables and River's: a submit checks
// it before it uploads anything, so a wrong --schema costs no batch.
func (s *Store) CheckMigrated(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `select 1 from `+s.table("batches")+` limit 0; select 1 from `+s.table("river_job")+` limit 0`)
	return translate("check schema "+s.schema, err)
}
