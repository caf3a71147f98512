package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/store"
)

// browserTimeout bounds every step of the browser test once the browser runs.
const browserTimeout = 20 * time.Second

// findChromium is the headless Chromium the browser test drives: $BATCHCTL_CHROMIUM, or Debian's
// chromium-headless-shell (scripts/ensure-chromium.sh installs it), or another Chromium on PATH.
func findChromium() string {
	if p := os.Getenv("BATCHCTL_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium-headless-shell", "chromium", "headless_shell", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	for _, p := range []string{"/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/headless_shell"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// skipLoudly skips the test with a message no one can miss, also on stderr, where go test without -v shows it.
func skipLoudly(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := "BROWSER TEST SKIPPED — NOTHING WAS CHECKED IN A BROWSER: " + fmt.Sprintf(format, args...) +
		" (run scripts/ensure-chromium.sh as root, or set BATCHCTL_CHROMIUM)"
	fmt.Fprintln(os.Stderr, "\n"+msg+"\n")
	t.Skip(msg)
}

// browse starts headless Chromium; the test skips loudly when there is none or it cannot start.
func browse(t *testing.T) context.Context {
	t.Helper()
	path := findChromium()
	if path == "" {
		skipLoudly(t, "no headless Chromium found")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1360, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		skipLoudly(t, "Chromium at %s did not start: %v", path, err)
	}
	return ctx
}

// eval runs a JavaScript expression in the page within browserTimeout.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr))
	require.NoError(t, err, expr)
	return v
}

// waitFor polls a JavaScript predicate in the page until it holds, or fails after timeout.
func waitFor(t *testing.T, ctx context.Context, timeout time.Duration, expr string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, timeout+time.Second)
	defer cancel()
	_, err := chromedp.Run(c, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(25*time.Millisecond)))
	require.NoError(t, err, "waiting for %s", expr)
}

// seedDashboard tracks the batches the browser test (and the README's screenshot) shows: batches in flight at
// several stages, one near the end of its window, and ended ones with rows, tokens, cost, errors and a
// resubmission.
func seedDashboard(t *testing.T, s *store.Store) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	at := func(d time.Duration) *time.Time { v := now.Add(-d); return &v }
	batches := []store.Batch{
		{BatchID: "batch_live", Status: store.StatusInProgress, RequestTotal: 400, RequestCompleted: 260, RequestFailed: 12,
			Model: "gpt-4o-mini", Source: "reviews.jsonl", CreatedAt: ago(2 * time.Hour)},
		{BatchID: "batch_6801c1", Status: store.StatusInProgress, RequestTotal: 50000, RequestCompleted: 9400, RequestFailed: 85,
			Model: "gpt-4o-mini", Source: "reviews.jsonl", CreatedAt: ago(21*time.Hour + 30*time.Minute)},
		{BatchID: "batch_6801d7", Status: store.StatusFinalizing, RequestTotal: 12000, RequestCompleted: 11950, RequestFailed: 50,
			Model: "gpt-4.1", Source: "tickets.jsonl", CreatedAt: ago(5 * time.Hour)},
		{BatchID: "batch_6801e2", Status: store.StatusValidating, Model: "text-embedding-3-small", Source: "docs.jsonl",
			CreatedAt: ago(3 * time.Minute)},
		{BatchID: "batch_67ff10", Status: store.StatusExpired, RequestTotal: 20000, RequestCompleted: 17500, RequestFailed: 0,
			Model: "gpt-4o-mini", Source: "reviews.jsonl", CreatedAt: ago(30 * time.Hour), EndedAt: at(6 * time.Hour)},
		{BatchID: "batch_6800a4", Status: store.StatusCompleted, RequestTotal: 2500, RequestCompleted: 2500, RequestFailed: 0,
			Model: "gpt-4.1", Source: "tickets.jsonl", CreatedAt: ago(4 * time.Hour), EndedAt: at(40 * time.Minute),
			RootBatchID: "batch_67ff10", ParentBatchIDs: []string{"batch_67ff10"}, Attempt: 2},
		{BatchID: "batch_6800b9", Status: store.StatusFailed, Model: "gpt-4o-mini", Source: "docs.jsonl",
			CreatedAt: ago(90 * time.Minute), EndedAt: at(89 * time.Minute),
			Errors: json.RawMessage(`{"object":"list","data":[{"code":"invalid_json_line","message":"This line is not parseable as valid JSON.","line":17}]}`)},
	}
	for _, b := range batches {
		_, err := s.TrackBatch(ctx, b)
		require.NoError(t, err)
		_, err = s.UpsertBatch(ctx, b)
		require.NoError(t, err)
	}
	// What the loads would have written.
	_, err := s.Pool().Exec(ctx, `update `+s.Schema()+`.batches set results_loaded_at = ended_at + interval '20 seconds',
		results_count = case batch_id when 'batch_67ff10' then 20000 when 'batch_6800a4' then 2500 else 0 end,
		total_tokens = case batch_id when 'batch_67ff10' then 4210000 when 'batch_6800a4' then 1875000 end,
		cost_usd = case batch_id when 'batch_67ff10' then 0.3159 when 'batch_6800a4' then 2.8125 end,
		resubmitted_as = case batch_id when 'batch_67ff10' then 'batch_6800a4' end
		where ended_at is not null`)
	require.NoError(t, err)
}

