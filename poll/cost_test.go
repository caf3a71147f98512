package poll_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/cost"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/poll"
	"github.com/batchctl/batchctl/store"
)

// cachedRequestFile renders n chat requests that share a long system prompt (1 500 emulator tokens), so every
// request after the first reports cached tokens.
func cachedRequestFile(prefix, model string, n int) []byte {
	system := strings.Repeat("You are a careful classifier of product reviews. ", 130)[:6000]
	var buf bytes.Buffer
	for i := range n {
		fmt.Fprintf(&buf, `{"custom_id":"%s-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"system","content":%q},{"role":"user","content":"review number %d"}]}}`+"\n",
			prefix, i+1, model, system, i+1)
	}
	return buf.Bytes()
}

// answeredUsage sums, independently of the poller, the usage the emulator reported in the batch's loaded 200 answers.
func answeredUsage(t *testing.T, e *env, batchID string) (in, cached, out, reasoning int64, answered int) {
	t.Helper()
	for _, r := range e.results(t, batchID) {
		if r.Response == nil || r.StatusCode == nil || *r.StatusCode != 200 {
			continue
		}
		var body struct {
			Usage struct {
				PromptTokens        int64 `json:"prompt_tokens"`
				CompletionTokens    int64 `json:"completion_tokens"`
				PromptTokensDetails struct {
					CachedTokens int64 `json:"cached_tokens"`
				} `json:"prompt_tokens_details"`
				CompletionTokensDetails struct {
					ReasoningTokens int64 `json:"reasoning_tokens"`
				} `json:"completion_tokens_details"`
			} `json:"usage"`
		}
		require.NoError(t, json.Unmarshal(r.Response, &body))
		in += body.Usage.PromptTokens
		cached += body.Usage.PromptTokensDetails.CachedTokens
		out += body.Usage.CompletionTokens
		reasoning += body.Usage.CompletionTokensDetails.ReasoningTokens
		answered++
	}
	return in, cached, out, reasoning, answered
}

// gpt4oMiniPico is the test's own arithmetic of gpt-4o-mini's Batch API price (0.075 / 0.0375 / 0.30 USD per 1M
// tokens): micro-dollars per 1M tokens × tokens = pico-dollars.
func gpt4oMiniPico(in, cached, out int64) cost.Pico {
	return cost.Pico((in-cached)*75_000 + cached*37_500 + out*300_000)
}

// TestLoadStoresCost runs the real poller over emulator batches and pins cost_usd to the arithmetic on the usage the
// emulator reported: a batch of a snapshot model with a long shared system prompt (cached tokens priced at the cached
// rate), and a batch of a model without a price (cost_usd null, warned once). The cost metric counts the priced one.
func TestLoadStoresCost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	priced := e.submit(t, cachedRequestFile("p", "gpt-4o-mini-2024-07-18", 12))
	unpriced := e.submit(t, cachedRequestFile("u", "mystery-model", 3))

	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	cfg := e.config(t)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.Metrics = poll.NewMetrics(reg, e.store, cfg.Logger)
	runUntilDone(t, cfg, time.Minute)

	ctx := context.Background()
	b, err := e.store.GetBatch(ctx, priced)
	require.NoError(t, err)
	in, cached, out, reasoning, answered := answeredUsage(t, e, priced)
	require.Equal(t, 12, answered)
	require.Equal(t, int64(11*1408), cached, "every request after the first shares 1 408 tokens of system prompt")
	require.Equal(t, in, *b.Usage.PromptTokens)
	require.Equal(t, cached, *b.Usage.CachedTokens)
	require.Equal(t, out, *b.Usage.CompletionTokens)
	require.Equal(t, reasoning, *b.Usage.ReasoningTokens)
	want := gpt4oMiniPico(in, cached, out)
	require.NotNil(t, b.Usage.CostUSD)
	require.Equal(t, want.USD(), *b.Usage.CostUSD)
	require.Less(t, want, gpt4oMiniPico(in, 0, out), "cached tokens are cheaper")
	require.Equal(t, map[string]float64{"gpt-4o-mini": want.Float()}, costMetric(t, reg),
		"the metric counts the priced batch once, under its base model")

	u, err := e.store.GetBatch(ctx, unpriced)
	require.NoError(t, err)
	require.NotNil(t, u.Usage.PromptTokens, "usage is loaded")
	require.Nil(t, u.Usage.CostUSD, "no price: cost unknown, never 0")
	require.Equal(t, 1, strings.Count(logs.String(), "no price for model"), logs.String())
	require.Contains(t, logs.String(), "model=mystery-model")
}

// TestExpiredBatchCostCountsAnsweredLines: an expired batch's partial output is billed, so its cost is the
// arithmetic on the usage of exactly the lines the emulator answered before it expired.
func TestExpiredBatchCostCountsAnsweredLines(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{ExpireRate: 1, ExpireCompletedShare: 0.5})
	batchID := e.submit(t, cachedRequestFile("x", "gpt-4o-mini", 20))
	runUntilDone(t, e.config(t), time.Minute)

	b, err := e.store.GetBatch(context.Background(), batchID)
	require.NoError(t, err)
	require.Equal(t, store.StatusExpired, b.Status)
	in, cached, out, _, answered := answeredUsage(t, e, batchID)
	require.Positive(t, answered)
	require.Less(t, answered, 20)
	require.Equal(t, answered, b.RequestCompleted)
	require.Positive(t, cached)
	require.Equal(t, gpt4oMiniPico(in, cached, out).USD(), *b.Usage.CostUSD)
}

// costMetric reads batchctl_cost_usd_total by model from reg.
func costMetric(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "batchctl_cost_usd_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}
