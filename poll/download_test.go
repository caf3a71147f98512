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

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
	"github.com/batchctl/batchctl/store"
)

// Every download is cut short (Content-Length announces more than is sent): each resumes from the byte it reached
// with a Range request, and the load finishes in its first attempt with every row exactly once.
func TestCutDownloadsResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{Seed: 3})
	batchID, ids, jobID := e.endedBatch(t, "cut", 300)
	e.emu.SetFaults(emulator.Faults{TruncateDownloadRate: 1})

	runUntilDone(t, e.config(t), time.Minute)

	requireExactResults(t, e, batchID, ids)
	st := e.emu.Stats()
	require.Positive(t, st.TruncatedDownloads)
	require.Positive(t, st.RangeDownloads, "cut downloads resumed with Range")
	var attempt int
	require.NoError(t, e.store.Pool().QueryRow(context.Background(), `select attempt from `+e.store.Schema()+`.river_job where id = $1`,
		jobID).Scan(&attempt))
	require.Equal(t, 1, attempt, "the load did not start over")
	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.Equal(t, store.StatusCompleted, b.Status)
}

// The output download is cut at a line boundary, and its resume finds the connection closed before any answer
// (the client retries nothing here): the load fails and is tried again, which reads the whole file. A resume that
// failed must never read as the end of the file, loading the lines before the cut as all of the batch's results.
func TestCutDownloadWhoseResumeFailsIsRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{Seed: 4})
	batchID, ids, _ := e.endedBatch(t, "unresumed", 200)
	rec, ok := e.emu.Batch(batchID)
	require.True(t, ok)
	content := "/v1/files/" + rec.OutputFileID + "/content"

	var calls atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != content {
			e.emu.ServeHTTP(w, r)
			return
		}
		switch calls.Add(1) {
		case 1: // the first half of the file, up to a newline, under a Content-Length that announces all of it
			full := httptest.NewRecorder()
			e.emu.ServeHTTP(full, r)
			body := full.Body.Bytes()
			cut := bytes.LastIndexByte(body[:len(body)/2], '\n') + 1
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(full.Code)
			_, _ = w.Write(body[:cut])
			_ = http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		case 2: // the resume: the connection closes before any answer
			panic(http.ErrAbortHandler)
		}
		e.emu.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	cfg := e.config(t)
	api := openai.NewClient(option.WithBaseURL(ts.URL+"/v1"), option.WithAPIKey("test-key"), option.WithMaxRetries(0))
	cfg.Providers = oaiprov.Set(&batchapi.Client{API: &api})

	runUntilDone(t, cfg, time.Minute)

	require.Len(t, e.results(t, batchID), len(ids), "rows loaded") // without the row dump of requireExactResults
	requireExactResults(t, e, batchID, ids)
	require.GreaterOrEqual(t, calls.Load(), int32(3), "the load read the file again after the failed resume")
}
