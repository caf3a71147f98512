package poll

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/batchctl/batchctl/jsonl"
)

// BenchmarkFileSource turns 100 000 output lines of the load benchmark's shape into result rows, as COPY asks for
// them, with an input index to look each line up in.
func BenchmarkFileSource(b *testing.B) {
	const n = 100_000
	var in, out bytes.Buffer
	text := strings.Repeat("x", 200)
	for i := range n {
		fmt.Fprintf(&in, `{"custom_id":"req-%07d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini"}}`+"\n", i)
		fmt.Fprintf(&out, `{"id":"batch_req_%d","custom_id":"req-%07d","response":{"status_code":200,"request_id":"r%d","body":{"id":"c%d","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":5,"total_tokens":25}}},"error":null}`+"\n", i, i, i, i, text)
	}
	ix, err := buildInputIndexSize(bytes.NewReader(in.Bytes()), "input.jsonl", -1)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(out.Len()))
	b.ReportAllocs()
	for b.Loop() {
		src := &fileSource{dec: jsonl.NewOutputDecoder(bytes.NewReader(out.Bytes()), "output.jsonl"), batchID: "batch_1",
			idx: ix, outcomes: map[string]int{}, usage: &usageSum{}, c: &copied{}}
		rows := 0
		for src.Next() {
			_ = src.Result()
			rows++
		}
		if src.Err() != nil || rows != n {
			b.Fatalf("%d rows, %v", rows, src.Err())
		}
	}
}
