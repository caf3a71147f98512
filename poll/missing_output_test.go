package poll

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/store"
)

// A completed batch is loaded only from files that can hold its requests: one that answered requests needs its
// output file, and one with requests needs at least one file; until then its load waits (awaitOutput).
func TestMissingOutput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		row  store.Batch
		want bool
	}{
		{"answered, output file", store.Batch{Status: store.StatusCompleted, RequestTotal: 20, RequestCompleted: 20, OutputFileID: "file-o"}, false},
		{"answered, no output file yet", store.Batch{Status: store.StatusCompleted, RequestTotal: 20, RequestCompleted: 20}, true},
		{"answered some, only the error file", store.Batch{Status: store.StatusCompleted, RequestTotal: 20, RequestCompleted: 5, RequestFailed: 15, ErrorFileID: "file-e"}, true},
		{"every request failed, error file", store.Batch{Status: store.StatusCompleted, RequestTotal: 20, RequestFailed: 20, ErrorFileID: "file-e"}, false},
		// What an emulator out of file descriptors reported: nothing done, nothing to read.
		{"requests, 0 done, no file at all", store.Batch{Status: store.StatusCompleted, RequestTotal: 20}, true},
		{"no requests", store.Batch{Status: store.StatusCompleted}, false},
		{"failed validation, no file", store.Batch{Status: store.StatusFailed, RequestTotal: 20}, false},
		{"expired, nothing answered", store.Batch{Status: store.StatusExpired, RequestTotal: 20}, false},
		{"cancelled, nothing answered", store.Batch{Status: store.StatusCancelled, RequestTotal: 20}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, missingOutput(tc.row))
		})
	}
}
