package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/store"
	"github.com/batchctl/batchctl/web"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// secret is a Standard Webhooks secret as OpenAI issues them (24 random bytes, base64).
const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

type env struct {
	store *store.Store
	url   string
}

// start serves a web.Server over real HTTP on a fresh migrated schema.
func start(t *testing.T, opts web.Options) *env {
	t.Helper()
	s := pgtest.NewStore(t)
	opts.Store = s
	srv, err := web.New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, srv.Start(ctx))
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		cancel()
		ts.Close()
	})
	return &env{store: s, url: ts.URL}
}

func (e *env) track(t *testing.T, b store.Batch) {
	t.Helper()
	ctx := context.Background()
	_, err := e.store.TrackBatch(ctx, b)
	require.NoError(t, err)
	if store.IsTerminal(b.Status) {
		_, err = e.store.UpsertBatch(ctx, b)
		require.NoError(t, err)
	}
}

func (e *env) get(t *testing.T, path string, v any) int {
	t.Helper()
	resp, err := http.Get(e.url + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
	}
	return resp.StatusCode
}

func (e *env) jobs(t *testing.T, kind string) int {
	t.Helper()
	var n int
	require.NoError(t, e.store.Pool().QueryRow(context.Background(),
		`select count(*) from `+e.store.Schema()+`.river_job where kind = $1`, kind).Scan(&n))
	return n
}

type dashboard struct {
	Totals []struct {
		Status  string `json:"status"`
		Batches int    `json:"batches"`
	} `json:"totals"`
	Sources  []string `json:"sources"`
	InFlight *page    `json:"in_flight"`
	Ended    *page    `json:"ended"`
	CSRF     string   `json:"csrf"`
}

type page struct {
	Batches []struct {
		ID         string `json:"id"`
		Status     string `json:"status"`
		Completed  int    `json:"completed"`
		Total      int    `json:"total"`
		NearExpiry bool   `json:"near_expiry"`
		RowsLoaded *int   `json:"rows_loaded"`
	} `json:"batches"`
	Next string `json:"next"`
}

func (p *page) ids() []string {
	var ids []string
	for _, b := range p.Batches {
		ids = append(ids, b.ID)
	}
	return ids
}

// TestDashboardPagesFiltersAndTotals: each list pages by its own cursor in its own order (in flight oldest first,
// ended latest first), the filters narrow lists and totals, and a batch near the end of its window is flagged.
func TestDashboardPagesFiltersAndTotals(t *testing.T) {
	t.Parallel()
	e := start(t, web.Options{PageSize: 2})
	now := time.Now()
	for i := range 5 {
		e.track(t, store.Batch{BatchID: fmt.Sprintf("batch_run%d", i), Status: store.StatusInProgress, RequestTotal: 10,
			RequestCompleted: i, Source: []string{"a.jsonl", "b.jsonl"}[i%2], CreatedAt: now.Add(-time.Duration(22-i) * time.Hour)})
	}
	for i := range 3 {
		end := now.Add(-time.Duration(3-i) * time.Minute)
		e.track(t, store.Batch{BatchID: fmt.Sprintf("batch_end%d", i), Status: store.StatusCompleted, RequestTotal: 4,
			RequestCompleted: 4, Source: "a.jsonl", CreatedAt: now.Add(-time.Hour), EndedAt: &end})
	}

	var d dashboard
	require.Equal(t, http.StatusOK, e.get(t, "/api/dashboard", &d))
	require.Equal(t, []string{"batch_run0", "batch_run1"}, d.InFlight.ids(), "oldest in flight first")
	require.True(t, d.InFlight.Batches[0].NearExpiry, "22 h old: less than 4 h of its window left")
	require.Equal(t, []string{"batch_end2", "batch_end1"}, d.Ended.ids(), "latest ended first")
	require.Equal(t, []string{"a.jsonl", "b.jsonl"}, d.Sources)
	require.Len(t, d.Totals, 2)
	require.Equal(t, 3, d.Totals[0].Batches) // completed
	require.Equal(t, 5, d.Totals[1].Batches) // in_progress

	var all []string
	cursor := ""
	for range 5 {
		var p dashboard
		require.Equal(t, http.StatusOK, e.get(t, "/api/dashboard?in_after="+url.QueryEscape(cursor), &p))
		all = append(all, p.InFlight.ids()...)
		if cursor = p.InFlight.Next; cursor == "" {
			break
		}
	}
	require.Equal(t, []string{"batch_run0", "batch_run1", "batch_run2", "batch_run3", "batch_run4"}, all, "pages neither skip nor repeat")

	var ended dashboard
	require.Equal(t, http.StatusOK, e.get(t, "/api/dashboard?ended_after="+url.QueryEscape(d.Ended.Next), &ended))
	require.Equal(t, []string{"batch_end0"}, ended.Ended.ids())
	require.Empty(t, ended.Ended.Next)

	var bySource dashboard
	require.Equal(t, http.StatusOK, e.get(t, "/api/dashboard?source=b.jsonl", &bySource))
	require.Equal(t, []string{"batch_run1", "batch_run3"}, bySource.InFlight.ids())
	require.Empty(t, bySource.Ended.ids())
	require.Len(t, bySource.Totals, 1)

	var byStatus dashboard
	require.Equal(t, http.StatusOK, e.get(t, "/api/dashboard?status=completed", &byStatus))
	require.Nil(t, byStatus.InFlight, "a terminal status shows no batch in flight")
	require.Len(t, byStatus.Ended.Batches, 2)

	require.Equal(t, http.StatusBadRequest, e.get(t, "/api/dashboard?in_after=garbage", nil))
}

