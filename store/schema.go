package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidateSchema accepts lower-case unquoted Postgres identifiers only, so a schema name can be spliced into SQL
// without quoting surprises and reads the same in psql. Names starting with pg_ are refused too: Postgres keeps them
// for its system schemas. Whether the name is an SQL keyword depends on the server: CheckSchema asks it.
func ValidateSchema(name string) error {
	if !schemaName.MatchString(name) {
		return fmt.Errorf("invalid schema name %q: use 1-63 lower-case letters, digits and underscores, not starting with a digit", name)
	}
	if strings.HasPrefix(name, "pg_") || name == "information_schema" {
		return fmt.Errorf("invalid schema name %q: names starting with pg_, and information_schema, are Postgres's system schemas", name)
	}
	return nil
}

// Querier runs one query; *pgx.Conn, *pgxpool.Conn and *pgxpool.Pool are all one.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CheckSchema is ValidateSchema, and asks the server whether name is an SQL keyword that cannot stand unquoted as a
// schema name. River splices the schema name into its SQL unquoted, as a table's qualifier (which a reserved
// keyword cannot be: user, left, ...) and as a type's (which no keyword but the unreserved ones can be: time, int,
// values, ...), so such a name would half-migrate and then fail with syntax errors. Only the server's own keyword
// list (pg_get_keywords) is right for every Postgres version.
func CheckSchema(ctx context.Context, db Querier, name string) error {
	if err := ValidateSchema(name); err != nil {
		return err
	}
	var code, desc string
	err := db.QueryRow(ctx, "select catcode::text, catdesc from pg_get_keywords() where word = lower($1)", name).Scan(&code, &desc)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("check schema name %q against the server's keywords: %w", name, err)
	case code == "U": // unreserved: a plain identifier everywhere
		return nil
	}
	return fmt.Errorf("schema name %q is an SQL keyword (%s) to this server, and River's SQL uses the schema name "+
		"unquoted: choose another, such as %q", name, desc, "batchctl_"+name)
}
