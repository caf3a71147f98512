package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/store"
)

// webhookSecret is a Standard Webhooks secret as OpenAI issues them.
const webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

var servingURL = regexp.MustCompile(`msg="serving the dashboard" url=(http://\S+/)`)

// background is a batchctl command running until the test ends.
type background struct {
	stderr *syncBuffer
	done   chan int
}

// startCLI runs batchctl in-process in the background; the test's end cancels it (SIGINT) and waits for it.
func startCLI(t *testing.T, env map[string]string, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bg := &background{stderr: &syncBuffer{}, done: make(chan int, 1)}
	go func() {
		bg.done <- run(ctx, args, &IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: bg.stderr},
			func(k string) string { return env[k] })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-bg.done:
		case <-time.After(30 * time.Second):
			t.Errorf("batchctl %s did not stop; stderr:\n%s", args[0], bg.stderr.String())
		}
	})
	return bg
}

// startServe runs batchctl serve on a free loopback port and returns the dashboard's URL once it serves.
func startServe(t *testing.T, env map[string]string, args ...string) (string, *background) {
	t.Helper()
	bg := startCLI(t, env, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	var url string
	require.Eventually(t, func() bool {
		select {
		case code := <-bg.done:
			t.Fatalf("serve exited %d: %s", code, bg.stderr.String())
		default:
		}
		if m := servingURL.FindStringSubmatch(bg.stderr.String()); m != nil {
			url = m[1]
			return true
		}
		return false
	}, 15*time.Second, 10*time.Millisecond, "serve never said where it serves")
	return url, bg
}

func TestServeRefusesAPublicAddressWithoutAToken(t *testing.T) {
	t.Parallel()
	s := pgtest.NewStore(t)
	env := map[string]string{"DATABASE_URL": pgtest.URL(t), "BATCHCTL_SCHEMA": s.Schema()}
	r := runCLI(t, "", env, "serve", "--addr", "0.0.0.0:0")
	require.Equal(t, exitUsage, r.code, r.stderr)
	require.Contains(t, r.stderr, "needs --auth-token")

	env["BATCHCTL_HTTP_TOKEN"] = "tok"
	env["BATCHCTL_HTTP_ADDR"] = "0.0.0.0:0"
	bg := startCLI(t, env, "serve")
	require.Eventually(t, func() bool { return strings.Contains(bg.stderr.String(), "serving the dashboard") }, 15*time.Second, 10*time.Millisecond,
		"with a token (env BATCHCTL_HTTP_TOKEN), any address (env BATCHCTL_HTTP_ADDR) is served")
}

// TestServeMetricsAreThePollersRegistry: serve's /metrics carries the metrics of poll --metrics-addr, read from the
// database.
func TestServeMetricsAreThePollersRegistry(t *testing.T) {
	t.Parallel()
	s := pgtest.NewStore(t)
	_, err := s.TrackBatch(context.Background(), store.Batch{BatchID: "batch_m", Status: store.StatusInProgress})
	require.NoError(t, err)
	url, _ := startServe(t, map[string]string{"DATABASE_URL": pgtest.URL(t), "BATCHCTL_SCHEMA": s.Schema()})
	resp, err := http.Get(url + "metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`batchctl_batches{status="in_progress"} 1`, "batchctl_result_rows_loaded_total 0", "go_goroutines"} {
		require.Contains(t, string(body), want)
	}
}

// waitFirstRefresh waits for a new poller's first periodic bulk refresh (River runs it once a leader is elected,
// a moment after start) to be over: with --poll-interval 1m, no other comes during the test, so whatever sees a
// batch end next is the webhook's job or the batch's own poll.
func waitFirstRefresh(t *testing.T, e *apiEnv) {
	t.Helper()
	require.Eventually(t, func() bool {
		return e.count(t, `select count(*) from $schema.river_job where kind = 'batchctl_refresh' and state = 'completed'`) > 0
	}, 20*time.Second, 20*time.Millisecond, "the poller's first bulk refresh")
}

// TestWebhookLoadsResultsAtOnce: the emulator sends batch.completed to serve, whose refresh job a poller with a
// one-minute interval works at once: the results are loaded seconds after the end, by the webhook's refresh, where
// polling would have waited for the batch's next poll.
func TestWebhookLoadsResultsAtOnce(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	// Three phases of 2 s: the batch ends 6 s after its creation, after track (a process of its own, slow on a busy
	// machine) has recorded it in flight, and after its poll job's first GET (5 s after track), which then waits a
	// minute: a webhook for a batch not tracked yet is ignored, and one for a batch track saw end changes nothing.
	e := newAPIEnv(t, emulator.Options{PhaseDelay: 2 * time.Second,
		WebhookURL: "http://" + addr + "/webhooks/openai", WebhookSecret: webhookSecret})
	e.env["BATCHCTL_WEBHOOK_SECRET"] = webhookSecret
	bg := startCLI(t, e.env, "serve", "--addr", addr)
	require.Eventually(t, func() bool { return strings.Contains(bg.stderr.String(), "serving the dashboard") }, 15*time.Second, 10*time.Millisecond)
	poller := startCLI(t, e.env, "poll", "--poll-interval", "1m", "--fetch-interval", "50ms")
	waitFirstRefresh(t, e)

	_, batchID := e.createBatch(t, "w", 6, 0)
	require.Equal(t, exitOK, runCLI(t, "", e.env, "track", batchID).code)
	require.Equal(t, 1, e.count(t, `select count(*) from $schema.batches where batch_id = $1
		and status not in ('completed', 'failed', 'expired', 'cancelled')`, batchID), "the batch must end after track")
	start := time.Now()
	require.Eventually(t, func() bool {
		return e.count(t, `select count(*) from $schema.batches where batch_id = $1 and results_loaded_at is not null`, batchID) == 1
	}, 20*time.Second, 20*time.Millisecond, "poller: %s\nserve: %s", poller.stderr.String(), bg.stderr.String())
	t.Logf("ended and loaded %v after track", time.Since(start).Round(time.Millisecond))
	require.Equal(t, 6, e.count(t, `select count(*) from $schema.results where batch_id = $1`, batchID))
	require.Contains(t, poller.stderr.String(), "batch ended (webhook)", "the webhook's refresh saw the end, not a poll")
	require.Contains(t, bg.stderr.String(), "result=queued")
	require.Equal(t, 1, e.count(t, `select count(*) from $schema.river_job where kind = 'batchctl_refresh_batch'`))
	require.Equal(t, 1, e.emu.Stats().WebhooksDelivered)
}

// TestPollServesTheWebSurface: poll --http serves the dashboard from inside the poller, and its /metrics is the
// poller's own registry (its API call counters move).
func TestPollServesTheWebSurface(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t, emulator.Options{})
	_, batchID := e.createBatch(t, "h", 3, 0)
	require.Equal(t, exitOK, runCLI(t, "", e.env, "track", batchID).code)
	addr := freeAddr(t)
	poller := startCLI(t, e.env, "poll", "--poll-interval", "50ms,500ms", "--fetch-interval", "50ms", "--http", addr)
	body := scrapeUntil(t, addr, "batchctl_result_rows_loaded_total 3", 20*time.Second, "poller: %s", poller.stderr.String())
	require.Contains(t, body, `batchctl_api_calls_total{kind="download"}`)

	resp, err := http.Get("http://" + addr + "/api/dashboard")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(b), batchID)
	require.Contains(t, string(b), `"rows_loaded":3`)

	for _, path := range []string{"/", "/api/dashboard", "/api/batches/" + batchID, "/metrics"} {
		resp, err := http.Get("http://" + addr + path)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NotContains(t, string(b), "sk-test-secret", "%s never shows the API key", path)
	}
}

