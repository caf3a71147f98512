package emulator

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidateLine(t *testing.T) {
	t.Parallel()
	const chat = "/v1/chat/completions"
	tests := []struct {
		name, line, endpoint, code, param string
	}{
		{"valid", `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`, chat, "", ""},
		{"not an object", `[1,2]`, chat, CodeInvalidJSONLine, ""},
		{"truncated", `{"custom_id":"a"`, chat, CodeInvalidJSONLine, ""},
		{"custom_id number", `{"custom_id":1,"method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`, chat, CodeInvalidType, "custom_id"},
		{"empty custom_id", `{"custom_id":"","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`, chat, CodeMissingRequiredParameter, "custom_id"},
		{"no method", `{"custom_id":"a","url":"/v1/chat/completions","body":{"model":"m"}}`, chat, CodeMissingRequiredParameter, "method"},
		{"body array", `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":[]}`, chat, CodeInvalidType, "body"},
		{"model number", `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":4}}`, chat, CodeInvalidType, "body.model"},
		{"embeddings without input", `{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m"}}`, "/v1/embeddings", CodeMissingRequiredParameter, "body.input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := validateLine([]byte(tt.line), tt.endpoint)
			if tt.code == "" {
				require.Nil(t, err)
				require.Equal(t, "a", req.CustomID)
				require.Equal(t, "m", req.Model)
				return
			}
			require.NotNil(t, err)
			require.Equal(t, tt.code, err.Code)
			if tt.param != "" {
				require.Equal(t, tt.param, *err.Param)
			}
		})
	}
}

func TestCountEmbeddingInputs(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]int{`"a"`: 1, `["a","b","c"]`: 3, `[1,2,3]`: 1, `[[1,2],[3]]`: 2, `[]`: 0, `null`: 0, `{}`: 0} {
		require.Equal(t, want, countEmbeddingInputs(json.RawMessage(raw)), raw)
	}
}

func TestReadLine(t *testing.T) {
	t.Parallel()
	br := bufio.NewReaderSize(strings.NewReader("one\r\n"+strings.Repeat("x", 40)+"\nlast"), 16)
	line, err := readLine(br, nil, 100)
	require.NoError(t, err)
	require.Equal(t, "one", string(line))
	line, err = readLine(br, line[:0], 100)
	require.NoError(t, err)
	require.Len(t, line, 40, "a line longer than the reader's buffer")
	line, err = readLine(br, line[:0], 100)
	require.Equal(t, "last", string(line))
	require.True(t, errors.Is(err, io.EOF))

	br = bufio.NewReaderSize(strings.NewReader(strings.Repeat("x", 1000)), 16)
	_, err = readLine(br, nil, 100)
	require.ErrorIs(t, err, errLineTooLong)
}

// FuzzValidateLine feeds arbitrary lines to the validator: it must never panic, and a line it accepts must carry
// a custom_id, a model and a JSON object body.
func FuzzValidateLine(f *testing.F) {
	for _, seed := range []string{
		`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}`,
		`{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":["x",[1,2]]}}`,
		`{"custom_id":null}`, `{`, `[]`, `"x"`, ``, `{"body":{"model":""}}`,
	} {
		f.Add([]byte(seed), "/v1/chat/completions")
		f.Add([]byte(seed), "/v1/embeddings")
	}
	f.Fuzz(func(t *testing.T, line []byte, endpoint string) {
		req, err := validateLine(line, endpoint)
		if err != nil {
			if err.Code == "" || err.Message == "" {
				t.Fatalf("error without code or message: %+v", err)
			}
			return
		}
		if req.CustomID == "" || req.Model == "" || len(req.Body) == 0 || req.Body[0] != '{' {
			t.Fatalf("accepted an incomplete line: %+v", req)
		}
		if !json.Valid(req.Body) {
			t.Fatalf("accepted invalid body JSON: %s", req.Body)
		}
		_ = makeAnswer(endpoint, req.Body, 0, "k", newPromptCache(), garbling{})
		_ = inputTokens(endpoint, req.Body)
	})
}
