package emulator_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// TestPromptCache: in a batch, a request sharing 1 024 tokens or more of leading text with an earlier request reports
// the shared prefix as cached, in steps of 128 tokens, as the real API does; the first request, short prompts and
// prompts that differ early report 0. Chat completions and responses alike.
func TestPromptCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	system := strings.Repeat("You classify reviews. ", 300)[:6000] // 1 500 tokens of shared instructions
	// Each prompt is system + "\n" + "review number N ...": 6 015 shared bytes, whose last whole 512-byte (128-token)
	// step from 4 096 bytes on ends at 5 632 bytes: 1 408 tokens.
	const want = 1408
	other := strings.Repeat("Different instructions. ", 300)[:6000]

	for _, tc := range []struct {
		endpoint openai.BatchNewParamsEndpoint
		line     func(i int, sys string) string
		cached   func(body json.RawMessage) int64
	}{
		{openai.BatchNewParamsEndpointV1ChatCompletions, func(i int, sys string) string {
			return fmt.Sprintf(`{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"system","content":%q},{"role":"user","content":"review number %d is great"}]}}`, i, sys, i)
		}, func(body json.RawMessage) int64 {
			var r openai.ChatCompletion
			require.NoError(t, json.Unmarshal(body, &r))
			return r.Usage.PromptTokensDetails.CachedTokens
		}},
		{openai.BatchNewParamsEndpointV1Responses, func(i int, sys string) string {
			return fmt.Sprintf(`{"custom_id":"req-%d","method":"POST","url":"/v1/responses","body":{"model":"gpt-4.1-mini","instructions":%q,"input":"review number %d is great"}}`, i, sys, i)
		}, func(body json.RawMessage) int64 {
			var r struct {
				Usage struct {
					InputTokensDetails struct {
						CachedTokens int64 `json:"cached_tokens"`
					} `json:"input_tokens_details"`
				} `json:"usage"`
			}
			require.NoError(t, json.Unmarshal(body, &r))
			return r.Usage.InputTokensDetails.CachedTokens
		}},
	} {
		t.Run(string(tc.endpoint), func(t *testing.T) {
			t.Parallel()
			var in bytes.Buffer
			for i := range 4 {
				fmt.Fprintln(&in, tc.line(i, system))
			}
			fmt.Fprintln(&in, tc.line(4, other))          // a different prefix: nothing cached, first of its kind
			fmt.Fprintln(&in, tc.line(5, "short prompt")) // under 1 024 tokens: never cached
			fmt.Fprintln(&in, tc.line(6, other))          // shares other's prefix
			b := e.create(t, e.upload(t, in.Bytes()), tc.endpoint)
			b = e.wait(t, b.ID, openai.BatchStatusCompleted, openai.BatchStatusFailed)
			require.Equal(t, openai.BatchStatusCompleted, b.Status)
			got := map[string]int64{}
			for _, l := range e.download(t, b.OutputFileID) {
				got[l.CustomID] = tc.cached(l.Response.Body)
			}
			require.Equal(t, map[string]int64{"req-0": 0, "req-1": want, "req-2": want, "req-3": want,
				"req-4": 0, "req-5": 0, "req-6": want}, got)
			require.Zero(t, want%emulator.PromptCacheStep)
			require.Equal(t, int64(4*want), b.Usage.InputTokensDetails.CachedTokens, "the batch's usage sums them")
		})
	}
}
