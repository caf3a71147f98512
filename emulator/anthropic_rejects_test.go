package emulator_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// A bad request refuses the whole batch with 400 invalid_request_error, and nothing is created: no batch, no
// file left behind.
func TestMessageBatchRejects(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{MaxMessageBatchRequests: 3})
	ok := func(id string) string {
		return fmt.Sprintf(`{"custom_id":%q,"params":{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}}`, id)
	}
	withParams := func(params string) string {
		return `{"requests":[` + ok("a") + `,{"custom_id":"b","params":` + params + `}]}`
	}
	tests := []struct{ name, body, field string }{
		{"custom_id with a space", `{"requests":[` + ok("a b") + `]}`, "requests.0.custom_id"},
		{"custom_id too long", `{"requests":[` + ok(strings.Repeat("x", 65)) + `]}`, "requests.0.custom_id"},
		{"custom_id empty", `{"requests":[` + ok("") + `]}`, "requests.0.custom_id"},
		{"custom_id missing", `{"requests":[{"params":{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]}}]}`, "requests.0.custom_id"},
		{"custom_id repeated", `{"requests":[` + ok("a") + `,` + ok("b") + `,` + ok("a") + `]}`, "requests.2.custom_id"},
		{"params missing", `{"requests":[{"custom_id":"a"}]}`, "requests.0.params"},
		{"model missing", withParams(`{"max_tokens":1,"messages":[{"role":"user","content":"x"}]}`), "requests.1.params.model"},
		{"max_tokens missing", withParams(`{"model":"m","messages":[{"role":"user","content":"x"}]}`), "requests.1.params.max_tokens"},
		{"max_tokens zero", withParams(`{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`), "requests.1.params.max_tokens"},
		{"max_tokens not an integer", withParams(`{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"x"}]}`), "requests.1.params.max_tokens"},
		{"messages missing", withParams(`{"model":"m","max_tokens":1}`), "requests.1.params.messages"},
		{"messages empty", withParams(`{"model":"m","max_tokens":1,"messages":[]}`), "requests.1.params.messages"},
		{"bad role", withParams(`{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}`), "requests.1.params.messages.0.role"},
		{"no requests", `{"requests":[]}`, "requests"},
		{"requests missing", `{}`, "requests"},
		{"unknown field", `{"requests":[` + ok("a") + `],"extra":1}`, "extra"},
		{"too many requests", `{"requests":[` + ok("a") + `,` + ok("b") + `,` + ok("c") + `,` + ok("d") + `]}`, "requests"},
		{"not JSON", `{"requests":[` + ok("a"), "format"},
		{"not an object", `[]`, "dictionary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.call(t, http.MethodPost, "/v1/messages/batches", strings.NewReader(tt.body), nil)
			msg := requireAnthropicError(t, resp, body, http.StatusBadRequest, "invalid_request_error")
			require.Contains(t, msg, tt.field)
		})
	}

	// The SDK sees the same refusal.
	_, err := e.client.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		messageRequests(1)[0], {CustomID: "not/valid", Params: messageRequests(1)[0].Params},
	}})
	var apiErr *anthropic.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
	require.EqualValues(t, "invalid_request_error", apiErr.Type())
	require.Contains(t, apiErr.Message, "requests.1.custom_id")

	require.Empty(t, e.srv.MessageBatches())
	st := e.srv.Stats().Anthropic
	require.Zero(t, st.BatchesCreated)
	require.Equal(t, len(tests)+1, st.RefusedCreates)
	requireNoBatchFiles(t, e.srv.DataDir())
	page, err := e.client.Messages.Batches.List(t.Context(), anthropic.MessageBatchListParams{})
	require.NoError(t, err)
	require.Empty(t, page.Data)
}

// requireNoBatchFiles checks the data directory holds no request or results file and no scratch file.
func requireNoBatchFiles(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{"batches", "tmp"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		require.NoError(t, err)
		require.Empty(t, entries, "%s/%s", dir, sub)
	}
}

// A body past the size limit is 413 request_too_large, announced or not, whatever it holds.
func TestMessageBatchTooLarge(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{MaxMessageBatchBytes: 4 << 10})
	var body bytes.Buffer
	body.WriteString(`{"requests":[`)
	for i := range 60 {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"custom_id":"r%d","params":{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hello"}]}}`, i)
	}
	body.WriteString(`]}`)
	require.Greater(t, body.Len(), 4<<10)

	resp, data := e.call(t, http.MethodPost, "/v1/messages/batches", bytes.NewReader(body.Bytes()), nil)
	requireAnthropicError(t, resp, data, http.StatusRequestEntityTooLarge, "request_too_large")
	// Without a Content-Length the emulator finds out while reading.
	resp, data = e.call(t, http.MethodPost, "/v1/messages/batches", io.MultiReader(bytes.NewReader(body.Bytes())), nil)
	requireAnthropicError(t, resp, data, http.StatusRequestEntityTooLarge, "request_too_large")
	// A bad request early in a body too large is still 413: the size is checked first.
	bad := bytes.Replace(body.Bytes(), []byte(`"r0"`), []byte(`"r 0"`), 1)
	resp, data = e.call(t, http.MethodPost, "/v1/messages/batches", io.MultiReader(bytes.NewReader(bad)), nil)
	requireAnthropicError(t, resp, data, http.StatusRequestEntityTooLarge, "request_too_large")

	require.Empty(t, e.srv.MessageBatches())
	require.Equal(t, 3, e.srv.Stats().Anthropic.RefusedCreates)
	requireNoBatchFiles(t, e.srv.DataDir())
}

// Calls need the API key (x-api-key, or a bearer token as the SDK sends it) and an anthropic-version header.
func TestMessageBatchAuth(t *testing.T) {
	t.Parallel()
	e := newAnthropicEnv(t, emulator.Options{})
	const path = "/v1/messages/batches"

	resp, body := e.call(t, http.MethodGet, path, nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)

	resp, body = e.call(t, http.MethodGet, path, nil, map[string]string{"x-api-key": ""})
	requireAnthropicError(t, resp, body, http.StatusUnauthorized, "authentication_error")
	resp, body = e.call(t, http.MethodGet, path, nil, map[string]string{"x-api-key": "sk-ant-wrong"})
	requireAnthropicError(t, resp, body, http.StatusUnauthorized, "authentication_error")
	require.NotContains(t, string(body), "sk-ant-wrong", "a key is never echoed")
	resp, body = e.call(t, http.MethodGet, path, nil, map[string]string{"x-api-key": "", "Authorization": "Bearer " + testAnthropicKey})
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)

	resp, body = e.call(t, http.MethodGet, path, nil, map[string]string{"anthropic-version": ""})
	msg := requireAnthropicError(t, resp, body, http.StatusBadRequest, "invalid_request_error")
	require.Contains(t, msg, "anthropic-version")

	bad := anthropic.NewClient(option.WithBaseURL(e.url), option.WithAPIKey("sk-ant-wrong"), option.WithMaxRetries(0))
	_, err := bad.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: messageRequests(1)})
	var apiErr *anthropic.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)
	require.EqualValues(t, "authentication_error", apiErr.Type())

	require.Equal(t, 3, e.srv.Stats().Unauthorized)
	require.Zero(t, e.srv.Stats().Anthropic.BatchesCreated)
}
