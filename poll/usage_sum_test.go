package poll

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/cost"
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
