package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/store"
)

func openStore(t *testing.T) *store.Store { return pgtest.NewStore(t) }

func TestTrackBatchInsertsRowAndOnePollJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)

	b := store.Batch{
		BatchID: "batch_abc", Status: store.StatusValidating, Endpoint: "/v1/chat/completions", Model: "gpt-4o-mini",
		InputFileID: "file-1", RequestTotal: 3, Metadata: map[string]string{"team": "search"},
		Source: "reviews.jsonl", SpoolSHA256: "deadbeef",
	}
	inserted, err := s.TrackBatch(ctx, b)
	require.NoError(t, err)
	require.True(t, inserted)
	inserted, err = s.TrackBatch(ctx, b)
	require.NoError(t, err)
	require.False(t, inserted, "tracking the same batch twice inserts one row")

	got, err := s.GetBatch(ctx, "batch_abc")
	require.NoError(t, err)
	require.Equal(t, "reviews.jsonl", got.Source)
	require.Equal(t, "deadbeef", got.SpoolSHA256)
	require.Equal(t, map[string]string{"team": "search"}, got.Metadata)
	require.Equal(t, 3, got.RequestTotal)
	require.Nil(t, got.EndedAt)
	require.Empty(t, got.OutputFileID)

	var jobs int
	require.NoError(t, s.Pool().QueryRow(ctx, `select count(*) from `+s.Schema()+`.river_job where kind = $1 and args->>'batch_id' = $2`,
		store.PollBatchArgs{}.Kind(), "batch_abc").Scan(&jobs))
	require.Equal(t, 1, jobs, "one poll job per batch")

	_, err = s.GetBatch(ctx, "batch_missing")
	require.ErrorIs(t, err, store.ErrNotFound)
}

// TestTrackEndedBatchQueuesItsLoad: a batch tracked already ended (cancel of an untracked batch, track of an old one)
// gets its results load at once, and the API's creation time replaces the guess of a bare track.
func TestTrackEndedBatchQueuesItsLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	_, err := s.TrackBatch(ctx, store.Batch{BatchID: "batch_old", Status: store.StatusCancelled})
	require.NoError(t, err)
	var loads int
	require.NoError(t, s.Pool().QueryRow(ctx, `select count(*) from `+s.Schema()+`.river_job where kind = $1 and args->>'batch_id' = $2`,
		store.LoadResultsArgs{}.Kind(), "batch_old").Scan(&loads))
	require.Equal(t, 1, loads)

	_, err = s.TrackBatch(ctx, store.Batch{BatchID: "batch_bare", Status: store.StatusValidating})
	require.NoError(t, err)
	created := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	_, err = s.UpsertBatch(ctx, store.Batch{BatchID: "batch_bare", Status: store.StatusInProgress, CreatedAt: created})
	require.NoError(t, err)
	got, err := s.GetBatch(ctx, "batch_bare")
	require.NoError(t, err)
	require.True(t, created.Equal(got.CreatedAt), "created_at %s, want %s", got.CreatedAt, created)
}

// TestUpsertBatchEndSeenOnce: of several pollers writing the same batch's end at once, exactly one is told the batch
// was still in flight, as exactly one notifies the change.
func TestUpsertBatchEndSeenOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	for round := range 5 {
		b := store.Batch{BatchID: fmt.Sprintf("batch_end_%d", round), Status: store.StatusInProgress, Endpoint: "/v1/embeddings"}
		_, err := s.UpsertBatch(ctx, b)
		require.NoError(t, err)
		b.Status = store.StatusCompleted
		previous := make(chan string, 8)
		var wg sync.WaitGroup
		for range cap(previous) {
			wg.Go(func() {
				prev, err := s.UpsertBatch(ctx, b)
				assert.NoError(t, err)
				previous <- prev
			})
		}
		wg.Wait()
		close(previous)
		var sawEnd int
		for prev := range previous {
			if !store.IsTerminal(prev) {
				sawEnd++
			}
		}
		require.Equal(t, 1, sawEnd)
	}
}

func TestUpsertBatchStatusChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)

	listener, err := pgx.Connect(ctx, pgtest.URL(t))
	require.NoError(t, err)
	defer listener.Close(ctx)
	_, err = listener.Exec(ctx, "listen "+store.NotifyChannel)
	require.NoError(t, err)

	b := store.Batch{BatchID: "batch_1", Status: store.StatusValidating, Endpoint: "/v1/embeddings", Source: "a.jsonl"}
	prev, err := s.UpsertBatch(ctx, b)
	require.NoError(t, err)
	require.Empty(t, prev)

	b.Status, b.RequestTotal, b.RequestCompleted = store.StatusInProgress, 10, 4
	b.Source = "" // a refresh from the API does not know the source
	prev, err = s.UpsertBatch(ctx, b)
	require.NoError(t, err)
	require.Equal(t, store.StatusValidating, prev)

	b.Status, b.RequestCompleted, b.RequestFailed, b.OutputFileID = store.StatusCompleted, 9, 1, "file-out"
	prev, err = s.UpsertBatch(ctx, b)
	require.NoError(t, err)
	require.Equal(t, store.StatusInProgress, prev)

	got, err := s.GetBatch(ctx, "batch_1")
	require.NoError(t, err)
	require.Equal(t, store.StatusCompleted, got.Status)
	require.Equal(t, "a.jsonl", got.Source, "an empty source keeps the earlier value")
	require.Equal(t, "file-out", got.OutputFileID)
	require.Equal(t, 9, got.RequestCompleted)
	require.NotNil(t, got.EndedAt)
	endedAt := *got.EndedAt

	// A stale page saying in_progress must not resurrect a finished batch.
	b.Status = store.StatusInProgress
	prev, err = s.UpsertBatch(ctx, b)
	require.NoError(t, err)
	require.Equal(t, store.StatusCompleted, prev)
	got, err = s.GetBatch(ctx, "batch_1")
	require.NoError(t, err)
	require.Equal(t, store.StatusCompleted, got.Status)
	require.True(t, endedAt.Equal(*got.EndedAt), "ended_at is set once")

	// Three status changes, three notifications, in order; the stale refresh sent none. The channel is shared by
	// every schema of the database (other tests run beside this one): the payload names the schema.
	var statuses []string
	for {
		waitCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		n, err := listener.WaitForNotification(waitCtx)
		cancel()
		if err != nil {
			break
		}
		var payload map[string]any
		require.NoError(t, json.Unmarshal([]byte(n.Payload), &payload))
		if payload["schema"] != s.Schema() {
			continue
		}
		require.Equal(t, "batch_1", payload["batch_id"])
		statuses = append(statuses, payload["status"].(string))
	}
	require.Equal(t, []string{"validating", "in_progress", "completed"}, statuses, "no notification without a status change")
}

func TestListInFlightStatuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	base := time.Now().Add(-time.Hour)
	for i, status := range []string{"validating", "completed", "in_progress", "failed", "finalizing", "expired", "cancelling", "cancelled"} {
		_, err := s.UpsertBatch(ctx, store.Batch{BatchID: fmt.Sprintf("batch_%d", i), Status: status, CreatedAt: base.Add(time.Duration(i) * time.Minute)})
		require.NoError(t, err)
	}
	bs, err := s.ListInFlight(ctx, 100)
	require.NoError(t, err)
	var ids []string
	for _, b := range bs {
		ids = append(ids, b.BatchID+"="+b.Status)
	}
	require.Equal(t, []string{"batch_0=validating", "batch_2=in_progress", "batch_4=finalizing", "batch_6=cancelling"}, ids)

	bs, err = s.ListInFlight(ctx, 2)
	require.NoError(t, err)
	require.Len(t, bs, 2)
}

func results(batchID string, n int) []store.Result {
	rows := make([]store.Result, n)
	for i := range rows {
		line, code := i+1, 200
		rows[i] = store.Result{BatchID: batchID, CustomID: fmt.Sprintf("r-%d", i), InputLine: &line, StatusCode: &code,
			Response: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}
	}
	rows[n-1].StatusCode, rows[n-1].Response = nil, nil
	rows[n-1].Error = json.RawMessage(`{"code":"batch_expired","message":"expired"}`)
	return rows
}

