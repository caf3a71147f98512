package pack

import (
	"encoding/json"
	"testing"

	"github.com/tidwall/gjson"
)

// FuzzUnpack: whatever a model (or a broken server) answers, every record gets exactly one outcome, an answer item
// whose index is its own or a packed_answer_* error.
func FuzzUnpack(f *testing.F) {
	f.Add(`{"answers":[{"index":1,"answer":"a"},{"index":2,"answer":"b"}]}`, "stop", 2)
	f.Add(`{"answers":[{"index":1,"answer":"a"},{"index":1,"answer":"b"}]}`, "stop", 2)
	f.Add(`{"answers":[{"index":"3","answer":{}},{"index":-1}]}`, "stop", 3)
	f.Add(`{"answers":[{"ind`, "length", 2)
	f.Add(`[]`, "stop", 1)
	v, err := NewValidator([]byte(`{"type":"string"}`))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, content, finish string, n int) {
		if n < 1 || n > 100 {
			return
		}
		body, _ := json.Marshal(map[string]any{"choices": []any{map[string]any{
			"message": map[string]any{"content": content}, "finish_reason": finish}}})
		items := Unpack(EndpointChat, body, n, v)
		if len(items) != n {
			t.Fatalf("%d items for %d records", len(items), n)
		}
		for i, it := range items {
			switch {
			case it.Code == "" && it.Answer == nil, it.Code != "" && it.Answer != nil:
				t.Fatalf("item %d: %+v", i+1, it)
			case it.Code == "":
				k, ok := indexOf(jsonPeek(it.Answer, "index"))
				if !ok || k != i+1 || !json.Valid(it.Answer) {
					t.Fatalf("item %d has answer %s", i+1, it.Answer)
				}
			}
		}
	})
}

func jsonPeek(b []byte, path string) gjson.Result { return gjson.GetBytes(b, path) }
