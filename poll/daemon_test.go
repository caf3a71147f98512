package poll_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/poll"
	"github.com/batchctl/batchctl/store"
)

// requireExactResults checks that the results of batchID hold each of ids exactly once, at its input line.
func requireExactResults(t *testing.T, e *env, batchID string, ids []string) []resultRow {
	t.Helper()
	rows := e.results(t, batchID)
	require.Len(t, rows, len(ids))
	for i, r := range rows {
		require.Equal(t, ids[i], r.CustomID, "row %d in input order", i)
		require.NotNil(t, r.InputLine)
		require.Equal(t, i+1, *r.InputLine)
		require.True(t, (r.Response != nil) != (r.Error != nil) || r.StatusCode != nil, "a row has a response or an error")
	}
	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.NotNil(t, b.ResultsLoadedAt)
	require.NotNil(t, b.ResultsCount)
	require.Equal(t, len(ids), *b.ResultsCount)
	return rows
}

func TestCompletedBatchesLoadEveryRow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	body1, ids1 := requestFile("a", "gpt-4o-mini", 40)
	body2, ids2 := requestFile("b", "gpt-4o-mini", 25)
	b1, b2 := e.submit(t, body1), e.submit(t, body2)

	runUntilDone(t, e.config(t), time.Minute)

	for batchID, ids := range map[string][]string{b1: ids1, b2: ids2} {
		rows := requireExactResults(t, e, batchID, ids)
		for _, r := range rows {
			require.NotNil(t, r.StatusCode)
			require.Equal(t, 200, *r.StatusCode)
			require.Nil(t, r.Error)
			var body struct {
				Object  string `json:"object"`
				Choices []struct {
					Message struct{ Content string } `json:"message"`
				} `json:"choices"`
			}
			require.NoError(t, json.Unmarshal(r.Response, &body))
			require.Equal(t, "chat.completion", body.Object)
			require.NotEmpty(t, body.Choices[0].Message.Content)
		}
		b, err := e.store.GetBatch(context.Background(), batchID)
		require.NoError(t, err)
		require.Equal(t, store.StatusCompleted, b.Status)
		require.Equal(t, len(ids), b.RequestTotal)
		require.Equal(t, len(ids), b.RequestCompleted)
		require.NotEmpty(t, b.OutputFileID)
		require.NotNil(t, b.EndedAt)
		require.Equal(t, "test", b.Source, "the poller keeps what the submitter recorded")
		rec, ok := e.emu.Batch(batchID)
		require.True(t, ok)
		require.NotNil(t, b.Usage.TotalTokens)
		require.Equal(t, rec.InputTokens, *b.Usage.PromptTokens, "usage summed from the loaded results")
		require.Equal(t, rec.OutputTokens, *b.Usage.CompletionTokens)
		require.Equal(t, rec.InputTokens+rec.OutputTokens, *b.Usage.TotalTokens)
	}
}

func TestFailedValidationRecordsErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	body, _ := requestFile("m", "gpt-4o-mini", 3)
	other, _ := requestFile("x", "gpt-4o", 1)
	batchID := e.submit(t, append(body, other...))

	runUntilDone(t, e.config(t), time.Minute)

	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, b.Status)
	var errs struct {
		Data []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Line    int    `json:"line"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(b.Errors, &errs))
	require.NotEmpty(t, errs.Data)
	require.Equal(t, 4, errs.Data[0].Line, "the second model is on line 4")
	require.NotNil(t, b.ResultsLoadedAt, "a failed batch is loaded too (no rows)")
	require.Empty(t, e.results(t, batchID))
}

func TestExpiredBatchKeepsPartialOutput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{ExpireRate: 1, ExpireCompletedShare: 0.4})
	body, ids := requestFile("e", "gpt-4o-mini", 30)
	batchID := e.submit(t, body)

	runUntilDone(t, e.config(t), time.Minute)

	rows := requireExactResults(t, e, batchID, ids)
	answered, expired := 0, 0
	for _, r := range rows {
		if r.Error != nil {
			var le struct{ Code string }
			require.NoError(t, json.Unmarshal(r.Error, &le))
			require.Equal(t, "batch_expired", le.Code)
			expired++
		} else {
			answered++
		}
	}
	require.Positive(t, answered)
	require.Positive(t, expired)
	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.Equal(t, store.StatusExpired, b.Status)
	require.Equal(t, answered, b.RequestCompleted)
}

func TestCancelledBatchLoadsPartialOutput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{PhaseDelay: 300 * time.Millisecond})
	body, ids := requestFile("c", "gpt-4o-mini", 20)
	batchID := e.submit(t, body)
	require.Eventually(t, func() bool {
		rec, _ := e.emu.Batch(batchID)
		return rec.Status == emulator.StatusInProgress
	}, 10*time.Second, 5*time.Millisecond)
	_, err := e.api.Batches.Cancel(context.Background(), batchID)
	require.NoError(t, err)

	runUntilDone(t, e.config(t), time.Minute)

	rows := requireExactResults(t, e, batchID, ids)
	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.Equal(t, store.StatusCancelled, b.Status)
	cancelled := 0
	for _, r := range rows {
		if r.Error != nil {
			cancelled++
		}
	}
	require.Positive(t, cancelled, "requests not run have a batch_cancelled row")
	require.Equal(t, len(ids)-b.RequestCompleted, cancelled)
}

func TestInjectedFaultsStillGiveExactResults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{Seed: 7, RequestFailRate: 0.2})
	var batches []string
	var allIDs [][]string
	for i := range 3 {
		body, ids := requestFile(fmt.Sprintf("f%d", i), "gpt-4o-mini", 30)
		batches = append(batches, e.submit(t, body))
		allIDs = append(allIDs, ids)
	}
	// Chaos from here on: the daemon sees every kind of transport fault.
	e.emu.SetFaults(emulator.Faults{HTTP429Rate: 0.1, HTTP500Rate: 0.1, ResetRate: 0.05, TruncateDownloadRate: 0.2,
		RequestFailRate: 0.2, RetryAfter: 10 * time.Millisecond})

	runUntilDone(t, e.config(t), 2*time.Minute)

	st := e.emu.Stats()
	require.Positive(t, st.Injected429+st.Injected500+st.InjectedResets+st.TruncatedDownloads, "faults were injected")
	failedRows := 0
	for i, batchID := range batches {
		rows := requireExactResults(t, e, batchID, allIDs[i])
		rec, ok := e.emu.Batch(batchID)
		require.True(t, ok)
		bad := 0
		for _, r := range rows {
			if r.Error != nil || (r.StatusCode != nil && *r.StatusCode != 200) {
				bad++
			}
		}
		require.EqualValues(t, rec.Failed, bad, "every failed request has a row saying so")
		failedRows += bad
	}
	require.Positive(t, failedRows)
}

func TestTwoDaemonsShareTheWork(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	want := map[string][]string{}
	for i := range 6 {
		body, ids := requestFile(fmt.Sprintf("t%d", i), "gpt-4o-mini", 15)
		want[e.submit(t, body)] = ids
	}

	var wg sync.WaitGroup
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	for _, reg := range regs {
		cfg := e.config(t)
		cfg.Metrics = poll.NewMetrics(reg, e.store, cfg.Logger)
		wg.Go(func() { runUntilDone(t, cfg, time.Minute) })
	}
	wg.Wait()

	for batchID, ids := range want {
		requireExactResults(t, e, batchID, ids)
	}
	// One input download and one output download per batch: no load ran twice.
	require.Equal(t, 2*len(want), e.emu.Stats().ContentDownloads)
	// Each batch's duration was observed by one daemon, the one that loaded it.
	var ended uint64
	for _, reg := range regs {
		families, err := reg.Gather()
		require.NoError(t, err)
		for _, f := range families {
			if f.GetName() == "batchctl_batch_duration_seconds" {
				for _, m := range f.GetMetric() {
					ended += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	require.Equal(t, uint64(len(want)), ended)
}

func TestSweepFindsStrandedBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	body, ids := requestFile("s", "gpt-4o-mini", 10)
	f, b := e.createUntracked(t, body)

	// A row inserted by hand (or whose job was lost): no River job points at it.
	_, err := e.store.Pool().Exec(context.Background(), `insert into `+e.store.Schema()+`.batches (batch_id, status, input_file_id) values ($1, 'validating', $2)`, b, f)
	require.NoError(t, err)

	runUntilDone(t, e.config(t), time.Minute)
	requireExactResults(t, e, b, ids)
}

func TestStatusChangesAreNotified(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{PhaseDelay: 200 * time.Millisecond})
	ctx := context.Background()
	listener, err := pgx.Connect(ctx, pgtest.URL(t))
	require.NoError(t, err)
	defer listener.Close(ctx)
	_, err = listener.Exec(ctx, "listen "+store.NotifyChannel)
	require.NoError(t, err)

	body, _ := requestFile("n", "gpt-4o-mini", 5)
	batchID := e.submit(t, body)
	runUntilDone(t, e.config(t), time.Minute)

	var statuses []string
	for {
		waitCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		n, err := listener.WaitForNotification(waitCtx)
		cancel()
		if err != nil {
			break
		}
		var p struct {
			Schema, BatchID, Status string
			PreviousStatus          string `json:"previous_status"`
			BatchIDJSON             string `json:"batch_id"`
		}
		require.NoError(t, json.Unmarshal([]byte(n.Payload), &p))
		if p.BatchIDJSON == batchID && p.Schema == e.store.Schema() {
			statuses = append(statuses, p.PreviousStatus+">"+p.Status)
		}
	}
	require.NotEmpty(t, statuses)
	require.Equal(t, ">validating", statuses[0], "tracking announces the batch")
	require.Equal(t, "completed", statuses[len(statuses)-1][len(statuses[len(statuses)-1])-len("completed"):])
}

func TestBulkRefreshCostsAListCallPerHundredBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{PhaseDelay: time.Hour}) // batches stay validating during the test
	const n = 250
	for i := range n {
		body, _ := requestFile(fmt.Sprintf("r%d", i), "gpt-4o-mini", 1)
		e.submit(t, body)
	}
	d, err := poll.New(e.config(t))
	require.NoError(t, err)
	before := e.emu.Stats()
	st, err := d.Refresh(context.Background())
	require.NoError(t, err)
	after := e.emu.Stats()
	require.Equal(t, n, st.InFlight)
	require.Equal(t, n, st.Updated)
	require.Equal(t, 3, st.ListCalls, "250 batches: 3 pages of 100")
	require.Equal(t, 3, after.BatchLists-before.BatchLists)
	require.Zero(t, after.BatchGets-before.BatchGets)

	// A round with nothing new still marks every row seen (poll jobs skip their GET on a fresh updated_at).
	var mark time.Time
	require.NoError(t, e.store.Pool().QueryRow(context.Background(), `select now()`).Scan(&mark))
	st, err = d.Refresh(context.Background())
	require.NoError(t, err)
	require.Equal(t, n, st.Updated)
	var fresh int
	require.NoError(t, e.store.Pool().QueryRow(context.Background(), `select count(*) from `+e.store.Schema()+`.batches
		where updated_at >= $1`, mark).Scan(&fresh))
	require.Equal(t, n, fresh)
}