func TestPendingCountsEachStage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	upsert := func(id, status string) {
		_, err := s.UpsertBatch(ctx, store.Batch{BatchID: id, Status: status, Endpoint: "/v1/embeddings", RequestTotal: 2,
			InputFileID: "file-" + id})
		require.NoError(t, err)
	}
	upsert("batch_flying", store.StatusInProgress)
	upsert("batch_unloaded", store.StatusCompleted)
	upsert("batch_expired", store.StatusExpired) // loaded below: a resubmission candidate
	upsert("batch_done", store.StatusCompleted)  // loaded below, every request answered: nothing to resubmit
	// Expired and loaded, but its requests went inline (Anthropic): no input file to resend from, so no candidate.
	_, err := s.UpsertBatch(ctx, store.Batch{BatchID: "msgbatch_inline", Provider: "anthropic", Status: store.StatusExpired,
		Endpoint: "/v1/messages", RequestTotal: 2})
	require.NoError(t, err)
	for _, id := range []string{"batch_expired", "batch_done", "msgbatch_inline"} {
		l, err := s.BeginLoad(ctx, id, false)
		require.NoError(t, err)
		if id == "batch_done" {
			_, err = l.CopyResults(ctx, newSliceSource([]store.Result{{CustomID: "a"}, {CustomID: "b"}}))
			require.NoError(t, err)
		}
		require.NoError(t, l.MarkLoaded(ctx, store.Usage{}))
	}

	inFlight, unloaded, resubmits, _, err := s.Pending(ctx, 3)
	require.NoError(t, err)
	require.Equal(t, []int{1, 1, 1}, []int{inFlight, unloaded, resubmits})
	_, _, resubmits, _, err = s.Pending(ctx, 0)
	require.NoError(t, err)
	require.Zero(t, resubmits, "no resubmission: no candidates")
	_, _, resubmits, _, err = s.Pending(ctx, 1)
	require.NoError(t, err)
	require.Zero(t, resubmits, "attempt 1 of at most 1: nothing more to try")
}

func TestLoadResultsIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	_, err := s.TrackBatch(ctx, store.Batch{BatchID: "batch_r", Status: store.StatusCompleted})
	require.NoError(t, err)

	// A load that dies before MarkLoaded leaves nothing behind.
	l, err := s.BeginLoad(ctx, "batch_r", false)
	require.NoError(t, err)
	n, err := l.CopyResults(ctx, newSliceSource(results("batch_r", 50)))
	require.NoError(t, err)
	require.EqualValues(t, 50, n)
	require.NoError(t, l.Rollback(ctx))
	var count int
	require.NoError(t, s.Pool().QueryRow(ctx, `select count(*) from `+s.Schema()+`.results where batch_id = $1`, "batch_r").Scan(&count))
	require.Zero(t, count)

	// Output and error file copied in one load, then marked.
	l, err = s.BeginLoad(ctx, "batch_r", false)
	require.NoError(t, err)
	rows := results("batch_r", 100)
	_, err = l.CopyResults(ctx, newSliceSource(rows[:60]))
	require.NoError(t, err)
	_, err = l.CopyResults(ctx, newSliceSource(rows[60:]))
	require.NoError(t, err)
	require.EqualValues(t, 100, l.Rows())
	require.NoError(t, l.MarkLoaded(ctx, store.Usage{}))

	_, err = s.BeginLoad(ctx, "batch_r", false)
	require.ErrorIs(t, err, store.ErrAlreadyLoaded)

	// Loading the same rows again leaves exactly one copy of each, and usage counted once.
	for range 2 {
		l, err = s.BeginLoad(ctx, "batch_r", true)
		require.NoError(t, err)
		_, err = l.CopyResults(ctx, newSliceSource(rows))
		require.NoError(t, err)
		p, c, tot := int64(30), int64(12), int64(42)
		require.NoError(t, l.MarkLoaded(ctx, store.Usage{PromptTokens: &p, CompletionTokens: &c, TotalTokens: &tot}))
	}

	var total, distinct, errorsN, nullLines int
	require.NoError(t, s.Pool().QueryRow(ctx, `select count(*), count(distinct custom_id), count(error), count(*) filter (where input_line is null)
		from `+s.Schema()+`.results where batch_id = 'batch_r'`).Scan(&total, &distinct, &errorsN, &nullLines))
	require.Equal(t, 100, total)
	require.Equal(t, 100, distinct)
	require.Equal(t, 1, errorsN)
	require.Zero(t, nullLines)

	var resp []byte
	var code *int
	require.NoError(t, s.Pool().QueryRow(ctx, `select response, status_code from `+s.Schema()+`.results where batch_id='batch_r' and custom_id='r-7'`).Scan(&resp, &code))
	require.JSONEq(t, `{"n":7}`, string(resp))
	require.Equal(t, 200, *code)

	got, err := s.GetBatch(ctx, "batch_r")
	require.NoError(t, err)
	require.NotNil(t, got.ResultsLoadedAt)
	require.EqualValues(t, 100, *got.ResultsCount)
	require.EqualValues(t, 42, *got.Usage.TotalTokens, "a reload sets usage, never adds to it")
	require.EqualValues(t, 30, *got.Usage.PromptTokens)
}

func TestLoadRejectsRowsOfAnotherBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	_, err := s.TrackBatch(ctx, store.Batch{BatchID: "batch_a", Status: store.StatusCompleted})
	require.NoError(t, err)
	l, err := s.BeginLoad(ctx, "batch_a", false)
	require.NoError(t, err)
	defer l.Rollback(ctx)
	_, err = l.CopyResults(ctx, newSliceSource(results("batch_b", 3)))
	require.ErrorContains(t, err, "batch_b")
}

func TestBeginLoadUnknownBatch(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	_, err := s.BeginLoad(context.Background(), "batch_nope", false)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestUnmigratedSchemaSaysSo(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.NewSchema(t)
	s, err := store.Open(context.Background(), url, schema)
	require.NoError(t, err)
	defer s.Close()
	_, err = s.ListInFlight(context.Background(), 10)
	require.ErrorIs(t, err, store.ErrNotMigrated)
	require.ErrorContains(t, err, "batchctl migrate")
}

func TestOpenBadDatabaseURL(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-Pa55"
	tests := []struct {
		name, url, want string
	}{
		{"unparsable", "postgres://alice:" + secret + "@localhost:notaport/db", "invalid database URL"},
		{"refused", "postgres://alice:" + secret + "@127.0.0.1:1/db?connect_timeout=2", "connect to database host=127.0.0.1 port=1 user=alice database=db"},
		{"keyword form", "host=127.0.0.1 port=1 user=alice password=" + secret + " connect_timeout=2", "connect to database"},
		{"empty", "", "no database configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := store.Open(context.Background(), tt.url, "batchctl")
			require.Error(t, err)
			require.ErrorContains(t, err, tt.want)
			require.NotContains(t, err.Error(), secret, "the password is never echoed")
		})
	}
}

func TestValidateSchema(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"batchctl", "_x", "team_a1"} {
		require.NoError(t, store.ValidateSchema(ok), ok)
	}
	for _, bad := range []string{"", "Batchctl", "1abc", "a-b", "a;drop table x", "a.b", string(make([]byte, 64)), "pg_batchctl", "information_schema"} {
		require.Error(t, store.ValidateSchema(bad), bad)
	}
	_, err := store.Open(context.Background(), "postgres://x@127.0.0.1/db", "bad;name")
	require.True(t, err != nil && !errors.Is(err, store.ErrNotFound))
}

// TestCheckSchemaAsksTheServer: keywords the server reserves, or allows only as column or type names, are refused
// by name with a suggestion; unreserved keywords and plain names pass.
func TestCheckSchemaAsksTheServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(ctx) })
	for _, ok := range []string{"batchctl", "data", "name", "schema"} { // data, name, schema: unreserved keywords
		require.NoError(t, store.CheckSchema(ctx, conn, ok), ok)
	}
	for _, bad := range []string{"user", "select", "left", "authorization", "time", "int", "values"} {
		err := store.CheckSchema(ctx, conn, bad)
		require.ErrorContains(t, err, fmt.Sprintf("schema name %q is an SQL keyword", bad))
		require.ErrorContains(t, err, fmt.Sprintf("%q", "batchctl_"+bad))
	}
	require.ErrorContains(t, store.CheckSchema(ctx, conn, "Bad"), "invalid schema name", "ValidateSchema first")
	_, err = store.Open(ctx, pgtest.URL(t), "user")
	require.ErrorContains(t, err, "SQL keyword")
}

// sliceSource is a store.ResultSource over rows already in memory.
type sliceSource struct {
	rows []store.Result
	i    int
}

func newSliceSource(rows []store.Result) *sliceSource { return &sliceSource{rows: rows, i: -1} }

func (s *sliceSource) Next() bool           { s.i++; return s.i < len(s.rows) }
func (s *sliceSource) Result() store.Result { return s.rows[s.i] }
func (s *sliceSource) Err() error           { return nil }
