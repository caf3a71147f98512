package emulator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// A body is either refused with a message, or spooled into one valid line per request that the lifecycle and the
// fake answer can read.
func FuzzSpoolMessageRequests(f *testing.F) {
	for _, seed := range []string{
		`{"requests":[{"custom_id":"a","params":{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}}]}`,
		`{"requests":[{"custom_id":"a-1_B","params":{"model":"m","max_tokens":1,"system":[{"type":"text","text":"s"}],` +
			`"messages":[{"role":"user","content":[{"type":"text","text":"x"}]},{"role":"assistant","content":"y"}]}}]}`,
		`{"requests":[{"custom_id":"a","params":{}},{"custom_id":"a"}]}`,
		`{"requests":[]}`, `{}`, `[]`, `{"requests":`, `{"requests":[1]}`, `{"x":1}`, ``, `{"requests":[{}]} x`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var out bytes.Buffer
		n, err := spoolMessageRequests(bytes.NewReader(body), &out, 100)
		var bad *badMessageBatch
		if err != nil {
			if !errors.As(err, &bad) || bad.msg == "" {
				t.Fatalf("not a refusal with a message: %v", err)
			}
			return
		}
		if n < 1 || n > 100 {
			t.Fatalf("accepted %d requests", n)
		}
		sc := bufio.NewScanner(&out)
		sc.Buffer(nil, len(body)+64)
		var lines int64
		for sc.Scan() {
			lines++
			var req struct {
				CustomID string          `json:"custom_id"`
				Params   json.RawMessage `json:"params"`
			}
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				t.Fatalf("spooled an invalid line %q: %v", sc.Bytes(), err)
			}
			if !customIDPattern.MatchString(req.CustomID) || len(req.Params) == 0 || req.Params[0] != '{' {
				t.Fatalf("spooled an invalid request %q", sc.Bytes())
			}
			m := makeMessage(req.Params, "k", newPromptCache())
			if m.Usage.InputTokens < 1 || m.Usage.OutputTokens < 1 || m.Content[0].Type != "text" {
				t.Fatalf("bad answer %+v", m)
			}
		}
		if sc.Err() != nil || lines != n {
			t.Fatalf("%d lines for %d requests (%v)", lines, n, sc.Err())
		}
	})
}

func TestMessagePrompt(t *testing.T) {
	t.Parallel()
	var p messageParams
	require.NoError(t, json.Unmarshal([]byte(`{"model":"m","max_tokens":9,"system":"Be brief.","messages":[
		{"role":"user","content":"first"},
		{"role":"assistant","content":[{"type":"text","text":"reply"}]},
		{"role":"user","content":[{"type":"image","source":{"type":"base64","data":"AAAA"}},{"type":"text","text":"second"}]}]}`), &p))
	all, answered := messagePrompt(p)
	require.Equal(t, "Be brief.\nfirst\nreply\nsecond", all)
	require.Equal(t, "second", answered, "the last user message, its text blocks only")
}

// BenchmarkSpoolMessageRequests measures how fast a creation body is checked and spooled, in body bytes per second.
func BenchmarkSpoolMessageRequests(b *testing.B) {
	var body bytes.Buffer
	body.WriteString(`{"requests":[`)
	for i := range 20_000 {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"custom_id":"req-%d","params":{"max_tokens":256,"messages":[{"content":[{"text":"review number %d is great","type":"text"}],"role":"user"}],"model":"claude-haiku-4-5","system":[{"text":"Classify the review.","type":"text"}]}}`, i, i)
	}
	body.WriteString(`]}`)
	b.SetBytes(int64(body.Len()))
	for b.Loop() {
		if _, err := spoolMessageRequests(bytes.NewReader(body.Bytes()), io.Discard, DefaultMaxMessageBatchRequests); err != nil {
			b.Fatal(err)
		}
	}
}