func TestEmulatorWebhookURLNeedsASecret(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "", map[string]string{}, "emulator", "--addr", "127.0.0.1:0", "--webhook-url", "http://127.0.0.1:1/webhooks/openai")
	require.Equal(t, exitUsage, r.code, r.stderr)
	require.Contains(t, r.stderr, "--webhook-url needs --webhook-secret")
}

// TestDashboardCancelReachesTheAPI: with --allow-actions, the cancel button's request (CSRF token from the page's
// data) queues a job that a poller works: the API gets the cancel, and the row records it. serve holds no API key.
func TestDashboardCancelReachesTheAPI(t *testing.T) {
	t.Parallel()
	// Three phases of 5 s: the batch is still in flight when the cancel comes, after track, serve and a poller have
	// started as processes of their own on a busy machine.
	e := newAPIEnv(t, emulator.Options{PhaseDelay: 5 * time.Second})
	_, batchID := e.createBatch(t, "c", 3, 0)
	require.Equal(t, exitOK, runCLI(t, "", e.env, "track", batchID).code)
	serveEnv := map[string]string{"DATABASE_URL": e.env["DATABASE_URL"], "BATCHCTL_SCHEMA": e.schema}
	url, _ := startServe(t, serveEnv, "--allow-actions")
	poller := startCLI(t, e.env, "poll", "--poll-interval", "1m", "--fetch-interval", "50ms")

	resp, err := http.Get(url + "api/dashboard")
	require.NoError(t, err)
	var d struct {
		CSRF string `json:"csrf"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&d))
	resp.Body.Close()
	req, err := http.NewRequest(http.MethodPost, url+"api/batches/"+batchID+"/cancel", nil)
	require.NoError(t, err)
	req.Header.Set("X-Batchctl-CSRF", d.CSRF)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	require.Eventually(t, func() bool {
		return e.count(t, `select count(*) from $schema.batches where batch_id = $1 and status in ('cancelling', 'cancelled')`, batchID) == 1
	}, 15*time.Second, 20*time.Millisecond, "poller: %s", poller.stderr.String())
	require.Equal(t, 1, e.emu.Stats().BatchCancels)
	require.Contains(t, poller.stderr.String(), "cancel requested (dashboard)")
}

// TestEarlyWebhookWaitsForTheEnd: a batch event that arrives while the API still reports the batch in flight (the
// event raced the batch object) keeps its refresh asking every second, so the end is still caught by the webhook's
// job rather than at the next poll.
func TestEarlyWebhookWaitsForTheEnd(t *testing.T) {
	t.Parallel()
	// Three phases of 3 s: the batch ends about 9 s after its creation, well after track has seen it in flight and
	// after its poll job's first GET (5 s after track), which then waits a minute. Only the webhook's refresh,
	// asking every second, can see the end within the test's wait.
	e := newAPIEnv(t, emulator.Options{PhaseDelay: 3 * time.Second})
	e.env["BATCHCTL_WEBHOOK_SECRET"] = webhookSecret
	url, srv := startServe(t, e.env)
	poller := startCLI(t, e.env, "poll", "--poll-interval", "1m", "--fetch-interval", "50ms")
	waitFirstRefresh(t, e)
	_, batchID := e.createBatch(t, "early", 3, 0)
	require.Equal(t, exitOK, runCLI(t, "", e.env, "track", batchID).code)
	require.Equal(t, 1, e.count(t, `select count(*) from $schema.batches where batch_id = $1 and results_loaded_at is null
		and status not in ('completed', 'failed', 'expired', 'cancelled')`, batchID), "the event must come before the end")

	body := fmt.Appendf(nil, `{"id":"evt_early","object":"event","type":"batch.completed","created_at":%d,"data":{"id":%q}}`, time.Now().Unix(), batchID)
	h, err := emulator.SignWebhook(webhookSecret, "wh_early", time.Now(), body)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, url+"webhooks/openai", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, srv.stderr.String())

	require.Eventually(t, func() bool {
		return e.count(t, `select count(*) from $schema.batches where batch_id = $1 and results_loaded_at is not null`, batchID) == 1
	}, 30*time.Second, 20*time.Millisecond, "poller: %s", poller.stderr.String())
	require.Contains(t, poller.stderr.String(), "batch ended (webhook)", "the webhook's refresh, snoozing, saw the end")
}
