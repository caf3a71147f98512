package admission_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/admission"
	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/pgtest"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
	"github.com/batchctl/batchctl/store"
	"github.com/batchctl/batchctl/submit"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const model = "gpt-test"

// env is an emulator with a token limit on model, and a migrated schema.
type env struct {
	emu         *emulator.Server
	oa          openai.Client
	api         *batchapi.Client
	url, schema string
	store       *store.Store
}

func newEnv(t *testing.T, limit int64) *env {
	t.Helper()
	emu, base := emulator.Start(t, emulator.Options{TokenLimitPerModel: map[string]int64{model: limit}})
	url, schema := pgtest.MigratedSchema(t)
	e := &env{emu: emu, oa: openai.NewClient(option.WithBaseURL(base), option.WithAPIKey("sk-test")), url: url, schema: schema}
	e.api = e.client()
	e.store = e.open(t)
	require.NoError(t, e.store.SetQuota(context.Background(), model, limit))
	return e
}

// client is a batchapi client of the emulator, quick to trust a search that finds nothing.
func (e *env) client() *batchapi.Client {
	return &batchapi.Client{API: &e.oa, RetryInitial: 10 * time.Millisecond, ReconcileSettle: 100 * time.Millisecond}
}

// open opens a store of its own (its own pool) on the test's schema.
func (e *env) open(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), e.url, e.schema)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// admitter is an Admitter with its own store connections and API client, as another process would have.
func (e *env) admitter(t *testing.T) *admission.Admitter {
	return &admission.Admitter{Store: e.open(t), Providers: oaiprov.Set(e.client())}
}

// enqueue uploads a request file of n chat requests of size bytes of text each and queues it as intent, with an
// estimate 20% above the emulator's count (the estimate runs high by design). It returns the row and the
// emulator's token count of the file.
func (e *env) enqueue(t *testing.T, intent string, n, size int) (store.QueuedBatch, int64) {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	var tokens int64
	for i := range n {
		text := fmt.Sprintf("%s request %d ", intent, i)
		text += strings.Repeat("x", max(size-len(text), 0))
		tokens += emulator.EstimateTokens(text)
		fmt.Fprintf(&b, `{"custom_id":"%s-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":%q}]}}`+"\n",
			intent, i, model, text)
	}
	path := filepath.Join(t.TempDir(), intent+".jsonl")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	fileID, err := e.api.Upload(ctx, path)
	require.NoError(t, err)
	q, err := e.store.Enqueue(ctx, store.QueuedBatch{
		Intent: intent, Model: model, Endpoint: "/v1/chat/completions", InputFileID: fileID, Source: intent + ".jsonl",
		SpoolSHA256: "sha-" + intent, Part: 1, Requests: n, Bytes: int64(b.Len()), EstimatedTokens: tokens * 6 / 5,
		Metadata: map[string]string{"team": "quota"},
	})
	require.NoError(t, err)
	return q, tokens
}

// refresh does a poller's work for the batches in flight: it stores what the API says of them.
func (e *env) refresh(ctx context.Context, s *store.Store) error {
	bs, err := s.ListInFlight(ctx, 1000)
	if err != nil {
		return err
	}
	for _, b := range bs {
		got, err := e.oa.Batches.Get(ctx, b.BatchID)
		if err != nil {
			return err
		}
		if _, err := s.UpsertBatch(ctx, batchapi.Row(got)); err != nil {
			return err
		}
	}
	return nil
}

// createdByIntent counts the emulator's batches per intent, in creation order.
func (e *env) createdByIntent() (order []string, count map[string]int) {
	count = map[string]int{}
	for _, b := range e.emu.Batches() {
		intent := b.Metadata[batchapi.MetaIntent]
		if count[intent] == 0 {
			order = append(order, intent)
		}
		count[intent]++
	}
	return order, count
}

