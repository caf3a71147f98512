package poll_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/poll"
	"github.com/batchctl/batchctl/store"
)

// While the bulk refresh keeps the rows of the batches in flight current, their poll jobs make no GET: the calls of
// a period stay about N/100 list calls, not one GET per batch whose poll fell due just before a refresh round.
func TestPollJobsLeaveBatchesToTheRefresh(t *testing.T) {
	t.Parallel()
	// Batches in flight for about 9 s: their poll jobs, first due 5 s after tracking, run several times each.
	e := newEnv(t, emulator.Options{PhaseDelay: 3 * time.Second})
	const n = 20
	var ids []string
	for i := range n {
		body, _ := requestFile(fmt.Sprintf("r%d", i), "gpt-4o-mini", 3)
		ids = append(ids, e.submit(t, body))
	}
	cfg := e.config(t)
	// Half a second a period: a round held up for two periods (1 s) by the rest of the suite running beside it is
	// rare; at 100 ms a hiccup of 200 ms sent every poll job to the API at once.
	cfg.Interval = poll.Interval{Min: 500 * time.Millisecond, Max: time.Second}
	runUntilDone(t, cfg, time.Minute)

	st := e.emu.Stats()
	t.Logf("%d list calls, %d GETs for %d batches", st.BatchLists, st.BatchGets, n)
	// A refresh held up for two periods on this busy machine may leave a few batches to their polls; one GET per
	// batch in flight per period would be hundreds.
	require.LessOrEqual(t, st.BatchGets, n/2)
	for _, id := range ids {
		b, err := e.store.GetBatch(context.Background(), id)
		require.NoError(t, err)
		require.NotNil(t, b.ResultsLoadedAt, id)
	}
}

// A batch the emulator could not carry through (its disk failed) ends failed with its server_error, and the poller
// records it so: failed, with the error, never completed and loaded as an empty batch.
func TestInternalFailureRecordedFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{DiskFailRate: 1})
	body, _ := requestFile("disk", "gpt-4o-mini", 20)
	batchID := e.submit(t, body)
	runUntilDone(t, e.config(t), time.Minute)

	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, b.Status)
	require.Contains(t, string(b.Errors), emulator.CodeServerError)
	require.Empty(t, e.results(t, batchID))
	require.Equal(t, 1, e.emu.Stats().InternalFailures)
}

// A poller that starts with batches in flight makes no GET for them while its first bulk refresh round is still
// running, however long that round takes: the round is about to read them. At 10 000 batches the first round takes
// longer than two periods, and the poll jobs falling due meanwhile each made the GET the round then made again.
func TestPollJobsWaitForARunningRefreshRound(t *testing.T) {
	t.Parallel()
	const listDelay = 8 * time.Second // past the first poll of every batch (store's 5 s delay after tracking)
	var slowLists atomic.Bool
	slowLists.Store(true)
	// The batches end 6 s after creation, before the slow round's answer: that answer (or a poll job's GET) is the
	// first to record their progress.
	e := newEnvWrapped(t, emulator.Options{PhaseDelay: 2 * time.Second}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && r.URL.Path == "/v1/batches" && slowLists.Load() {
				time.Sleep(listDelay)
			}
			h.ServeHTTP(w, r)
		})
	})
	const n = 5
	for i := range n {
		body, _ := requestFile(fmt.Sprintf("slow%d", i), "gpt-4o-mini", 2)
		e.submit(t, body)
	}
	cfg := e.config(t)
	cfg.Interval = poll.Interval{Min: 200 * time.Millisecond, Max: 400 * time.Millisecond}
	cfg.ExitWhenDone = false
	stop := runDaemon(t, cfg)
	defer func() { require.NoError(t, stop()) }()

	// Until the first round's list call returns, every poll job has fallen due at least once.
	require.Eventually(t, func() bool { return e.emu.Stats().BatchLists >= 1 }, 30*time.Second, 20*time.Millisecond)
	slowLists.Store(false)
	require.Eventually(t, func() bool {
		var updated int
		require.NoError(t, e.store.Pool().QueryRow(context.Background(),
			`select count(*) from `+e.store.Schema()+`.batches where status <> 'validating'`).Scan(&updated))
		return updated == n
	}, 30*time.Second, 20*time.Millisecond, "the first round records the batches' progress")
	require.Zero(t, e.emu.Stats().BatchGets, "no poll job GETs a batch while the refresh round that will read it runs")
}
