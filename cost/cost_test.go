package cost_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/cost"
)

// TestFormula pins cost = (input − cached) × input + cached × cached_input + output × output, per 1M tokens, exactly.
func TestFormula(t *testing.T) {
	t.Parallel()
	p, ok := cost.Default().Lookup("gpt-4o-mini") // 0.075 / 0.0375 / 0.30 USD per 1M
	require.True(t, ok)
	for _, tc := range []struct {
		name string
		u    cost.Usage
		usd  string
	}{
		{"nothing", cost.Usage{}, "0.000000000000"},
		{"one input token", cost.Usage{Input: 1}, "0.000000075000"},
		{"one cached token", cost.Usage{Input: 1, Cached: 1}, "0.000000037500"},
		{"one output token", cost.Usage{Output: 1}, "0.000000300000"},
		// 1M input of which 256 000 cached, 1M output: 744 000 × 0.075 + 256 000 × 0.0375 + 1M × 0.30, per 1M.
		{"mixed", cost.Usage{Input: 1_000_000, Cached: 256_000, Output: 1_000_000}, "0.365400000000"},
		{"cached beyond input", cost.Usage{Input: 10, Cached: 20}, "0.000000750000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := p.Cost(tc.u)
			require.NoError(t, err)
			require.Equal(t, tc.usd, c.USD())
			back, err := cost.ParseUSD(tc.usd)
			require.NoError(t, err)
			require.Equal(t, c, back)
		})
	}
	big := cost.Price{Input: 1 << 40}
	_, err := big.Cost(cost.Usage{Input: 1 << 40})
	require.ErrorIs(t, err, cost.ErrOverflow)

	c, err := cost.Pico(1_500_000).Sync()
	require.NoError(t, err)
	require.Equal(t, "0.000003000000", c.USD(), "sync = 2 × batch")
}

// TestResolve pins the snapshot rule: the exact name, else the name without a trailing -YYYY-MM-DD; never a prefix.
func TestResolve(t *testing.T) {
	t.Parallel()
	tab := cost.Default()
	for _, tc := range []struct {
		model, want string
		ok          bool
	}{
		{"gpt-4o-mini", "gpt-4o-mini", true},
		{"gpt-4o-mini-2024-07-18", "gpt-4o-mini", true},
		{"gpt-4o-2024-08-06", "gpt-4o", true},
		{"gpt-4.1-nano-2025-04-14", "gpt-4.1-nano", true},
		{"o3-2025-04-16", "o3", true},
		{"gpt-4o-mini-search-preview", "", false},   // a different model, not gpt-4o-mini
		{"o3-pro", "", false},                       // not o3
		{"gpt-4o-mini-2024-07", "", false},          // not a full date
		{"gpt-4o-mini-2024-07-18-extra", "", false}, // the date is not trailing
		{"gpt-4o-mini-20240718", "", false},
		{"gpt-5-mini-2025-08-07", "gpt-5-mini", true},
		{"claude-haiku-4-5-20251001", "claude-haiku-4-5", true},
		{"claude-haiku-4-5", "claude-haiku-4-5", true},
		{"claude-haiku-4-5-2025100", "", false},
		{"unknown-model", "", false},
		{"", "", false},
	} {
		got, ok := tab.Resolve(tc.model)
		require.Equal(t, tc.ok, ok, tc.model)
		require.Equal(t, tc.want, got, tc.model)
	}
}

// TestDefaultTable: the shipped table parses, is dated and sourced, and has the models the docs promise.
func TestDefaultTable(t *testing.T) {
	t.Parallel()
	tab := cost.Default()
	require.NotEmpty(t, tab.Date)
	require.Contains(t, tab.Source, "openai.com")
	for _, m := range []string{"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini",
		"gpt-5", "gpt-5-mini", "gpt-5-nano", "text-embedding-3-small", "text-embedding-3-large"} {
		p, ok := tab.Lookup(m)
		require.True(t, ok, m)
		require.Positive(t, p.Input, m)
	}
	p, _ := tab.Lookup("gpt-4o-mini")
	require.Equal(t, cost.Price{Input: 75_000, CachedInput: 37_500, Output: 300_000}, p)
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// TestLoadOverrides: a price file replaces a default entry and adds models; cached_input defaults to input.
func TestLoadOverrides(t *testing.T) {
	t.Parallel()
	path := writeFile(t, `{"_date": "2030-01-01", "gpt-4o-mini": {"input": 1, "cached_input": 0.5, "output": 2},
		"my-finetune": {"input": 0.000001, "output": 3}}`)
	tab, err := cost.Load(path)
	require.NoError(t, err)
	require.Equal(t, "2030-01-01", tab.Date)
	p, ok := tab.Lookup("gpt-4o-mini-2024-07-18")
	require.True(t, ok)
	require.Equal(t, cost.Price{Input: 1_000_000, CachedInput: 500_000, Output: 2_000_000}, p)
	p, ok = tab.Lookup("my-finetune")
	require.True(t, ok)
	require.Equal(t, cost.Price{Input: 1, CachedInput: 1, Output: 3_000_000}, p, "cached_input defaults to input")
	_, ok = tab.Lookup("gpt-4o")
	require.True(t, ok, "defaults stay")
	require.NotSame(t, cost.Default(), tab)
	_, ok = cost.Default().Lookup("my-finetune")
	require.False(t, ok, "a loaded file never changes the defaults")

	tab, err = cost.Load("")
	require.NoError(t, err)
	require.Equal(t, cost.Default().Models(), tab.Models())
}

// TestLoadErrors: every bad file is refused with an error naming the file and the fault.
func TestLoadErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, body, want string }{
		{"not json", `{`, "want a JSON object"},
		{"array", `[]`, "want a JSON object"},
		{"entry not an object", `{"m": 1}`, "model m"},
		{"typo", `{"m": {"input": 1, "outptu": 2}}`, "outptu"},
		{"missing output", `{"m": {"input": 1}}`, "input and output prices are required"},
		{"string price", `{"m": {"input": "1", "output": 2}}`, "model m"},
		{"negative", `{"m": {"input": -1, "output": 2}}`, "negative"},
		{"too precise", `{"m": {"input": 0.0000001, "output": 2}}`, "more than 6 decimals"},
		{"exponent", `{"m": {"input": 7.5e-2, "output": 2}}`, "plain decimal"},
		{"bad date", `{"_date": 5}`, "_date"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.body)
			_, err := cost.Load(path)
			require.ErrorContains(t, err, path)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := cost.Load(filepath.Join(t.TempDir(), "missing.json"))
	require.ErrorContains(t, err, "missing.json")
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestUnknownWarnsOnce: an unpriced model is unknown (never 0) and logged once per model.
func TestUnknownWarnsOnce(t *testing.T) {
	t.Parallel()
	_, ok, err := cost.Default().Cost("no-such-model", cost.Usage{Input: 5})
	require.NoError(t, err)
	require.False(t, ok)

	var buf bytes.Buffer
	w := &cost.UnknownWarner{Logger: slog.New(slog.NewTextHandler(&buf, nil))}
	require.True(t, w.Warn("a"))
	require.False(t, w.Warn("a"))
	require.True(t, w.Warn("b"))
	require.Equal(t, 2, bytes.Count(buf.Bytes(), []byte("no price for model")))
}
