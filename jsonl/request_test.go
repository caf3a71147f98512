package jsonl_test

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/jsonl"
)

func TestInspect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		line      string
		want      jsonl.Record
		wantError string
	}{
		{"data record", `{"text":"hi","id":7}`, jsonl.Record{}, ""},
		{"data record with custom_id only", `{"custom_id":"a","text":"hi"}`, jsonl.Record{}, ""},
		{
			"canonical request", `{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m"}}`,
			jsonl.Record{IsRequest: true, Canonical: true, Request: jsonl.Request{CustomID: "a", Method: "POST", URL: "/v1/embeddings", Body: json.RawMessage(`{"model":"m"}`)}}, "",
		},
		{
			"request without method and url", `{"body": {"model":"m"} ,"custom_id":"a\u00e9"}`,
			jsonl.Record{IsRequest: true, Request: jsonl.Request{CustomID: "aé", Body: json.RawMessage(`{"model":"m"}`)}}, "",
		},
		{
			"request with an extra key", `{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{},"x":1}`,
			jsonl.Record{IsRequest: true, Request: jsonl.Request{CustomID: "a", Method: "POST", URL: "/v1/embeddings", Body: json.RawMessage(`{}`)}}, "",
		},
		{"invalid json", `{"custom_id":"a",}`, jsonl.Record{}, "invalid JSON: invalid character '}'"},
		{"truncated json", `{"custom_id":"a"`, jsonl.Record{}, "invalid JSON: unexpected end of JSON input"},
		{"not an object", `[1]`, jsonl.Record{}, "not a JSON object but an array"},
		{"no custom_id", `{"body":{}}`, jsonl.Record{IsRequest: true}, "request line has no custom_id"},
		{"numeric custom_id", `{"custom_id":12,"body":{}}`, jsonl.Record{IsRequest: true}, "custom_id is a number, want a string"},
		{"empty custom_id", `{"custom_id":"","body":{}}`, jsonl.Record{IsRequest: true}, "custom_id is empty"},
		{"no body", `{"custom_id":"a","url":"/v1/embeddings"}`, jsonl.Record{IsRequest: true}, "request line has no body"},
		{"body not an object", `{"custom_id":"a","body":"x"}`, jsonl.Record{IsRequest: true}, "body is a string, want an object"},
		{"method GET", `{"custom_id":"a","method":"GET","body":{}}`, jsonl.Record{IsRequest: true}, `method is "GET", want "POST"`},
		{"url not a string", `{"custom_id":"a","url":1,"body":{}}`, jsonl.Record{IsRequest: true, Request: jsonl.Request{Method: ""}}, "url is a number, want a string"},
		{"key twice", `{"custom_id":"a","custom_id":"b","body":{}}`, jsonl.Record{}, `key "custom_id" appears twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var rec jsonl.Record
			err := jsonl.Inspect([]byte(tt.line), &rec)
			if tt.wantError != "" {
				require.ErrorContains(t, err, tt.wantError)
				return
			}
			require.NoError(t, err)
			if rec.IsRequest {
				require.Equal(t, string(rec.Request.Body), tt.line[rec.BodyOffset:rec.BodyOffset+len(rec.Request.Body)], "BodyOffset")
				rec.BodyOffset = 0
			}
			require.Equal(t, tt.want, rec)
		})
	}
}

func TestRequestAppendJSON(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"plain", "with \"quotes\" and \\", "<html>&", "naïve ✓", "tab\there\n", "\u2028"} {
		r := jsonl.Request{CustomID: id, Method: "POST", URL: jsonl.EndpointChatCompletions, Body: json.RawMessage(`{"model":"m"}`)}
		got := r.AppendJSON(nil)
		want, err := json.Marshal(r)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
}

func TestModel(t *testing.T) {
	t.Parallel()
	m, err := jsonl.Model([]byte(`{"model":"gpt-4o-mini","messages":[]}`))
	require.NoError(t, err)
	require.Equal(t, "gpt-4o-mini", m)
	m, err = jsonl.Model([]byte(`{"messages":[]}`))
	require.NoError(t, err)
	require.Empty(t, m)
	_, err = jsonl.Model([]byte(`{"model":4}`))
	require.ErrorContains(t, err, "body.model is a number, want a string")
}

func TestEmbeddingInputs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body    string
		want    int
		wantErr string
	}{
		{`{"input":"one"}`, 1, ""},
		{`{"input":["a","b","c"]}`, 3, ""},
		{`{"input":[1,2,3]}`, 1, ""},
		{`{"input":[[1,2],[3]]}`, 2, ""},
		{`{"input":[]}`, 0, ""},
		{`{"model":"m"}`, 0, "embeddings body has no input"},
		{`{"input":5}`, 0, "body.input is a number"},
	}
	for _, tt := range tests {
		n, err := jsonl.EmbeddingInputs([]byte(tt.body))
		if tt.wantErr != "" {
			require.ErrorContains(t, err, tt.wantErr, tt.body)
			continue
		}
		require.NoError(t, err, tt.body)
		require.Equal(t, tt.want, n, tt.body)
	}
}

func TestValidEndpoint(t *testing.T) {
	t.Parallel()
	require.True(t, jsonl.ValidEndpoint("/v1/chat/completions"))
	require.False(t, jsonl.ValidEndpoint("/v1/chat"))
}

// FuzzInspect checks Inspect against encoding/json: it accepts exactly the valid JSON, and a request line it
// accepts re-encodes to the same request.
func FuzzInspect(f *testing.F) {
	f.Add([]byte(`{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":"x"}}`))
	f.Add([]byte(`{"text":"hello","id":3}`))
	f.Add([]byte(`{"custom_id":"a\u0000","body":{"a":[1,2.5e3,null,true]}}`))
	f.Add([]byte(`{"custom_id":"a","body":{}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		if !utf8.Valid(line) {
			return // the Reader rejects such lines before anyone inspects them
		}
		var rec jsonl.Record
		err := jsonl.Inspect(line, &rec)
		valid := json.Valid(line)
		if !valid {
			require.Error(t, err)
			return
		}
		if err != nil || !rec.IsRequest {
			return
		}
		// A map, not a struct: encoding/json matches struct fields case-insensitively, the API does not.
		var want map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(line, &want))
		var id string
		require.NoError(t, json.Unmarshal(want["custom_id"], &id))
		require.Equal(t, id, rec.Request.CustomID)
		requireSameJSON(t, want["body"], rec.Request.Body)
		rec.Request.Method, rec.Request.URL = "POST", "/v1/x"
		out := rec.Request.AppendJSON(nil)
		require.True(t, json.Valid(out), "%s", out)
		if rec.Canonical {
			require.True(t, json.Valid(line))
		}
	})
}

func FuzzEmbeddingInputs(f *testing.F) {
	f.Add([]byte(`{"input":["a","b"]}`))
	f.Add([]byte(`{"input":[[1],[2,3]]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		n, err := jsonl.EmbeddingInputs(body)
		if err == nil {
			require.GreaterOrEqual(t, n, 0)
		}
		_, _ = jsonl.Model(body)
	})
}
