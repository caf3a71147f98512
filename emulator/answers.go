package emulator

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"unicode/utf8"
)

// EmbeddingDimensions is the length of the emulator's fake embedding vectors.
const EmbeddingDimensions = 8

// labels are the fake classifier's answers; one is picked by a hash of the prompt.
var labels = [...]string{"positive", "negative", "neutral", "mixed"}

// AnswerText is the deterministic fake answer to a prompt: a label picked by a hash of the prompt, a colon, and the
// prompt's first 40 characters, so a test can tell which input an answer belongs to. Chat completions answer the
// last user message, completions the prompt, responses the input text.
func AnswerText(prompt string) string {
	excerpt := prompt
	if utf8.RuneCountInString(excerpt) > 40 {
		excerpt = string([]rune(excerpt)[:40])
	}
	return labels[hash64(prompt)%uint64(len(labels))] + ": " + excerpt
}

// EstimateTokens is the emulator's token count for a text: one token per four bytes, rounded up.
func EstimateTokens(text string) int64 {
	return int64((len(text) + 3) / 4)
}

func hash64(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		_, _ = h.Write([]byte(p))
		_, _ = h.Write([]byte{0})
	}
	return h.Sum64()
}

// fakeID derives an id like "chatcmpl-<hex>" from stable parts, so that a re-run produces the same output.
func fakeID(prefix string, parts ...string) string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], hash64(parts...))
	binary.BigEndian.PutUint32(b[8:], uint32(hash64(append(parts, prefix)...)))
	return prefix + hex.EncodeToString(b[:])
}

// collectText gathers the strings of a prompt-like value: a string, an array of strings or of parts, a message
// ({"content": ...}) or a part ({"text": ...}).
func collectText(raw json.RawMessage, out *strings.Builder) {
	if len(raw) == 0 {
		return
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if out.Len() > 0 {
				out.WriteByte('\n')
			}
			out.WriteString(s)
		}
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) == nil {
			for _, it := range items {
				collectText(it, out)
			}
		}
	case '{':
		var obj struct {
			Content json.RawMessage `json:"content"`
			Text    json.RawMessage `json:"text"`
		}
		if json.Unmarshal(raw, &obj) == nil {
			collectText(obj.Content, out)
			collectText(obj.Text, out)
		}
	}
}

func textOf(raw json.RawMessage) string {
	var b strings.Builder
	collectText(raw, &b)
	return b.String()
}

// requestBody holds the prompt-carrying fields of every supported endpoint.
type requestBody struct {
	Model        string          `json:"model"`
	Messages     []chatMessage   `json:"messages"`
	Prompt       json.RawMessage `json:"prompt"`
	Input        json.RawMessage `json:"input"`
	Instructions json.RawMessage `json:"instructions"`
	// The output limits: max_completion_tokens or max_tokens (chat), max_tokens (completions), max_output_tokens
	// (responses). An answer never passes its limit: it is cut, as the API cuts it ("length", "incomplete").
	MaxTokens           int64 `json:"max_tokens"`
	MaxCompletionTokens int64 `json:"max_completion_tokens"`
	MaxOutputTokens     int64 `json:"max_output_tokens"`
	// What a response echoes of its request (responses).
	Temperature *float64          `json:"temperature"`
	TopP        *float64          `json:"top_p"`
	Metadata    map[string]string `json:"metadata"`
}

// echo is a sampling parameter as a response echoes it: the request's, else the default 1.
func echo(v *float64) float64 {
	if v == nil {
		return 1
	}
	return *v
}

// limit is the request's output limit, 0 for none.
func (b requestBody) limit() int64 {
	return max(0, cmp.Or(b.MaxCompletionTokens, b.MaxTokens, b.MaxOutputTokens))
}

