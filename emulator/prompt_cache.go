package emulator

import (
	"hash/fnv"
)

// Prompt caching as the real service reports it: a request whose prompt starts with the same text as an earlier
// request's, for at least PromptCacheMinTokens tokens, has the shared prefix reported as cached, in whole steps of
// PromptCacheStep tokens (usage.prompt_tokens_details.cached_tokens for chat completions,
// usage.input_tokens_details.cached_tokens for responses). The emulator measures tokens with EstimateTokens (four
// bytes each), so a prefix of k tokens is the prompt's first 4k bytes. Only requests of the same batch share a cache.
const (
	PromptCacheMinTokens = 1024
	PromptCacheStep      = 128
	// promptCacheMaxEntries bounds one batch's cache; once full, new prefixes are not remembered (known ones still
	// hit), which keeps the outcome deterministic.
	promptCacheMaxEntries = 1 << 16
)

// promptCache remembers hashes of the prompt prefixes seen in one batch, at each step of PromptCacheStep tokens
// from PromptCacheMinTokens on. It is used by the batch's lifecycle steps only, one at a time.
type promptCache struct {
	seen map[uint64]struct{}
}

func newPromptCache() *promptCache { return &promptCache{seen: map[uint64]struct{}{}} }

// cachedTokens reports how many leading tokens of prompt an earlier prompt of the batch shares (0, or a multiple of
// PromptCacheStep of at least PromptCacheMinTokens), then remembers prompt's prefixes. A nil cache caches nothing.
func (c *promptCache) cachedTokens(prompt string) int64 {
	if c == nil {
		return 0
	}
	const stepBytes = 4 * PromptCacheStep
	var cached int64
	h := fnv.New64a()
	done := 0
	for end := 4 * PromptCacheMinTokens; end <= len(prompt); end += stepBytes {
		_, _ = h.Write([]byte(prompt[done:end])) // the hash runs on: each prefix is hashed once, in one pass
		done = end
		// The length is in the key, so a prefix never matches one of another length by accident of the hash state.
		key := h.Sum64() ^ uint64(end)*0x9e3779b97f4a7c15
		if _, ok := c.seen[key]; ok {
			cached = int64(end / 4)
		} else if len(c.seen) < promptCacheMaxEntries {
			c.seen[key] = struct{}{}
		}
	}
	return cached
}
