package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/store"
)

// The LOADED column says how a batch's load went: its rows, rows short of the request counts, or lost results.
func TestLoadedCell(t *testing.T) {
	t.Parallel()
	now := time.Now()
	n := func(v int) *int { return &v }
	completed := store.Batch{Status: store.StatusCompleted, RequestTotal: 1000, RequestCompleted: 990, RequestFailed: 10}
	with := func(f func(*store.Batch)) store.Batch { b := completed; f(&b); return b }
	tests := []struct {
		name string
		b    store.Batch
		want string
	}{
		{"not loaded yet", completed, "-"},
		{"every row", with(func(b *store.Batch) { b.ResultsLoadedAt, b.ResultsCount = &now, n(1000) }), "1000"},
		{"short of the request counts", with(func(b *store.Batch) { b.ResultsLoadedAt, b.ResultsCount = &now, n(998) }), "998 (short 2)"},
		{"output expired before the load", with(func(b *store.Batch) { b.ResultsLostAt = &now }), "lost: output expired"},
		{"cancelled: the rows it answered", store.Batch{Status: store.StatusCancelled, RequestTotal: 10, RequestCompleted: 4,
			ResultsLoadedAt: &now, ResultsCount: n(4)}, "4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, loadedCell(tt.b))
		})
	}
}