// TestServeBrowser drives headless Chromium against batchctl serve on a real Postgres: the dashboard shows the
// tracked batches with their progress, flags the one near expiry, and a status change written as the poller writes
// it (the row and NOTIFY in one transaction) reaches the page through the event stream without a reload.
//
// BATCHCTL_SCREENSHOT=docs/dashboard.png (relative to the repository) writes the README's screenshot.
func TestServeBrowser(t *testing.T) {
	t.Parallel()
	ctx := browse(t)
	s := pgtest.NewStore(t)
	seedDashboard(t, s)
	url, _ := startServe(t, map[string]string{"DATABASE_URL": pgtest.URL(t), "BATCHCTL_SCHEMA": s.Schema()})

	nav, cancel := context.WithTimeout(ctx, browserTimeout)
	require.NoError(t, chromedp.Do(nav, chromedp.Navigate(url)))
	cancel()
	waitFor(t, ctx, 10*time.Second, `document.querySelectorAll("#in-flight tbody tr[data-batch-id]").length === 4`)

	inFlight := eval[[]string](t, ctx, `[...document.querySelectorAll("#in-flight tbody tr")].map(r => r.dataset.batchId)`)
	require.Equal(t, []string{"batch_6801c1", "batch_6801d7", "batch_live", "batch_6801e2"}, inFlight, "oldest in flight first")
	ended := eval[[]string](t, ctx, `[...document.querySelectorAll("#ended tbody tr")].map(r => r.dataset.batchId)`)
	require.Equal(t, []string{"batch_6800a4", "batch_6800b9", "batch_67ff10"}, ended, "latest ended first")

	progress := eval[map[string]string](t, ctx, `(() => {
		const r = document.querySelector('#in-flight tr[data-batch-id="batch_live"]');
		const bar = r.querySelector('[role=progressbar]');
		return {now: bar.getAttribute("aria-valuenow"), max: bar.getAttribute("aria-valuemax"),
			text: r.querySelector("td.progress").textContent, ok: bar.querySelector(".ok").style.width};
	})()`)
	require.Equal(t, map[string]string{"now": "272", "max": "400", "text": "272 / 400 (12 failed)", "ok": "65%"}, progress)
	nearExpiry := eval[[]string](t, ctx, `[...document.querySelectorAll("#in-flight tr.near-expiry")].map(r => r.dataset.batchId)`)
	require.Equal(t, []string{"batch_6801c1"}, nearExpiry, "only the batch with less than 4 h of its window left is highlighted")
	require.Equal(t, "$2.81", eval[string](t, ctx, `document.querySelector('#ended tr[data-batch-id="batch_6800a4"]').children[5].textContent`))
	require.Contains(t, eval[string](t, ctx, `document.querySelector('#ended tr[data-batch-id="batch_6800a4"]').textContent`), "attempt 2 of batch_67ff10")

	// Live: the event stream is up, then the batch ends as a poller would record it.
	waitFor(t, ctx, 10*time.Second, `window.batchctl.live === true`)
	before := eval[int](t, ctx, `window.batchctl.sseEvents`)
	end := time.Now()
	_, err := s.UpsertBatch(context.Background(), store.Batch{BatchID: "batch_live", Status: store.StatusCompleted,
		RequestTotal: 400, RequestCompleted: 388, RequestFailed: 12, EndedAt: &end})
	require.NoError(t, err)
	waitFor(t, ctx, 5*time.Second, `!!document.querySelector('#ended tr[data-batch-id="batch_live"][data-status="completed"]')
		&& !document.querySelector('#in-flight tr[data-batch-id="batch_live"]')`)
	require.Greater(t, eval[int](t, ctx, `window.batchctl.sseEvents`), before, "the update came through the event stream, not a poll")
	require.Equal(t, map[string]string{"completed": "2", "in_progress": "1"}, eval[map[string]string](t, ctx, `(() => {
		const n = (s) => document.querySelector('#totals .total[data-status="' + s + '"] b').textContent;
		return {completed: n("completed"), in_progress: n("in_progress")};
	})()`), "the totals agree with the lists (one snapshot)")

	// The detail view: the failed batch's errors.data line and its number.
	require.NoError(t, chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.querySelector('a[data-batch-id="batch_6800b9"]').click()`)))
	waitFor(t, ctx, 5*time.Second, `!!document.querySelector("#detail-errors tbody tr")`)
	require.Equal(t, []string{"17", "invalid_json_line", "This line is not parseable as valid JSON."},
		eval[[]string](t, ctx, `[...document.querySelectorAll("#detail-errors tbody td")].map(td => td.textContent)`))
	require.NoError(t, chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("detail-close").click()`)))

	if out := os.Getenv("BATCHCTL_SCREENSHOT"); out != "" {
		if !filepath.IsAbs(out) {
			out = filepath.Join("..", "..", out)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(out, png, 0o644))
		t.Logf("wrote %s", out)
	}
}
