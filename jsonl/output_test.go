package jsonl_test

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/jsonl"
)

func TestOutputDecoder(t *testing.T) {
	t.Parallel()
	input := strings.Join([]string{
		`{"id":"batch_req_1","custom_id":"r-2","response":{"status_code":200,"request_id":"req_a","body":{"ok":true}},"error":null}`,
		``,
		`{"id":"batch_req_2","custom_id":"r-1","response":null,"error":{"code":"batch_expired","message":"too late"}}`,
		`{"id":"batch_req_3","custom_id":"r-3","response":{"status_code":"200"}}`,
		`{"id":"batch_req_4","custom_id":"r-4","response":{"status_code":429,"request_id":"req_b","body":{"error":{}}}}`,
	}, "\n")
	d := jsonl.NewOutputDecoder(strings.NewReader(input), "out.jsonl")

	l, err := d.Next()
	require.NoError(t, err)
	require.Equal(t, "batch_req_1", l.ID)
	require.Equal(t, "r-2", l.CustomID)
	require.Equal(t, 200, l.Response.StatusCode)
	require.Equal(t, "req_a", l.Response.RequestID)
	require.JSONEq(t, `{"ok":true}`, string(l.Response.Body))
	require.Nil(t, l.Error)

	l, err = d.Next()
	require.NoError(t, err)
	require.Equal(t, 3, d.Line())
	require.Nil(t, l.Response)
	require.Equal(t, &jsonl.LineError{Code: "batch_expired", Message: "too late"}, l.Error)

	_, err = d.Next()
	require.EqualError(t, err, `out.jsonl:4: response.status_code is "200", want an integer`)

	l, err = d.Next()
	require.NoError(t, err)
	require.Equal(t, 429, l.Response.StatusCode)
	require.Equal(t, "r-4", l.CustomID)

	_, err = d.Next()
	require.ErrorIs(t, err, io.EOF)
}

func TestDecodeOutputErrors(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		`{"id":"x"`:                            "invalid JSON",
		`"x"`:                                  "not a JSON object but a string",
		`{"id":"x","response":{}}`:             "output line has no custom_id",
		`{"custom_id":"x"}`:                    "output line has neither response nor error",
		`{"custom_id":"x","response":[]}`:      "response is an array, want an object",
		`{"custom_id":"x","error":"boom"}`:     "error is a string, want an object",
		`{"custom_id":1,"error":{}}`:           "custom_id is a number, want a string",
		`{"custom_id":"x","error":{"code":1}}`: "error.code is a number, want a string",
	}
	for line, want := range tests {
		var out jsonl.OutputLine
		require.ErrorContains(t, jsonl.DecodeOutput([]byte(line), &out), want, line)
	}
}

// FuzzDecodeOutput checks DecodeOutput against encoding/json on the same line.
func FuzzDecodeOutput(f *testing.F) {
	f.Add([]byte(`{"id":"batch_req_1","custom_id":"r","response":{"status_code":200,"request_id":"q","body":{"a":1}},"error":null}`))
	f.Add([]byte(`{"id":"batch_req_2","custom_id":"r","response":null,"error":{"code":"c","message":"m"}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var out jsonl.OutputLine
		err := jsonl.DecodeOutput(line, &out)
		if !json.Valid(line) {
			require.Error(t, err)
			return
		}
		if err != nil {
			return
		}
		if !utf8.Valid(line) || !strings.Contains(string(line), `"custom_id"`) {
			return
		}
		// encoding/json matches struct fields case-insensitively, the API does not: compare only lines whose keys
		// are all lower case.
		if strings.ToLower(string(line)) != string(line) {
			return
		}
		var want jsonl.OutputLine
		if json.Unmarshal(line, &want) != nil {
			return // encoding/json is stricter about integers: fine
		}
		require.Equal(t, want.CustomID, out.CustomID)
		require.Equal(t, want.ID, out.ID)
		require.Equal(t, want.Error, out.Error)
		if want.Response != nil && out.Response != nil {
			require.Equal(t, want.Response.StatusCode, out.Response.StatusCode)
			require.Equal(t, want.Response.RequestID, out.Response.RequestID)
			if len(want.Response.Body) > 0 && string(want.Response.Body) != "null" {
				requireSameJSON(t, want.Response.Body, out.Response.Body)
			}
		}
	})
}

func BenchmarkOutputDecoder(b *testing.B) {
	line := `{"id":"batch_req_123456","custom_id":"reviews.jsonl:12345","response":{"status_code":200,"request_id":"req_abcdef","body":{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"positive"}}],"usage":{"prompt_tokens":120,"completion_tokens":1}}},"error":null}` + "\n"
	input := strings.Repeat(line, 1000)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	for b.Loop() {
		d := jsonl.NewOutputDecoder(strings.NewReader(input), "bench")
		for {
			if _, err := d.Next(); err != nil {
				if !errors.Is(err, io.EOF) {
					b.Fatal(err)
				}
				break
			}
		}
	}
}