// TestBatchDetail: the errors.data lines with their line numbers, the results by outcome and the lineage.
func TestBatchDetail(t *testing.T) {
	t.Parallel()
	e := start(t, web.Options{})
	ctx := context.Background()
	end := time.Now()
	e.track(t, store.Batch{BatchID: "batch_parent", Status: store.StatusExpired, RequestTotal: 3, RequestCompleted: 1,
		Source: "in.jsonl", EndedAt: &end,
		Errors: json.RawMessage(`{"object":"list","data":[{"code":"invalid_json_line","message":"line 7 is not JSON","line":7}]}`)})
	e.track(t, store.Batch{BatchID: "batch_child", Status: store.StatusInProgress, RequestTotal: 2, RootBatchID: "batch_parent",
		ParentBatchIDs: []string{"batch_parent"}, Attempt: 2})
	_, err := e.store.Pool().Exec(ctx, `insert into `+e.store.Schema()+`.results (batch_id, custom_id, status_code, error) values
		('batch_parent', 'a', 200, null), ('batch_parent', 'b', null, '{"code":"batch_expired"}'), ('batch_parent', 'c', null, '{"code":"batch_expired"}')`)
	require.NoError(t, err)

	var d struct {
		Batch  struct{ ID string } `json:"batch"`
		Errors []struct {
			Code string `json:"code"`
			Line int    `json:"line"`
		} `json:"errors"`
		Outcomes []struct {
			Outcome string `json:"outcome"`
			Count   int    `json:"count"`
		} `json:"outcomes"`
		Lineage []struct {
			ID      string `json:"id"`
			Attempt int    `json:"attempt"`
		} `json:"lineage"`
	}
	require.Equal(t, http.StatusOK, e.get(t, "/api/batches/batch_parent", &d))
	require.Equal(t, "batch_parent", d.Batch.ID)
	require.Len(t, d.Errors, 1)
	require.Equal(t, 7, d.Errors[0].Line)
	require.Equal(t, "invalid_json_line", d.Errors[0].Code)
	require.Len(t, d.Outcomes, 2)
	require.Equal(t, "batch_expired", d.Outcomes[0].Outcome)
	require.Equal(t, 2, d.Outcomes[0].Count)
	require.Equal(t, "ok", d.Outcomes[1].Outcome)
	require.Len(t, d.Lineage, 2)
	require.Equal(t, "batch_child", d.Lineage[1].ID)
	require.Equal(t, 2, d.Lineage[1].Attempt)
	require.Equal(t, http.StatusNotFound, e.get(t, "/api/batches/batch_nope", nil))
}