func TestMetaIntentIsSubmits(t *testing.T) {
	require.Equal(t, submit.MetaIntent, batchapi.MetaIntent, "the admitter must recognise the batches submit names")
}

func TestFactor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		c    store.Calibration
		want float64
	}{
		{"no loaded batches", store.Calibration{}, 1},
		{"too few", store.Calibration{Batches: 2, PromptTokens: 50, EstimatedTokens: 100}, 1},
		{"ratio with margin", store.Calibration{Batches: 3, PromptTokens: 60, EstimatedTokens: 100}, 0.6 * admission.CalibrationMargin},
		{"never above 1", store.Calibration{Batches: 5, PromptTokens: 95, EstimatedTokens: 100}, 1},
		{"an underestimate is not trusted either", store.Calibration{Batches: 5, PromptTokens: 150, EstimatedTokens: 100}, 1},
		{"no usage reported", store.Calibration{Batches: 5, PromptTokens: 0, EstimatedTokens: 100}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.InDelta(t, tc.want, admission.Factor(tc.c), 1e-12)
		})
	}
	require.EqualValues(t, 70, admission.Cost(100, 0.691), "rounded up")
	require.EqualValues(t, 100, admission.Cost(100, 1))
}

// TestAdmitKeepsTheLimitFullInQueueOrder: ten uploaded batches whose tokens sum to four times the limit are all
// created, once each, in queue order, as the emulator finishes earlier ones; not one fails token_limit_exceeded, and
// never is more than the limit estimated in flight.
func TestAdmitKeepsTheLimitFullInQueueOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const limit = 1000
	e := newEnv(t, limit)
	var intents []string
	var sum int64
	for i := range 10 {
		intent := fmt.Sprintf("intent-%02d", i)
		// 4 requests of 300 to 420 bytes: 300 to 420 tokens a batch, 360 to 504 estimated.
		_, tokens := e.enqueue(t, intent, 4, 300+40*(i%4))
		intents = append(intents, intent)
		sum += tokens
	}
	require.InDelta(t, 4*limit, sum, 0.5*limit)

	a := &admission.Admitter{Store: e.store, Providers: oaiprov.Set(e.api)}
	passes := 0
	require.Eventually(t, func() bool {
		passes++
		_, err := a.Admit(ctx, "")
		require.NoError(t, err)
		inflight, err := e.store.InflightTokens(ctx, model, 1)
		require.NoError(t, err)
		require.LessOrEqual(t, inflight, int64(limit))
		require.NoError(t, e.refresh(ctx, e.store))
		rows, err := e.store.QueueRows(ctx, model, store.QueueQueued)
		require.NoError(t, err)
		return len(rows) == 0
	}, time.Minute, 20*time.Millisecond)
	require.Greater(t, passes, 3, "the queue had to wait for capacity")

	order, count := e.createdByIntent()
	require.Equal(t, intents, order, "created in queue order")
	for _, intent := range intents {
		require.Equal(t, 1, count[intent], intent)
		q, err := e.store.QueuedBatch(ctx, intent)
		require.NoError(t, err)
		require.Equal(t, store.QueueCreated, q.State)
		b, err := e.store.GetBatch(ctx, q.BatchID)
		require.NoError(t, err, "tracked")
		require.Equal(t, q.EstimatedTokens, *b.EstimatedTokens)
		require.Equal(t, "sha-"+intent, b.SpoolSHA256)
		require.Equal(t, intent, b.Metadata[batchapi.MetaIntent])
		require.Equal(t, "quota", b.Metadata["team"])
	}
	require.Zero(t, e.emu.Stats().TokenLimitFailures)
}

