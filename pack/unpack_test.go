package pack

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func chatBody(content, finish string) []byte {
	b, _ := json.Marshal(map[string]any{"choices": []any{map[string]any{
		"message": map[string]any{"role": "assistant", "content": content, "refusal": nil}, "finish_reason": finish}}})
	return b
}

func TestUnpack(t *testing.T) {
	t.Parallel()
	labels, err := NewValidator([]byte(`{"type":"string","enum":["positive","negative","neutral"]}`))
	require.NoError(t, err)
	type want struct{ code, answer string }
	ok := func(a string) want { return want{answer: a} }
	bad := func(code string) want { return want{code: code} }
	cases := []struct {
		name    string
		body    []byte
		n       int
		v       *Validator
		want    []want
		message string // in the first error's message
	}{
		{"all answered in any order", chatBody(`{"answers":[{"index":2,"answer":"b"},{"index":1,"answer":"a"}]}`, "stop"), 2, nil,
			[]want{ok(`{"index":1,"answer":"a"}`), ok(`{"index":2,"answer":"b"}`)}, ""},
		{"dropped item", chatBody(`{"answers":[{"index":1,"answer":"a"}]}`, "stop"), 2, nil,
			[]want{ok(`{"index":1,"answer":"a"}`), bad(CodeMissing)}, "no item with index 2"},
		{"duplicated index", chatBody(`{"answers":[{"index":1,"answer":"a"},{"index":1,"answer":"b"},{"index":2,"answer":"c"}]}`, "stop"), 2, nil,
			[]want{bad(CodeDuplicate), ok(`{"index":2,"answer":"c"}`)}, "2 items with index 1"},
		{"out of range", chatBody(`{"answers":[{"index":0,"answer":"a"},{"index":3,"answer":"b"},{"index":2,"answer":"c"}]}`, "stop"), 2, nil,
			[]want{bad(CodeMissing), ok(`{"index":2,"answer":"c"}`)}, "out of range 1..2: 0, 3"},
		{"index not an integer", chatBody(`{"answers":[{"index":1.5,"answer":"a"},{"index":"2","answer":"c"}]}`, "stop"), 2, nil,
			[]want{bad(CodeMissing), ok(`{"index":"2","answer":"c"}`)}, "1.5"},
		{"answer fails the schema", chatBody(`{"answers":[{"index":1,"answer":"great"},{"index":2,"answer":"neutral"}]}`, "stop"), 2, labels,
			[]want{bad(CodeInvalid), ok(`{"index":2,"answer":"neutral"}`)}, "fails the answer schema"},
		{"no answer", chatBody(`{"answers":[{"index":1},{"index":2,"answer":"x"}]}`, "stop"), 2, nil,
			[]want{bad(CodeInvalid), ok(`{"index":2,"answer":"x"}`)}, "has no answer"},
		{"malformed JSON", chatBody(`{"answers":[{"index":1,"answer":"a"},{"ind`, "stop"), 2, nil,
			[]want{bad(CodeUnparseable), bad(CodeUnparseable)}, "not a JSON object"},
		{"no answers array", chatBody(`{"results":[]}`, "stop"), 1, nil, []want{bad(CodeUnparseable)}, ""},
		{"not an object", chatBody(`[1,2]`, "stop"), 1, nil, []want{bad(CodeUnparseable)}, ""},
		{"cut at the limit", chatBody(`{"answers":[{"index":1,"answer":"a"}`, "length"), 2, nil,
			[]want{bad(CodeTruncated), bad(CodeTruncated)}, "finish_reason length"},
		{"refusal", []byte(`{"choices":[{"message":{"content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}`), 2, nil,
			[]want{bad(CodeRefused), bad(CodeRefused)}, "I can't help"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			items := Unpack(EndpointChat, c.body, c.n, c.v)
			require.Len(t, items, c.n)
			first := ""
			for i, w := range c.want {
				require.Equal(t, w.code, items[i].Code, "item %d: %s", i+1, items[i].Message)
				if w.code == "" {
					require.JSONEq(t, w.answer, string(items[i].Answer))
				} else if first == "" {
					first = items[i].Message
				}
			}
			require.Contains(t, first, c.message)
		})
	}
}

func TestUnpackResponses(t *testing.T) {
	t.Parallel()
	body := func(status, reason string, parts ...any) []byte {
		b, _ := json.Marshal(map[string]any{"status": status, "incomplete_details": map[string]any{"reason": reason},
			"output": []any{map[string]any{"type": "message", "content": parts}}})
		return b
	}
	items := Unpack(EndpointResponses, body("completed", "", map[string]any{"type": "output_text",
		"text": `{"answers":[{"index":1,"answer":"a"}]}`}), 1, nil)
	require.Equal(t, Item{Answer: json.RawMessage(`{"index":1,"answer":"a"}`)}, items[0])
	items = Unpack(EndpointResponses, body("incomplete", "max_output_tokens", map[string]any{"type": "output_text",
		"text": `{"answers":[{"ind`}), 1, nil)
	require.Equal(t, CodeTruncated, items[0].Code)
	items = Unpack(EndpointResponses, body("completed", "", map[string]any{"type": "refusal", "refusal": "no"}), 1, nil)
	require.Equal(t, CodeRefused, items[0].Code)
}

func TestShare(t *testing.T) {
	t.Parallel()
	var sum int64
	for i := 1; i <= 7; i++ {
		sum += Share(100, 7, i)
	}
	require.Equal(t, int64(100), sum)
	require.Equal(t, int64(15), Share(100, 7, 1))
	require.Equal(t, int64(14), Share(100, 7, 7))
}

func TestBodyAndSchema(t *testing.T) {
	t.Parallel()
	for _, ep := range []string{EndpointChat, EndpointResponses} {
		f := Form{Endpoint: ep, Model: "gpt-4o-mini", System: "Classify.", MaxOut: 50}
		b := f.AppendBody(nil, [][]byte{[]byte(`"one"`), []byte(`"two"`)})
		require.Contains(t, string(b), `"text":"Item 2:\ntwo"}]}]`)
		require.True(t, json.Valid(b), string(b))
		require.True(t, HasFormat(ep, b))
		texts, err := Items(ep, b)
		require.NoError(t, err)
		require.Equal(t, []json.RawMessage{json.RawMessage(`"one"`), json.RawMessage(`"two"`)}, texts)
		again, err := Repack(ep, b, []int{2}, DefaultAnswerSchema)
		require.NoError(t, err)
		texts, err = Items(ep, again)
		require.NoError(t, err)
		require.Equal(t, []json.RawMessage{json.RawMessage(`"two"`)}, texts)
		require.Contains(t, string(again), `"Item 1:\ntwo"`)
		require.Contains(t, string(again), `"maxItems":1`)
		require.Contains(t, string(again), `"Classify."`)
	}
	v, err := NewValidator(Schema(DefaultAnswerSchema, 2))
	require.NoError(t, err)
	require.NoError(t, v.Check([]byte(`{"answers":[{"index":1,"answer":"a"},{"index":2,"answer":"b"}]}`)))
	require.Error(t, v.Check([]byte(`{"answers":[{"index":3,"answer":"a"},{"index":2,"answer":"b"}]}`)))
	_, err = CheckAnswerSchema([]byte(`{"type": 12}`))
	require.Error(t, err)
	s, err := CheckAnswerSchema([]byte("{\"type\": \"string\",\n \"enum\": [\"a\"]}"))
	require.NoError(t, err)
	require.Equal(t, `{"type":"string","enum":["a"]}`, string(s))
}
