package submit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRunIDsSortByStart: the export orders two runs whose first batches the API stamped in the same second by their
// run IDs, so a later run's ID must sort after an earlier one's, however close their starts.
func TestRunIDsSortByStart(t *testing.T) {
	start := time.Date(2026, 12, 3, 8, 0, 0, 999_999_000, time.UTC)
	prev := newRunID(start)
	require.Len(t, prev, 24)
	for _, d := range []time.Duration{time.Microsecond, time.Millisecond, 100 * time.Millisecond, time.Second, 48 * time.Hour} {
		next := newRunID(start.Add(d))
		require.Less(t, prev, next, "a run started %s later", d)
		prev = next
	}
	require.NotEqual(t, newRunID(start), newRunID(start), "runs started at once still differ")
}