// TestConcurrentAdmittersNeverPassTheLimit is the test the issue asks for: three admitters, each with its own
// database connections and API client as separate processes would have, run passes at once, over and over, on one
// queue while batches finish. A sampler checks, all along, that the estimated tokens in flight (in the database, and
// of the batches the emulator holds in flight) never pass the limit; at the end every row has exactly one batch and
// the emulator failed none with token_limit_exceeded.
func TestConcurrentAdmittersNeverPassTheLimit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const limit = 1000
	e := newEnv(t, limit)
	estimate := map[string]int64{}
	var intents []string
	for i := range 12 {
		intent := fmt.Sprintf("intent-%02d", i)
		q, _ := e.enqueue(t, intent, 3, 250+50*(i%3))
		estimate[intent] = q.EstimatedTokens
		intents = append(intents, intent)
	}

	var (
		wg       sync.WaitGroup
		done     atomic.Bool
		passes   atomic.Int64
		maxDB    atomic.Int64
		maxEmu   atomic.Int64
		errsMu   sync.Mutex
		failures []error
	)
	fail := func(err error) {
		if err != nil && ctx.Err() == nil {
			errsMu.Lock()
			failures = append(failures, err)
			errsMu.Unlock()
		}
	}
	raise := func(v *atomic.Int64, n int64) {
		for cur := v.Load(); n > cur && !v.CompareAndSwap(cur, n); cur = v.Load() {
		}
	}
	for range 3 {
		a := e.admitter(t)
		wg.Go(func() {
			for !done.Load() && ctx.Err() == nil {
				_, err := a.Admit(ctx, model)
				fail(err)
				passes.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	poller := e.open(t)
	wg.Go(func() {
		for !done.Load() && ctx.Err() == nil {
			fail(e.refresh(ctx, poller))
			time.Sleep(5 * time.Millisecond)
		}
	})
	sampler := e.open(t)
	wg.Go(func() {
		for !done.Load() && ctx.Err() == nil {
			n, err := sampler.InflightTokens(ctx, model, 1)
			fail(err)
			raise(&maxDB, n)
			var emu int64
			for _, b := range e.emu.Batches() {
				switch b.Status {
				case "validating", "in_progress", "finalizing":
					emu += estimate[b.Metadata[batchapi.MetaIntent]]
				}
			}
			raise(&maxEmu, emu)
		}
	})

	for ctx.Err() == nil {
		rows, err := e.store.QueueRows(ctx, model, store.QueueQueued)
		require.NoError(t, err)
		creating, err := e.store.QueueRows(ctx, model, store.QueueCreating)
		require.NoError(t, err)
		if len(rows)+len(creating) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	done.Store(true)
	wg.Wait()
	require.NoError(t, ctx.Err(), "every row admitted in time")
	require.Empty(t, failures)

	t.Logf("%d admission passes; most estimated in flight: %d in the database, %d in the emulator", passes.Load(), maxDB.Load(), maxEmu.Load())
	require.Greater(t, passes.Load(), int64(3), "passes ran over and over")
	require.LessOrEqual(t, maxDB.Load(), int64(limit))
	require.LessOrEqual(t, maxEmu.Load(), int64(limit))
	require.Positive(t, maxEmu.Load(), "the sampler saw batches in flight")
	require.Zero(t, e.emu.Stats().TokenLimitFailures)
	order, count := e.createdByIntent()
	require.Equal(t, intents, order, "created in queue order")
	for _, intent := range intents {
		require.Equal(t, 1, count[intent], "one batch for %s", intent)
	}
}

// TestAdmitReconcilesAnInterruptedCreate: an admitter died after sending a create (the row is left creating). The
// next pass finds the batch in the API's list by the intent's metadata and records it rather than creating a
// second; a row left creating whose create never happened is created, once.
func TestAdmitReconcilesAnInterruptedCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, 100_000)
	made, _ := e.enqueue(t, "intent-made", 2, 100)
	lost, _ := e.enqueue(t, "intent-lost", 2, 100)
	sent := time.Now().Add(-time.Second)
	require.NoError(t, e.store.MarkCreating(ctx, made.QueueID, sent))
	require.NoError(t, e.store.MarkCreating(ctx, lost.QueueID, sent))
	b, err := e.oa.Batches.New(ctx, openai.BatchNewParams{
		InputFileID: made.InputFileID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
		Metadata:         map[string]string{batchapi.MetaIntent: made.Intent, batchapi.MetaSpoolSHA256: made.SpoolSHA256},
	})
	require.NoError(t, err)
	require.Equal(t, 1, e.emu.Stats().BatchCreates)

	created, err := (&admission.Admitter{Store: e.store, Providers: oaiprov.Set(e.api)}).Admit(ctx, "")
	require.NoError(t, err)
	require.Len(t, created, 2)
	require.Equal(t, 2, e.emu.Stats().BatchCreates, "the created batch is found, the lost one created once")

	require.Equal(t, made.Intent, created[0].Intent, "reconciled in queue order")
	require.Equal(t, b.ID, created[0].BatchID)
	require.Equal(t, store.QueueCreated, created[0].State)
	q, err := e.store.QueuedBatch(ctx, made.Intent)
	require.NoError(t, err)
	require.Equal(t, store.QueueCreated, q.State)
	require.Equal(t, b.ID, q.BatchID)
	_, err = e.store.GetBatch(ctx, b.ID)
	require.NoError(t, err, "tracked")
	q, err = e.store.QueuedBatch(ctx, lost.Intent)
	require.NoError(t, err)
	require.Equal(t, store.QueueCreated, q.State)

	created, err = (&admission.Admitter{Store: e.store, Providers: oaiprov.Set(e.api)}).Admit(ctx, "")
	require.NoError(t, err)
	require.Empty(t, created)
	_, count := e.createdByIntent()
	require.Equal(t, map[string]int{made.Intent: 1, lost.Intent: 1}, count)
}

// TestAdmitSetsAsideWhatCannotBeCreated: a batch larger than the quota, and a batch whose input file is gone, do not
// block the queue: the first keeps its place with an error, the second becomes file_gone, and the rows behind them
// are created. A new upload of the lost file puts it back in the queue, and it is created.
func TestAdmitSetsAsideWhatCannotBeCreated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const limit = 1000
	e := newEnv(t, limit)
	huge, _ := e.enqueue(t, "intent-huge", 4, 1200)
	gone, _ := e.enqueue(t, "intent-gone", 2, 100)
	ok, _ := e.enqueue(t, "intent-ok", 2, 100)
	_, err := e.oa.Files.Delete(ctx, gone.InputFileID)
	require.NoError(t, err)

	a := &admission.Admitter{Store: e.store, Providers: oaiprov.Set(e.api)}
	created, err := a.Admit(ctx, model)
	require.NoError(t, err)
	require.Len(t, created, 1)
	require.Equal(t, ok.Intent, created[0].Intent)

	q, err := e.store.QueuedBatch(ctx, huge.Intent)
	require.NoError(t, err)
	require.Equal(t, store.QueueQueued, q.State)
	require.Contains(t, q.Error, "can never be admitted")
	q, err = e.store.QueuedBatch(ctx, gone.Intent)
	require.NoError(t, err)
	require.Equal(t, store.QueueFileGone, q.State)
	require.Contains(t, q.Error, "No such File")

	_, _, _, pending, err := e.store.Pending(ctx, 0)
	require.NoError(t, err)
	require.Zero(t, pending, "neither the oversized nor the file_gone row keeps a poller waiting")

	again, _ := e.enqueue(t, gone.Intent, 2, 100)
	require.Equal(t, gone.QueueID, again.QueueID)
	require.Equal(t, store.QueueQueued, again.State)
	created, err = a.Admit(ctx, model)
	require.NoError(t, err)
	require.Len(t, created, 1)
	require.Equal(t, gone.Intent, created[0].Intent)
	_, count := e.createdByIntent()
	require.Equal(t, map[string]int{ok.Intent: 1, gone.Intent: 1}, count)
}
