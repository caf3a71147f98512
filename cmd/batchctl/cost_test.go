package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/cost"
	"github.com/batchctl/batchctl/emulator"
)

// TestCostByModel: batchctl cost --by model -o json sums each model's loaded batches; cost_usd is the formula on the
// summed tokens at the model's Batch API price (one price per model, so the sum of the batches' exact costs equals
// it), sync_cost_usd twice that; a model without a price has cost_usd null and counts its unpriced batches. The
// table adds a TOTAL line whose cost ends in "+?" when a cost is unknown; status shows each batch's COST.
func TestCostByModel(t *testing.T) {
	t.Parallel()
	e := newDownstreamEnv(t, emulator.Options{})
	dir := t.TempDir()
	known, _ := writeRecords(t, dir, "known.jsonl", "k", 15)
	unknown, _ := writeRecords(t, dir, "unknown.jsonl", "u", 4)
	for _, sub := range [][]string{
		{"submit", "--model", "gpt-4o-mini", "--id-field", "id", "--max-requests", "10", known},
		{"submit", "--model", "mystery-model", "--id-field", "id", unknown},
	} {
		r := runCLI(t, "", e.env, sub...)
		require.Equal(t, exitOK, r.code, r.stderr)
	}
	r := runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stderr, "no price for model")

	r = runCLI(t, "", e.env, "cost", "--by", "model", "-o", "json")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2, r.stdout)
	type line struct {
		CostUSD         *json.Number `json:"cost_usd"`
		SyncCostUSD     *json.Number `json:"sync_cost_usd"`
		UnpricedBatches int64        `json:"unpriced_batches"`
	}
	var raw []map[string]any
	var got []line
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		raw = append(raw, m)
		var g line
		dec := json.NewDecoder(strings.NewReader(l))
		dec.UseNumber()
		require.NoError(t, dec.Decode(&g))
		got = append(got, g)
	}
	require.Equal(t, "gpt-4o-mini", raw[0]["model"])
	require.EqualValues(t, 2, raw[0]["batches"])
	require.EqualValues(t, 15, raw[0]["requests"])
	in, cached, out := int64(raw[0]["input_tokens"].(float64)), int64(raw[0]["cached_tokens"].(float64)), int64(raw[0]["output_tokens"].(float64))
	require.Positive(t, in)
	require.Positive(t, out)
	// 0.075 / 0.0375 / 0.30 USD per 1M tokens: micro-dollars per 1M × tokens = pico-dollars.
	want := cost.Pico((in-cached)*75_000 + cached*37_500 + out*300_000)
	require.NotNil(t, got[0].CostUSD)
	require.Equal(t, want.USD(), got[0].CostUSD.String())
	require.Equal(t, (2 * want).USD(), got[0].SyncCostUSD.String())
	require.Zero(t, got[0].UnpricedBatches)
	// submit estimated each batch before sending it (output bounded by max_tokens or 1 024 a request): the ratio of
	// the real cost to the estimate is reported, below 1 since the estimate bounds the output.
	ratio, ok := raw[0]["estimate_ratio"].(float64)
	require.True(t, ok, "estimate_ratio: %v", raw[0]["estimate_ratio"])
	require.Greater(t, ratio, 0.0)
	require.Less(t, ratio, 1.0)

	require.Equal(t, "mystery-model", raw[1]["model"])
	require.Nil(t, raw[1]["cost_usd"], "no price: null, never 0")
	require.Nil(t, raw[1]["sync_cost_usd"])
	require.EqualValues(t, 1, raw[1]["unpriced_batches"])
	require.Positive(t, raw[1]["input_tokens"])

	r = runCLI(t, "", e.env, "cost")
	require.Equal(t, exitOK, r.code, r.stderr)
	table := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, table, 4, r.stdout)
	require.Regexp(t, `MODEL\s+BATCHES\s+REQUESTS\s+INPUT\s+CACHED\s+OUTPUT\s+COST \(USD\)\s+SYNC COST \(USD\)\s+COST/ESTIMATE`, table[0])
	require.Regexp(t, `^\s*gpt-4o-mini\s+2\s+15\s.*\s0\.\d{6}\s+0\.\d{6}\s+0\.\d\d$`, table[1])
	require.Regexp(t, `^\s*mystery-model\s+1\s+4\s.*\s-\s+-\s+-$`, table[2])
	require.Regexp(t, `^\s*TOTAL\s+3\s+19\s.*\s0\.\d{6}\+\?\s+0\.\d{6}\+\?$`, table[3])

	r = runCLI(t, "", e.env, "status")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Regexp(t, `(?m)^batch_\S+\s+completed\s+\S+\s+4/4/0\s+4\s+\d+\s+-\s+1$`, r.stdout, "the unpriced batch's COST is -")
	require.Regexp(t, `(?m)^TOTAL \(3 batches\)\s+19/19/0\s+19\s+\d+\s+0\.\d{6}\+\?\s*$`, r.stdout)

	for _, by := range []string{"source", "day", "batch"} {
		r = runCLI(t, "", e.env, "cost", "--by", by, "-o", "json", "--since", "1h")
		require.Equal(t, exitOK, r.code, r.stderr)
		require.NotEmpty(t, strings.TrimSpace(r.stdout))
	}
	require.Contains(t, runCLI(t, "", e.env, "cost", "--by", "batch", "-o", "json").stdout, `{"batch_id":"batch_`)
	r = runCLI(t, "", e.env, "cost", "--by", "week")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "--by")
}

// TestPollPricesFile: poll refuses a bad --prices / BATCHCTL_PRICES file as a usage error naming the file.
func TestPollPricesFile(t *testing.T) {
	t.Parallel()
	e := newDownstreamEnv(t, emulator.Options{})
	bad := filepath.Join(t.TempDir(), "bad-prices.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"m": {"input": 1}}`), 0o600))
	r := runCLI(t, "", e.env, append(fastPoll, "--prices", bad)...)
	require.Equal(t, exitUsage, r.code, r.stderr)
	require.Contains(t, r.stderr, "bad-prices.json")
	require.Contains(t, r.stderr, "input and output prices are required")

	env := map[string]string{cost.EnvPrices: bad}
	for k, v := range e.env {
		env[k] = v
	}
	r = runCLI(t, "", env, fastPoll...)
	require.Equal(t, exitUsage, r.code, r.stderr)
	require.Contains(t, r.stderr, "bad-prices.json")
}
