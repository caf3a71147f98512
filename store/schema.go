package store

import (
	"fmt"
	"regexp"
)

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidateSchema accepts lower-case unquoted Postgres identifiers only, so a schema name can be spliced into SQL
// without quoting surprises and reads the same in psql.
func ValidateSchema(name string) error {
	if !schemaName.MatchString(name) {
		return fmt.Errorf("invalid schema name %q: use 1-63 lower-case letters, digits and underscores, not starting with a digit", name)
	}
	return nil
}
