package poll_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/poll"
)

// lineCutter serves the API, cutting whole downloads of one file at a line boundary, with a Content-Length that
// matches the short body: every line parses and the body ends cleanly, as a server that announced a file complete
// before it was. Only the row count can tell.
type lineCutter struct {
	next   http.Handler
	target atomic.Pointer[string] // the file whose downloads are cut
	cuts   atomic.Int32           // downloads still to cut; negative: every one
	served atomic.Int32           // downloads of the target, cut or whole
}

func (c *lineCutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := c.target.Load()
	if id == nil || r.Method != http.MethodGet || r.URL.Path != "/v1/files/"+*id+"/content" || r.Header.Get("Range") != "" {
		c.next.ServeHTTP(w, r)
		return
	}
	c.served.Add(1)
	switch n := c.cuts.Load(); {
	case n == 0:
		c.next.ServeHTTP(w, r)
		return
	case n > 0:
		c.cuts.Add(-1)
	}
	rec := httptest.NewRecorder()
	c.next.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	cut := bytes.LastIndexByte(body[:len(body)/2], '\n') + 1 // after the last whole line of the first half
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(cut))
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body[:cut])
}

// cutEnv is an env whose API cuts the downloads of one batch's output file, cuts times (negative: always).
func cutEnv(t *testing.T, n int, cuts int32) (*env, *lineCutter, string, []string) {
	t.Helper()
	c := &lineCutter{}
	e := newEnvWrapped(t, emulator.Options{}, func(h http.Handler) http.Handler { c.next = h; return c })
	batchID, ids, _ := e.endedBatch(t, "cut", n)
	rec, ok := e.emu.Batch(batchID)
	require.True(t, ok)
	c.target.Store(&rec.OutputFileID)
	c.cuts.Store(cuts)
	return e, c, batchID, ids
}

// An output file cut at a line boundary, announced complete: the load finds fewer rows than the batch's request
// counts, rolls back, downloads again, and commits every row.
func TestShortDownloadIsDownloadedAgain(t *testing.T) {
	t.Parallel()
	e, c, batchID, ids := cutEnv(t, 60, 1)
	cfg := e.config(t)
	cfg.Metrics = poll.NewMetrics(nil, e.store, cfg.Logger)
	runUntilDone(t, cfg, time.Minute)

	requireExactResults(t, e, batchID, ids)
	require.EqualValues(t, 2, c.served.Load(), "one short download, one whole")
	require.EqualValues(t, 1, counterValue(t, cfg.Metrics.ShortDownloads))
	require.Zero(t, counterValue(t, cfg.Metrics.ShortLoads))
	require.Zero(t, counterValue(t, cfg.Metrics.LoadMismatches))
	state, attempt := e.loadJob(t, batchID)
	require.Equal(t, "completed", state)
	require.Equal(t, 1, attempt, "downloaded again within the same attempt")
}

// A file that comes short every time is downloaded MaxLoadDownloads times, no more, and then the rows there are
// are committed, loudly: counted, and results_count below the request counts for status to show.
func TestShortEveryTimeIsCommittedLoudly(t *testing.T) {
	t.Parallel()
	e, c, batchID, _ := cutEnv(t, 60, -1)
	cfg := e.config(t)
	cfg.Metrics = poll.NewMetrics(nil, e.store, cfg.Logger)
	runUntilDone(t, cfg, time.Minute)

	require.EqualValues(t, poll.MaxLoadDownloads, c.served.Load(), "bounded")
	require.EqualValues(t, poll.MaxLoadDownloads-1, counterValue(t, cfg.Metrics.ShortDownloads))
	require.EqualValues(t, 1, counterValue(t, cfg.Metrics.ShortLoads))
	require.EqualValues(t, 1, counterValue(t, cfg.Metrics.LoadMismatches))
	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.NotNil(t, b.ResultsLoadedAt)
	require.NotNil(t, b.ResultsCount)
	rows := len(e.results(t, batchID))
	require.Equal(t, rows, *b.ResultsCount)
	require.Less(t, rows, b.ExpectedRows())
	require.Positive(t, rows)
	require.Equal(t, 60, b.ExpectedRows())
}
