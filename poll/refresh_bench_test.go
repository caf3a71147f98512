package poll_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/pgtest"
	"github.com/batchctl/batchctl/poll"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
	"github.com/batchctl/batchctl/store"
)

// refreshBenchBatches is the number of batches in flight during BenchmarkRefreshRound, the figure make bench reports.
const refreshBenchBatches = 1000

// BenchmarkRefreshRound measures one poll round over 1 000 batches in flight (kept validating by an hour-long
// phase), against the emulator over real HTTP and a migrated schema. The bulk sub-benchmark is the daemon's
// Refresh (GET /v1/batches pages of 100, one upsert per batch); the naive one is what a poller without a list call
// would do, one GET /v1/batches/{id} per batch, with no database work at all, so it is a lower bound of the naive
// poller's time. Both report the emulator's count of API calls per round (list_calls/op, get_calls/op).
//
//	go test -run '^$' -bench BenchmarkRefreshRound -benchtime 5x ./poll/
func BenchmarkRefreshRound(b *testing.B) {
	ctx := context.Background()
	emu, err := emulator.New(emulator.Options{PhaseDelay: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(emu)
	b.Cleanup(func() { ts.Close(); emu.Close() })
	api := openai.NewClient(option.WithBaseURL(ts.URL+"/v1"), option.WithAPIKey("bench-key"))

	url, schema := pgtest.MigratedSchema(b)
	s, err := store.Open(ctx, url, schema)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	ids := createTrackedBatches(b, api, s, refreshBenchBatches)

	calls := func(b *testing.B, before, after emulator.Stats, rounds int) {
		b.ReportMetric(float64(after.BatchLists-before.BatchLists)/float64(rounds), "list_calls/op")
		b.ReportMetric(float64(after.BatchGets-before.BatchGets)/float64(rounds), "get_calls/op")
		b.ReportMetric(float64(len(ids)), "batches")
	}

	b.Run("bulk", func(b *testing.B) {
		d, err := poll.New(poll.Config{Store: s, Providers: oaiprov.Set(&batchapi.Client{API: &api})})
		if err != nil {
			b.Fatal(err)
		}
		before, rounds := emu.Stats(), 0
		for b.Loop() {
			st, err := d.Refresh(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if st.InFlight != len(ids) || st.Updated != len(ids) {
				b.Fatalf("refresh saw %d batches in flight and updated %d, want %d", st.InFlight, st.Updated, len(ids))
			}
			rounds++
		}
		calls(b, before, emu.Stats(), rounds)
	})

	b.Run("naive", func(b *testing.B) {
		before, rounds := emu.Stats(), 0
		for b.Loop() {
			for _, id := range ids {
				if _, err := api.Batches.Get(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
			rounds++
		}
		calls(b, before, emu.Stats(), rounds)
	})
}

// createTrackedBatches creates n one-request batches at the emulator, eight at a time, and tracks each in s.
func createTrackedBatches(b *testing.B, api openai.Client, s *store.Store, n int) []string {
	b.Helper()
	ctx := context.Background()
	ids := make([]string, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				if err := createTrackedBatch(ctx, api, s, i, &ids[i]); err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return ids
}

func createTrackedBatch(ctx context.Context, api openai.Client, s *store.Store, i int, id *string) error {
	body := fmt.Sprintf(`{"custom_id":"r-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"review %d"}]}}`+"\n", i, i)
	f, err := api.Files.New(ctx, openai.FileNewParams{
		File: openai.File(bytes.NewReader([]byte(body)), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch,
	})
	if err != nil {
		return fmt.Errorf("upload batch file %d: %w", i, err)
	}
	bt, err := api.Batches.New(ctx, openai.BatchNewParams{
		InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
	})
	if err != nil {
		return fmt.Errorf("create batch %d: %w", i, err)
	}
	if _, err := s.TrackBatch(ctx, store.Batch{BatchID: bt.ID, Status: store.StatusValidating,
		Endpoint: "/v1/chat/completions", InputFileID: f.ID, Source: "bench"}); err != nil {
		return fmt.Errorf("track batch %s: %w", bt.ID, err)
	}
	*id = bt.ID
	return nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