// limitText cuts an answer to the output limit (in the emulator's count, ⌈bytes/4⌉ tokens): the text, its tokens,
// and whether it was cut.
func limitText(text string, limit int64) (string, int64, bool) {
	out := max(EstimateTokens(text), 1)
	if limit <= 0 || out <= limit {
		return text, out, false
	}
	cut := strings.ToValidUTF8(text[:min(int64(len(text)), limit*4)], "")
	return cut, max(EstimateTokens(cut), 1), true
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// promptOf returns the text the whole request sends (for token counts) and the text the fake answer echoes.
func promptOf(endpoint string, body requestBody) (all, answered string) {
	switch endpoint {
	case "/v1/chat/completions":
		var b strings.Builder
		for _, m := range body.Messages {
			start := b.Len()
			collectText(m.Content, &b)
			if m.Role == "user" {
				answered = strings.TrimPrefix(b.String()[start:], "\n")
			}
		}
		return b.String(), answered
	case "/v1/completions", endpointImages, endpointImageEdits:
		all = textOf(body.Prompt)
		return all, all
	case "/v1/responses":
		answered = textOf(body.Input)
		return strings.TrimSpace(textOf(body.Instructions) + "\n" + answered), answered
	default: // embeddings, moderations
		all = textOf(body.Input)
		return all, all
	}
}

// inputTokens estimates a request's prompt tokens, for usage and the enqueued-token limit.
func inputTokens(endpoint string, raw json.RawMessage) int64 {
	var body requestBody
	_ = json.Unmarshal(raw, &body)
	all, _ := promptOf(endpoint, body)
	return max(EstimateTokens(all), 1)
}

// answer is a fake 200 response body and its token counts.
type answer struct {
	Body         any
	InputTokens  int64
	CachedTokens int64 // part of InputTokens: the prompt prefix an earlier request of the batch shared
	OutputTokens int64
}

// makeAnswer builds the deterministic answer of one request. key makes the ids unique per batch and request; cache
// is the batch's prompt cache (nil: nothing cached), consulted for chat completions and responses.
//
// A chat completion or response that asks for a JSON-schema answer (structured outputs) is answered with JSON
// generated from the schema, a share of them broken as g says (see garble).
func makeAnswer(endpoint string, raw json.RawMessage, created int64, key string, cache *promptCache, g garbling) answer {
	var body requestBody
	_ = json.Unmarshal(raw, &body)
	all, answered := promptOf(endpoint, body)
	in := max(EstimateTokens(all), 1)
	var cached int64
	if endpoint == "/v1/chat/completions" || endpoint == "/v1/responses" {
		cached = cache.cachedTokens(all)
	}
	switch endpoint {
	case "/v1/chat/completions":
		text, out, cut := limitText(AnswerText(answered), body.limit())
		if schema := structuredSchema(endpoint, raw); schema != nil {
			text, out, cut = structuredText(schema, all, g, body.limit())
		}
		finish := "stop"
		if cut {
			finish = "length"
		}
		return answer{InputTokens: in, CachedTokens: cached, OutputTokens: out, Body: map[string]any{
			"id": fakeID("chatcmpl-", key), "object": "chat.completion", "created": created, "model": body.Model,
			"choices": []any{map[string]any{
				"index":         0,
				"message":       map[string]any{"role": "assistant", "content": text, "refusal": nil, "annotations": []any{}},
				"logprobs":      nil,
				"finish_reason": finish,
			}},
			"usage": map[string]any{
				"prompt_tokens": in, "completion_tokens": out, "total_tokens": in + out,
				"prompt_tokens_details": map[string]any{"cached_tokens": cached, "audio_tokens": 0},
				"completion_tokens_details": map[string]any{
					"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
				},
			},
			"service_tier": "default", "system_fingerprint": "fp_emulator",
		}}
	case "/v1/completions":
		text, out, cut := limitText(AnswerText(answered), body.limit())
		finish := "stop"
		if cut {
			finish = "length"
		}
		return answer{InputTokens: in, OutputTokens: out, Body: map[string]any{
			"id": fakeID("cmpl-", key), "object": "text_completion", "created": created, "model": body.Model,
			"choices": []any{map[string]any{"text": text, "index": 0, "logprobs": nil, "finish_reason": finish}},
			"usage":   map[string]any{"prompt_tokens": in, "completion_tokens": out, "total_tokens": in + out},
		}}
	case "/v1/responses":
		text, out, cut := limitText(AnswerText(answered), body.limit())
		if schema := structuredSchema(endpoint, raw); schema != nil {
			text, out, cut = structuredText(schema, all, g, body.limit())
		}
		status, incomplete := "completed", any(nil)
		if cut {
			status, incomplete = "incomplete", map[string]any{"reason": "max_output_tokens"}
		}
		metadata := body.Metadata
		if metadata == nil {
			metadata = map[string]string{}
		}
		return answer{InputTokens: in, CachedTokens: cached, OutputTokens: out, Body: map[string]any{
			"id": fakeID("resp_", key), "object": "response", "created_at": created, "status": status,
			"model": body.Model, "error": nil, "incomplete_details": incomplete, "instructions": nil,
			"output": []any{map[string]any{
				"type": "message", "id": fakeID("msg_", key), "status": status, "role": "assistant",
				"content": []any{map[string]any{"type": "output_text", "text": text, "annotations": []any{}, "logprobs": []any{}}},
			}},
			"parallel_tool_calls": true, "tool_choice": "auto", "tools": []any{},
			"metadata": metadata, "temperature": echo(body.Temperature), "top_p": echo(body.TopP),
			"usage": map[string]any{
				"input_tokens": in, "input_tokens_details": map[string]any{"cached_tokens": cached, "cache_write_tokens": 0},
				"output_tokens": out, "output_tokens_details": map[string]any{"reasoning_tokens": 0},
				"total_tokens": in + out,
			},
		}}
	case "/v1/embeddings":
		inputs := embeddingTexts(body.Input)
		data := make([]any, len(inputs))
		for i, t := range inputs {
			data[i] = map[string]any{"object": "embedding", "index": i, "embedding": FakeEmbedding(t)}
		}
		return answer{InputTokens: in, Body: map[string]any{
			"object": "list", "data": data, "model": body.Model,
			"usage": map[string]any{"prompt_tokens": in, "total_tokens": in},
		}}
	default: // /v1/moderations
		inputs := embeddingTexts(body.Input)
		results := make([]any, len(inputs))
		for i, t := range inputs {
			results[i] = moderationResult(t)
		}
		return answer{InputTokens: in, Body: map[string]any{
			"id": fakeID("modr-", key), "model": body.Model, "results": results,
		}}
	}
}

// embeddingTexts splits an input into one text per embedding (or moderation) result.
func embeddingTexts(raw json.RawMessage) []string {
	var items []json.RawMessage
	if len(raw) > 0 && raw[0] == '[' && json.Unmarshal(raw, &items) == nil && len(items) > 0 &&
		len(items[0]) > 0 && (items[0][0] == '"' || items[0][0] == '[' || items[0][0] == '{') {
		out := make([]string, len(items))
		for i, it := range items {
			out[i] = textOf(it)
			if out[i] == "" {
				out[i] = string(it) // token arrays hash as their JSON text
			}
		}
		return out
	}
	t := textOf(raw)
	if t == "" {
		t = string(raw)
	}
	return []string{t}
}

// FakeEmbedding is the emulator's deterministic unit vector of EmbeddingDimensions floats for a text.
func FakeEmbedding(text string) []float64 {
	v := make([]float64, EmbeddingDimensions)
	var norm float64
	for i := range v {
		h := hash64(text, fmt.Sprint(i))
		v[i] = float64(int64(h%2001)-1000) / 1000
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	if norm == 0 {
		norm = 1
	}
	for i := range v {
		v[i] = math.Round(v[i]/norm*1e6) / 1e6
	}
	return v
}

var moderationCategories = []string{
	"harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
	"self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence", "violence/graphic",
}

// moderationResult flags a text when it mentions violence, so tests can produce both outcomes.
func moderationResult(text string) map[string]any {
	cats := make(map[string]bool, len(moderationCategories))
	scores := make(map[string]float64, len(moderationCategories))
	applied := make(map[string][]string, len(moderationCategories))
	flagged := strings.Contains(strings.ToLower(text), "kill")
	for _, c := range moderationCategories {
		cats[c] = flagged && c == "violence"
		scores[c] = float64(hash64(text, c)%1000) / 1e6
		if cats[c] {
			scores[c] = 0.9
		}
		applied[c] = []string{"text"}
	}
	return map[string]any{
		"flagged": flagged, "categories": cats, "category_scores": scores, "category_applied_input_types": applied,
	}
}
