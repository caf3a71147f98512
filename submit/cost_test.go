package submit_test

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/cost"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/submit"
)

// Every line carries estimated_cost_usd: the estimated prompt tokens at the input price plus the bound of the output
// tokens (max_tokens, else DefaultOutputTokens) at the output price; null for a model without a price.
func TestEstimatedCost(t *testing.T) {
	t.Parallel()
	_, client := newEmulator(t, emulator.Options{})
	table := cost.Default()
	price, ok := table.Lookup("gpt-4o-mini")
	require.True(t, ok)
	line := func(id, model string, maxTokens string) string {
		return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"hello there"}]%s}}`, id, model, maxTokens)
	}
	body := func(l string) []byte { return []byte(l[strings.Index(l, `"body":`)+7 : len(l)-1]) }

	for _, dry := range []bool{true, false} {
		var out bytes.Buffer
		opts := baseOptions(t, client, &out)
		opts.Prices, opts.DryRun = table, dry
		if dry {
			opts.Client = nil
		}
		a, b := line("a", "gpt-4o-mini", `,"max_tokens":5`), line("b", "gpt-4o-mini", "")
		opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", a, b)}
		require.NoError(t, submit.Run(t.Context(), opts))
		cs := decodeCreated(t, out.String())
		require.Len(t, cs, 1)
		in := submit.EstimateTokens(body(a)) + submit.EstimateTokens(body(b))
		want, err := price.Cost(cost.Usage{Input: in, Output: 5 + submit.DefaultOutputTokens})
		require.NoError(t, err)
		require.NotNil(t, cs[0].EstimatedCostUSD)
		require.True(t, cs[0].EstimatedCostUSD.Known)
		require.Equal(t, want, cs[0].EstimatedCostUSD.Pico, "dry run %v", dry)
		require.Contains(t, out.String(), `"estimated_cost_usd":`+want.USD())
	}

	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Prices = table
	opts.Inputs = []submit.Input{writeInput(t, "unknown.jsonl", line("c", "no-such-model", ""))}
	require.NoError(t, submit.Run(t.Context(), opts))
	require.Contains(t, out.String(), `"estimated_cost_usd":null`)
	var c submit.Created
	require.NoError(t, json.Unmarshal(out.Bytes(), &c))
	require.Nil(t, c.EstimatedCostUSD, "null reads back as no estimate")
}

// An image request's output bound is the image tokens of its pictures (n at its quality and size; high and the
// largest standard size for auto), not DefaultOutputTokens.
func TestEstimatedCostImages(t *testing.T) {
	t.Parallel()
	prices := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"gpt-image-1": {"input": 2.5, "output": 20}}`), 0o600))
	table, err := cost.Load(prices)
	require.NoError(t, err)
	price, _ := table.Lookup("gpt-image-1")
	for _, tt := range []struct {
		body string
		out  int64
	}{
		{`{"model":"gpt-image-1","prompt":"a fox","n":2,"quality":"low"}`, 2 * 408},
		{`{"model":"gpt-image-1","prompt":"a fox","n":2,"quality":"low","size":"1024x1024"}`, 2 * 272},
		{`{"model":"gpt-image-1","prompt":"a fox"}`, 6240},
		{`{"model":"gpt-image-1","prompt":"a fox","quality":"medium","size":"1536x1024"}`, 1568},
		{`{"model":"gpt-image-1","prompt":"a fox","quality":"low","size":"2048x2048"}`, 4 * 272},
	} {
		var out bytes.Buffer
		opts := baseOptions(t, nil, &out)
		opts.Prices, opts.DryRun, opts.Endpoint = table, true, "/v1/images/generations"
		opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", `{"custom_id":"a","body":`+tt.body+`}`)}
		require.NoError(t, submit.Run(t.Context(), opts))
		cs := decodeCreated(t, out.String())
		require.Len(t, cs, 1)
		want, err := price.Cost(cost.Usage{Input: submit.EstimateTokens([]byte(tt.body)), Output: tt.out})
		require.NoError(t, err)
		require.Equal(t, want, cs[0].EstimatedCostUSD.Pico, tt.body)
	}
}

