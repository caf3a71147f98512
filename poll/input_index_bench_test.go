package poll

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkInputIndex builds the index of a 100 000-line input file of the load benchmark's shape and looks every
// custom_id up once; allocated bytes per op are the index's own cost.
func BenchmarkInputIndex(b *testing.B) {
	const n = 100_000
	var file bytes.Buffer
	text := strings.Repeat("x", 200)
	for i := range n {
		fmt.Fprintf(&file, `{"custom_id":"req-%07d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":%q}]}}`+"\n", i, text)
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("req-%07d", i)
	}
	b.SetBytes(int64(file.Len()))
	b.ReportAllocs()
	for b.Loop() {
		ix, err := buildInputIndexSize(bytes.NewReader(file.Bytes()), "input.jsonl", int64(file.Len()))
		if err != nil {
			b.Fatal(err)
		}
		for i, id := range ids {
			if line, ok := ix.lookup(id); !ok || line != i+1 {
				b.Fatalf("lookup %s: %d, %v", id, line, ok)
			}
		}
	}
}
