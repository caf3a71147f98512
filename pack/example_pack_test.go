package pack_test

import (
	"encoding/json"
	"fmt"

	"github.com/batchctl/batchctl/pack"
)

// A packed request of three reviews, and its answer split back onto them: the second review's item is missing, so
// it alone gets an error.
func Example() {
	f := pack.Form{Endpoint: pack.EndpointChat, Model: "gpt-4o-mini", System: "Classify the sentiment.",
		Answer: json.RawMessage(`{"type":"string","enum":["positive","negative","neutral"]}`)}
	body := f.AppendBody(nil, [][]byte{[]byte(`"Great kettle."`), []byte(`"Broke in a week."`), []byte(`"It boils."`)})
	fmt.Println(pack.HasFormat(pack.EndpointChat, body))

	answer, _ := json.Marshal(map[string]any{"choices": []any{map[string]any{"finish_reason": "stop",
		"message": map[string]any{"content": `{"answers":[{"index":3,"answer":"neutral"},{"index":1,"answer":"positive"}]}`}}}})
	v, _ := pack.NewValidator(f.Answer)
	for i, it := range pack.Unpack(pack.EndpointChat, answer, 3, v) {
		if it.Code != "" {
			fmt.Println(i+1, it.Code)
			continue
		}
		fmt.Println(i+1, string(it.Answer))
	}
	// Output:
	// true
	// 1 {"index":1,"answer":"positive"}
	// 2 packed_answer_missing
	// 3 {"index":3,"answer":"neutral"}
}