// --max-cost refuses a file whose estimate passes it before anything is uploaded; a cap above it lets it through;
// a stream sends batches until the one that would pass it.
func TestMaxCost(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Prices = cost.Default()
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(10)...)}
	opts.MaxRequests = 5
	opts.MaxCost = 1 // a pico-dollar
	err := submit.Run(t.Context(), opts)
	require.ErrorIs(t, err, submit.ErrOverBudget)
	require.Contains(t, err.Error(), "nothing was uploaded")
	require.Zero(t, srv.Stats().FileUploads)

	opts.MaxCost = 1_000_000_000_000 // a dollar
	require.NoError(t, submit.Run(t.Context(), opts))
	require.Len(t, srv.Batches(), 2)

	// A stream: the first batch fits, the second would pass the cap.
	stream := baseOptions(t, client, &out)
	stream.Prices, stream.MaxRequests = cost.Default(), 5
	one := decodeCreated(t, out.String())[0].EstimatedCostUSD.Pico
	stream.MaxCost = one + one/2
	stream.Inputs = []submit.Input{{Name: "stdin", Reader: strings.NewReader(strings.Join(records(10), "\n") + "\n")}}
	err = submit.Run(t.Context(), stream)
	require.ErrorIs(t, err, submit.ErrOverBudget)
	require.Contains(t, err.Error(), "--resume")
	require.Len(t, srv.Batches(), 3)
}

// The estimates of every line shape match those of the body as spooled: request lines written as they are
// (canonical) and rewritten (keys in another order, spaces, no url), records through the built-in form
// and through a template, ASCII and not. The spooler's goroutine estimates each line from where its body lies in the
// line, so a wrong offset would count the wrapper or lose a part of the body.
func TestEstimatesFollowTheSpooledBody(t *testing.T) {
	t.Parallel()
	table := cost.Default()
	requestLines := []string{
		`{"custom_id":"c1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"héllo"}],"max_tokens":7}}`,
		`{"body": {"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"max_completion_tokens":9} , "custom_id":"c2"}`,
		`{"custom_id":"c3","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[]}  }`,
	}
	records := []string{`{"text":"the café was fine"}`, `{"text":"日本語のレビュー"}`, `{"text":"plain"}`}
	runs := []struct {
		name     string
		lines    []string
		template string
	}{
		{"request lines", requestLines, ""},
		{"built-in form", records, ""},
		{"template", records, `{"model":"gpt-4o-mini","max_tokens":3,"messages":[{"role":"user","content":{{json .text}}}]}`},
	}
	for _, run := range runs {
		t.Run(run.name, func(t *testing.T) {
			var out bytes.Buffer
			opts := baseOptions(t, nil, &out)
			opts.Client, opts.DryRun, opts.Prices, opts.Template = nil, true, table, run.template
			opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", run.lines...)}
			require.NoError(t, submit.Run(t.Context(), opts))
			cs := decodeCreated(t, out.String())
			require.Len(t, cs, 1)

			spooled, err := os.ReadFile(cs[0].SpoolFile)
			require.NoError(t, err)
			var tokens, outTokens int64
			for l := range bytes.Lines(spooled) {
				var r struct {
					Body json.RawMessage `json:"body"`
				}
				require.NoError(t, json.Unmarshal(l, &r))
				tokens += submit.EstimateTokens(r.Body)
				var limits struct {
					MaxTokens           int64 `json:"max_tokens"`
					MaxCompletionTokens int64 `json:"max_completion_tokens"`
				}
				require.NoError(t, json.Unmarshal(r.Body, &limits))
				outTokens += cmp.Or(limits.MaxCompletionTokens, limits.MaxTokens, submit.DefaultOutputTokens)
			}
			require.Equal(t, tokens, cs[0].EstimatedTokens)
			price, ok := table.Lookup("gpt-4o-mini")
			require.True(t, ok)
			want, err := price.Cost(cost.Usage{Input: tokens, Output: outTokens})
			require.NoError(t, err)
			require.Equal(t, want, cs[0].EstimatedCostUSD.Pico)
		})
	}
}