func postWebhook(t *testing.T, base string, h http.Header, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/webhooks/openai", strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func batchEvent(id, typ, batchID string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"object":"event","type":%q,"created_at":%d,"data":{"id":%q}}`, id, typ, time.Now().Unix(), batchID)
}

// TestWebhooks: a valid batch event queues one refresh of the batch; a replay, a second delivery and a second
// event of the same batch queue nothing more; a forged signature, a stale or future timestamp, missing headers, a
// wrong secret and a server without a secret are refused with 4xx and queue nothing.
func TestWebhooks(t *testing.T) {
	t.Parallel()
	e := start(t, web.Options{WebhookSecret: secret})
	e.track(t, store.Batch{BatchID: "batch_w", Status: store.StatusInProgress})
	kind := store.RefreshBatchArgs{}.Kind()
	sign := func(id string, at time.Time, body []byte, key string) http.Header {
		h, err := emulator.SignWebhook(key, id, at, body)
		require.NoError(t, err)
		return h
	}
	body := batchEvent("evt_1", "batch.completed", "batch_w")

	refused := []struct {
		name string
		h    http.Header
		body []byte
	}{
		{"forged signature", sign("wh_1", time.Now(), body, "whsec_"+strings.Repeat("QUFB", 8)), body},
		{"body changed after signing", sign("wh_1", time.Now(), body, secret), batchEvent("evt_1", "batch.completed", "batch_other")},
		{"stale timestamp", sign("wh_1", time.Now().Add(-10*time.Minute), body, secret), body},
		{"future timestamp", sign("wh_1", time.Now().Add(10*time.Minute), body, secret), body},
		{"no headers", http.Header{"Content-Type": {"application/json"}}, body},
	}
	for _, tt := range refused {
		code, msg := postWebhook(t, e.url, tt.h, tt.body)
		require.Equal(t, http.StatusUnauthorized, code, "%s: %s", tt.name, msg)
	}
	require.Zero(t, e.jobs(t, kind), "a refused webhook changes nothing")

	code, msg := postWebhook(t, e.url, sign("wh_1", time.Now(), body, secret), body)
	require.Equal(t, http.StatusOK, code, msg)
	require.Contains(t, msg, `"result":"queued"`)
	require.Equal(t, 1, e.jobs(t, kind))

	code, msg = postWebhook(t, e.url, sign("wh_1", time.Now(), body, secret), body) // the same delivery again
	require.Equal(t, http.StatusOK, code, msg)
	require.Contains(t, msg, `"result":"duplicate"`)
	other := batchEvent("evt_2", "batch.completed", "batch_w")
	code, msg = postWebhook(t, e.url, sign("wh_2", time.Now(), other, secret), other) // another delivery, same batch
	require.Equal(t, http.StatusOK, code, msg)
	require.Contains(t, msg, `"result":"duplicate"`)
	require.Equal(t, 1, e.jobs(t, kind), "replays queue nothing more")

	untracked := batchEvent("evt_3", "batch.failed", "batch_not_ours")
	code, msg = postWebhook(t, e.url, sign("wh_3", time.Now(), untracked, secret), untracked)
	require.Equal(t, http.StatusOK, code, msg)
	require.Contains(t, msg, `"result":"untracked"`)
	fine := []byte(`{"id":"evt_4","object":"event","type":"response.completed","created_at":1,"data":{"id":"resp_1"}}`)
	code, msg = postWebhook(t, e.url, sign("wh_4", time.Now(), fine, secret), fine)
	require.Equal(t, http.StatusOK, code, msg)
	require.Contains(t, msg, `"result":"ignored"`)
	require.Equal(t, 1, e.jobs(t, kind))

	noSecret := start(t, web.Options{})
	noSecret.track(t, store.Batch{BatchID: "batch_w", Status: store.StatusInProgress})
	code, _ = postWebhook(t, noSecret.url, sign("wh_1", time.Now(), body, secret), body)
	require.Equal(t, http.StatusForbidden, code, "no secret configured: every webhook is refused")
	require.Zero(t, noSecret.jobs(t, kind))
}

