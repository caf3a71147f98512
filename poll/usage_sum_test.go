package poll

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/cost"
	"github.com/batchctl/batchctl/store"
)

// TestUsageSumDetails: cached and reasoning tokens are summed from both usage shapes (chat/completions and
// responses) as parts of the prompt and completion tokens, not added to them; without a model on the batch row the
// bodies' model prices the batch, a snapshot resolving to its base entry; reasoning is billed once, as output.
func TestUsageSumDetails(t *testing.T) {
	t.Parallel()
	u := &usageSum{pricing: pricing{prices: cost.Default(), unknown: &cost.UnknownWarner{}, log: slog.New(slog.DiscardHandler)}}
	u.add([]byte(`{"model":"o4-mini-2025-04-16","usage":{"prompt_tokens":2000,"completion_tokens":300,"total_tokens":2300,
		"prompt_tokens_details":{"cached_tokens":1024},"completion_tokens_details":{"reasoning_tokens":256}}}`))
	u.add([]byte(`{"model":"o4-mini-2025-04-16","usage":{"input_tokens":1500,"output_tokens":100,"total_tokens":1600,
		"input_tokens_details":{"cached_tokens":1152},"output_tokens_details":{"reasoning_tokens":64}}}`))
	u.add([]byte(`{"model":"o4-mini-2025-04-16","usage":{"prompt_tokens":7,"total_tokens":7}}`)) // embeddings-like
	u.add([]byte(`{"error":{"message":"no usage"}}`))
	row := u.row()
	require.Equal(t, int64(3507), *row.PromptTokens)
	require.Equal(t, int64(400), *row.CompletionTokens)
	require.Equal(t, int64(3907), *row.TotalTokens)
	require.Equal(t, int64(2176), *row.CachedTokens)
	require.Equal(t, int64(320), *row.ReasoningTokens)
	// o4-mini at Batch API prices: 0.55 / 0.1375 / 2.20 USD per 1M tokens.
	want := cost.Pico((3507-2176)*550_000 + 2176*137_500 + 400*2_200_000)
	require.Equal(t, want.USD(), *row.CostUSD)
	require.Equal(t, "o4-mini-2025-04-16", u.model)

	// The batch row's model wins over the bodies'.
	v := &usageSum{pricing: pricing{prices: cost.Default(), unknown: &cost.UnknownWarner{}, log: slog.New(slog.DiscardHandler), batchModel: "gpt-4o-mini"}}
	v.add([]byte(`{"model":"something-else","usage":{"prompt_tokens":10,"completion_tokens":1}}`))
	require.Equal(t, cost.Pico(10*75_000+300_000).USD(), *v.row().CostUSD)

	// Nothing with usage: every column null, cost included.
	require.Equal(t, (&usageSum{}).row(), (&usageSum{}).row())
	require.Nil(t, (&usageSum{}).row().CostUSD)
}

// TestUsageSumImages: the GPT image models' usage (input_tokens with text and image details, output_tokens of image
// tokens) sums like a response's; DALL·E and moderation bodies, which report none, add nothing, and a batch of
// them only keeps every column null. Generations price at the table's input and output prices; input image tokens
// (edits) have their own price at the API, so a batch with them has no cost rather than a wrong one.
func TestUsageSumImages(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"gpt-image-1": {"input": 2.5, "output": 20}}`), 0o600))
	prices, err := cost.Load(file)
	require.NoError(t, err)
	newSum := func() *usageSum {
		return &usageSum{pricing: pricing{prices: prices, unknown: &cost.UnknownWarner{}, log: slog.New(slog.DiscardHandler), batchModel: "gpt-image-1"}}
	}
	gen := `{"created":1,"data":[{"b64_json":"iVBORw0KGgo="}],"background":"opaque","output_format":"png","quality":"low","size":"1024x1024",
		"usage":{"input_tokens":3,"input_tokens_details":{"text_tokens":3,"image_tokens":0},"output_tokens":272,"output_tokens_details":{"image_tokens":272,"text_tokens":0},"total_tokens":275}}`
	u := newSum()
	u.add([]byte(gen))
	u.add([]byte(gen))
	u.add([]byte(`{"created":1,"data":[{"url":"https://x/y.png","revised_prompt":"p"}]}`)) // DALL·E: no usage
	row := u.row()
	require.Equal(t, int64(6), *row.PromptTokens)
	require.Equal(t, int64(544), *row.CompletionTokens)
	require.Equal(t, int64(550), *row.TotalTokens)
	require.Zero(t, *row.CachedTokens)
	require.Zero(t, *row.ReasoningTokens)
	require.Equal(t, cost.Pico(6*2_500_000+544*20_000_000).USD(), *row.CostUSD)

	edit := newSum()
	edit.add([]byte(`{"created":1,"data":[],"usage":{"input_tokens":275,"input_tokens_details":{"text_tokens":3,"image_tokens":272},"output_tokens":272,"total_tokens":547}}`))
	row = edit.row()
	require.Equal(t, int64(275), *row.PromptTokens, "input image tokens are part of the input tokens")
	require.Nil(t, row.CostUSD, "no cost rather than image tokens at the text price")

	none := newSum()
	none.add([]byte(`{"id":"modr-1","model":"omni-moderation-latest","results":[]}`))
	none.add([]byte(`{"created":1,"data":[{"url":"https://x/y.png"}]}`))
	require.Equal(t, store.Usage{}, none.row(), "nothing reported: every column null")
}
