package emulator

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/pack"
)

// packedBody is a packed chat request of n items, as submit --pack writes it.
func packedBody(t *testing.T, endpoint string, n int, answer string) json.RawMessage {
	t.Helper()
	texts := make([][]byte, n)
	for i := range texts {
		texts[i] = []byte(fmt.Sprintf("%q", fmt.Sprintf("review %d", i+1)))
	}
	f := pack.Form{Endpoint: endpoint, Model: "gpt-4o-mini", System: "Classify.", Answer: json.RawMessage(answer)}
	return f.AppendBody(nil, texts)
}

func TestStructuredAnswersFollowTheSchema(t *testing.T) {
	t.Parallel()
	answers := []string{
		`{"type":"string"}`,
		`{"type":"string","enum":["positive","negative","neutral"]}`,
		`{"type":"object","properties":{"label":{"type":"string","enum":["a","b"]},"score":{"type":"number","minimum":0,"maximum":1},` +
			`"tags":{"type":"array","items":{"type":"string"}},"ok":{"type":"boolean"},"note":{"type":["string","null"]}},` +
			`"required":["label","score","tags","ok","note"],"additionalProperties":false}`,
	}
	for _, endpoint := range []string{pack.EndpointChat, pack.EndpointResponses} {
		for _, answer := range answers {
			for _, n := range []int{1, 7} {
				body := packedBody(t, endpoint, n, answer)
				a := makeAnswer(endpoint, body, 0, "batch_1\x00pack:1", nil, garbling{})
				raw, err := json.Marshal(a.Body)
				require.NoError(t, err)
				c := pack.ContentOf(endpoint, raw)
				whole, err := pack.NewValidator(pack.Schema(json.RawMessage(answer), n))
				require.NoError(t, err)
				require.NoError(t, whole.Check([]byte(c.Text)), c.Text)
				v, err := pack.NewValidator([]byte(answer))
				require.NoError(t, err)
				for i, it := range pack.Unpack(endpoint, raw, n, v) {
					require.Empty(t, it.Code, "item %d: %s", i+1, it.Message)
				}
				// Deterministic: the same request is answered the same.
				again := makeAnswer(endpoint, body, 0, "batch_1\x00pack:1", nil, garbling{})
				require.Equal(t, a.Body, again.Body)
			}
		}
	}
}

func TestGarbleRate(t *testing.T) {
	t.Parallel()
	for _, endpoint := range []string{pack.EndpointChat, pack.EndpointResponses} {
		body := packedBody(t, endpoint, 5, `{"type":"string"}`)
		codes := map[string]int{}
		const requests = 400
		for i := range requests {
			a := makeAnswer(endpoint, body, 0, "batch_1", nil, garbling{rate: 0.5, key: fmt.Sprintf("0\x001\x00pack:%d", i)})
			raw, err := json.Marshal(a.Body)
			require.NoError(t, err)
			items := pack.Unpack(endpoint, raw, 5, nil)
			broken := false
			for _, it := range items {
				if it.Code != "" {
					codes[it.Code]++
					broken = true
				}
			}
			if !broken {
				codes["ok"]++
			}
		}
		// About half are broken, in each of the four ways.
		require.InDelta(t, requests/2, codes["ok"], requests/8, "%v", codes)
		for _, code := range []string{pack.CodeMissing, pack.CodeDuplicate, pack.CodeUnparseable, pack.CodeTruncated} {
			require.Positive(t, codes[code], "%s in %v", code, codes)
		}
	}
}
