package poll

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzInputIndex feeds the input-file index, which reads a batch's input file as the API returns it, request lines
// with fuzzed custom_ids around a fuzzed raw line: it never panics, finds every custom_id that occurs once on its
// line, and finds none that occurs twice (input_line stays null rather than wrong).
func FuzzInputIndex(f *testing.F) {
	f.Add("a\nb\nc", `{"custom_id":"x","body":{}}`)
	f.Add("a\na", "")
	f.Add("é\x00\n\"quoted\"\n", "\xff\xfe{\"custom_id\":")
	f.Add("", strings.Repeat("[", 1000))
	f.Fuzz(func(t *testing.T, ids, raw string) {
		var file strings.Builder
		line := map[string]int{}
		count := map[string]int{}
		n := 0
		for _, id := range strings.Split(ids, "\n") {
			b, err := json.Marshal(map[string]any{"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
				"body": map[string]string{"model": "m"}})
			if err != nil {
				t.Fatal(err)
			}
			file.Write(b)
			file.WriteByte('\n')
			n++
			// json.Marshal writes invalid UTF-8 as U+FFFD: that is the custom_id the line holds.
			var back struct {
				CustomID string `json:"custom_id"`
			}
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			line[back.CustomID] = n
			count[back.CustomID]++
		}
		if !strings.ContainsAny(raw, "\n\r") {
			file.WriteString(raw)
			file.WriteByte('\n')
		}
		ix, err := buildInputIndexSize(strings.NewReader(file.String()), "input.jsonl", -1)
		if err != nil {
			t.Fatal(err)
		}
		for id, c := range count {
			got, ok := ix.lookup(id)
			// A raw line holding a custom_id may repeat id and make it ambiguous.
			if c == 1 && (!ok || got != line[id]) && !strings.Contains(raw, "custom_id") {
				t.Fatalf("custom_id %q on line %d: lookup gives %d, %v", id, line[id], got, ok)
			}
			if c > 1 && ok {
				t.Fatalf("custom_id %q occurs %d times: lookup gives line %d", id, c, got)
			}
		}
	})
}

// TestInputIndexWidens indexes a file longer than the line field starts out (1<<16 lines), with and without its
// size: every ID is found on its line after the field has widened, and a repeated ID on none.
func TestInputIndexWidens(t *testing.T) {
	t.Parallel()
	const n = 1<<16 + 5000
	var file strings.Builder
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("id-%d", i)
		if i == n {
			id = "id-7" // repeats line 7's
		}
		fmt.Fprintf(&file, `{"custom_id":%q,"method":"POST","url":"/v1/embeddings","body":{"input":"x"}}`+"\n", id)
	}
	for _, size := range []int64{-1, int64(file.Len())} {
		ix, err := buildInputIndexSize(strings.NewReader(file.String()), "input.jsonl", size)
		require.NoError(t, err)
		for i := 1; i < n; i++ {
			line, ok := ix.lookup(fmt.Sprintf("id-%d", i))
			if i == 7 {
				require.False(t, ok, "a repeated ID")
				continue
			}
			require.True(t, ok, "id-%d", i)
			require.Equal(t, i, line)
		}
		_, ok := ix.lookup("id-0")
		require.False(t, ok)
	}
}