// TestAuthToken: with a token, every route but the webhook needs it (header, or the cookie a ?token= visit sets);
// without one, only localhost Host names are answered (DNS rebinding).
func TestAuthToken(t *testing.T) {
	t.Parallel()
	e := start(t, web.Options{AuthToken: "s3cret", WebhookSecret: secret, Gatherer: prometheus.NewRegistry()})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/", "/api/dashboard", "/events", "/metrics", "/riverui/", "/assets/app.js"} {
		resp, err := noRedirect.Get(e.url + path)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, path)
	}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/api/dashboard", nil)
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	resp, err = noRedirect.Get(e.url + "/?token=s3cret&status=failed")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/?status=failed", resp.Header.Get("Location"), "the token leaves the URL")
	cookies := resp.Cookies()
	require.Len(t, cookies, 1)
	require.True(t, cookies[0].HttpOnly)
	req, _ = http.NewRequest(http.MethodGet, e.url+"/api/dashboard", nil)
	req.AddCookie(cookies[0])
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the cookie stands for the token")

	body := batchEvent("evt_1", "batch.completed", "batch_x")
	h, err := emulator.SignWebhook(secret, "wh_1", time.Now(), body)
	require.NoError(t, err)
	code, msg := postWebhook(t, e.url, h, body)
	require.Equal(t, http.StatusOK, code, "the webhook has its own signature, no token: %s", msg)

	open := start(t, web.Options{})
	req, _ = http.NewRequest(http.MethodGet, open.url+"/api/dashboard", nil)
	req.Host = "attacker.example"
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "without a token, a foreign Host is refused")
	req.Host = "localhost:8080"
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestActions: read-only by default; with AllowActions, an action needs this process's CSRF token and the same
// origin, and then queues its job.
func TestActions(t *testing.T) {
	t.Parallel()
	ro := start(t, web.Options{})
	ro.track(t, store.Batch{BatchID: "batch_a", Status: store.StatusInProgress})
	post := func(e *env, path string, h map[string]string) int {
		req, _ := http.NewRequest(http.MethodPost, e.url+path, nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusForbidden, post(ro, "/api/batches/batch_a/cancel", nil))
	var d dashboard
	require.Equal(t, http.StatusOK, ro.get(t, "/api/dashboard", &d))
	require.Empty(t, d.CSRF, "a read-only surface hands out no CSRF token")
	require.Equal(t, http.StatusForbidden, post(ro, "/riverui/api/jobs/cancel", map[string]string{"Content-Type": "application/json"}),
		"River UI is read-only too")

	rw := start(t, web.Options{AllowActions: true})
	rw.track(t, store.Batch{BatchID: "batch_a", Status: store.StatusInProgress})
	require.Equal(t, http.StatusOK, rw.get(t, "/api/dashboard", &d))
	require.NotEmpty(t, d.CSRF)
	cancelKind := store.CancelBatchArgs{}.Kind()
	require.Equal(t, http.StatusForbidden, post(rw, "/api/batches/batch_a/cancel", nil), "no CSRF token")
	require.Equal(t, http.StatusForbidden, post(rw, "/api/batches/batch_a/cancel", map[string]string{"X-Batchctl-CSRF": "nope"}))
	require.Equal(t, http.StatusForbidden, post(rw, "/api/batches/batch_a/cancel",
		map[string]string{"X-Batchctl-CSRF": d.CSRF, "Sec-Fetch-Site": "cross-site"}))
	require.Equal(t, http.StatusForbidden, post(rw, "/api/batches/batch_a/cancel",
		map[string]string{"X-Batchctl-CSRF": d.CSRF, "Origin": "http://attacker.example"}))
	require.Zero(t, rw.jobs(t, cancelKind))
	require.Equal(t, http.StatusOK, post(rw, "/api/batches/batch_a/cancel",
		map[string]string{"X-Batchctl-CSRF": d.CSRF, "Origin": rw.url, "Sec-Fetch-Site": "same-origin"}))
	require.Equal(t, 1, rw.jobs(t, cancelKind))
	require.Equal(t, http.StatusOK, post(rw, "/api/batches/batch_a/resubmit", map[string]string{"X-Batchctl-CSRF": d.CSRF}))
	require.Equal(t, 1, rw.jobs(t, store.ResubmitArgs{}.Kind()))
	require.Equal(t, http.StatusNotFound, post(rw, "/api/batches/batch_zz/cancel", map[string]string{"X-Batchctl-CSRF": d.CSRF}))
}

// TestEventsStreamStatusChanges: a status change written as the poller writes it (UpsertBatch: the row and NOTIFY in
// one transaction) reaches an open event stream, and so do request counts moving and a results load; another
// schema's changes do not.
func TestEventsStreamStatusChanges(t *testing.T) {
	t.Parallel()
	e := start(t, web.Options{})
	e.track(t, store.Batch{BatchID: "batch_live", Status: store.StatusInProgress, RequestTotal: 5})
	other := pgtest.NewStore(t)

	resp, err := http.Get(e.url + "/events")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	events := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- data
			}
		}
		close(events)
	}()
	next := func() string {
		select {
		case ev := <-events:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10 s")
			return ""
		}
	}
	require.Equal(t, "{}", next(), "hello: from now on no change is missed")

	_, err = other.TrackBatch(context.Background(), store.Batch{BatchID: "batch_elsewhere", Status: store.StatusInProgress})
	require.NoError(t, err)
	_, err = e.store.UpsertBatch(context.Background(), store.Batch{BatchID: "batch_live", Status: store.StatusInProgress,
		RequestTotal: 5, RequestCompleted: 2})
	require.NoError(t, err)
	ev := next()
	require.Contains(t, ev, `"kind":"progress"`)
	require.Contains(t, ev, `"event":"progress"`)
	require.Contains(t, ev, `"batch_id":"batch_live"`)
	end := time.Now()
	_, err = e.store.UpsertBatch(context.Background(), store.Batch{BatchID: "batch_live", Status: store.StatusCompleted,
		RequestTotal: 5, RequestCompleted: 5, EndedAt: &end})
	require.NoError(t, err)
	ev = next()
	require.Contains(t, ev, `"kind":"batch"`)
	require.Contains(t, ev, `"batch_id":"batch_live"`)
	require.Contains(t, ev, `"status":"completed"`)

	load, err := e.store.BeginLoad(context.Background(), "batch_live", false)
	require.NoError(t, err)
	require.NoError(t, load.MarkLoaded(context.Background(), store.Usage{}))
	ev = next()
	require.Contains(t, ev, `"event":"loaded"`)
	require.Contains(t, ev, `"batch_id":"batch_live"`)
}

// TestMetricsAndRiverUI: /metrics serves the given registry; River UI answers under /riverui/ with this schema's
// jobs.
func TestMetricsAndRiverUI(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "batchctl_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	e := start(t, web.Options{Gatherer: reg})
	e.track(t, store.Batch{BatchID: "batch_q", Status: store.StatusInProgress})

	resp, err := http.Get(e.url + "/metrics")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(b), "batchctl_test_total 3")

	resp, err = http.Get(e.url + "/riverui/")
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(b), "<div id=\"root\"")

	resp, err = http.Get(e.url + "/riverui/api/jobs?state=scheduled")
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	require.Contains(t, string(b), "batch_q", "River UI lists this schema's poll job")
}
