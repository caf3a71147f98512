package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/jsonl"
)

// resultRow is one line of `batchctl results`.
type resultRow struct {
	BatchID    string          `json:"batch_id"`
	CustomID   string          `json:"custom_id"`
	InputLine  *int            `json:"input_line"`
	StatusCode *int            `json:"status_code"`
	Response   json.RawMessage `json:"response"`
	Error      json.RawMessage `json:"error"`
}

// TestEveryEndpointEndToEnd runs what a user runs for each endpoint of the Batch API: submit of data records in the
// endpoint's built-in form, poll until loaded, results. Every request comes back as a 200 row at its input line with
// the body its endpoint answers, and the batch row sums the usage the bodies report (none for moderations). The
// deprecated /v1/videos is refused by the API when the batch is created.
func TestEveryEndpointEndToEnd(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t, emulator.Options{})
	e.env["BATCHCTL_SPOOL_DIR"] = t.TempDir()
	texts := []string{"the battery lasts for days", "it broke after a week; I could kill the seller", "fine, I guess"}
	records := func(extra string) string {
		var b strings.Builder
		for i, text := range texts {
			fmt.Fprintf(&b, `{"id":"r-%d","text":%q%s}`+"\n", i+1, text, extra)
		}
		return b.String()
	}
	// field reads a JSON path of a response body.
	field := func(t *testing.T, body json.RawMessage, path string) any {
		t.Helper()
		v := jsonl.Peek(body, path)
		require.True(t, v.Exists(), "%s in %.300s", path, body)
		return v.Value()
	}
	decodePNG := func(t *testing.T, body json.RawMessage) {
		t.Helper()
		raw, err := base64.StdEncoding.DecodeString(field(t, body, "data.0.b64_json").(string))
		require.NoError(t, err)
		img, err := png.Decode(bytes.NewReader(raw))
		require.NoError(t, err)
		require.Equal(t, 1024, img.Bounds().Dx())
	}
	tests := []struct {
		endpoint string
		flags    []string
		extra    string // more fields of each record
		check    func(t *testing.T, text string, body json.RawMessage)
		usage    bool // the bodies report usage, summed on the batch row
	}{
		{jsonl.EndpointResponses, []string{"--model", "gpt-4o-mini", "--system", "Classify."}, "",
			func(t *testing.T, text string, body json.RawMessage) {
				require.Equal(t, "response", field(t, body, "object"))
				require.Equal(t, emulator.AnswerText(text), field(t, body, "output.0.content.0.text"))
			}, true},
		{jsonl.EndpointChatCompletions, []string{"--model", "gpt-4o-mini", "--system", "Classify."}, "",
			func(t *testing.T, text string, body json.RawMessage) {
				require.Equal(t, "chat.completion", field(t, body, "object"))
				require.Equal(t, emulator.AnswerText(text), field(t, body, "choices.0.message.content"))
			}, true},
		{jsonl.EndpointEmbeddings, []string{"--model", "text-embedding-3-small"}, "",
			func(t *testing.T, text string, body json.RawMessage) {
				require.Len(t, field(t, body, "data.0.embedding"), emulator.EmbeddingDimensions)
			}, true},
		{jsonl.EndpointCompletions, []string{"--model", "gpt-3.5-turbo-instruct"}, "",
			func(t *testing.T, text string, body json.RawMessage) {
				require.Equal(t, "text_completion", field(t, body, "object"))
				require.Equal(t, emulator.AnswerText(text), field(t, body, "choices.0.text"))
			}, true},
		{jsonl.EndpointModerations, []string{"--model", "omni-moderation-latest"}, "",
			func(t *testing.T, text string, body json.RawMessage) {
				require.Equal(t, strings.Contains(text, "kill"), field(t, body, "results.0.flagged"))
			}, false},
		{jsonl.EndpointImages, []string{"--model", "gpt-image-1"}, "",
			func(t *testing.T, text string, body json.RawMessage) {
				decodePNG(t, body)
				require.Equal(t, "medium", field(t, body, "quality"))
				require.EqualValues(t, 1056, field(t, body, "usage.output_tokens"))
			}, true},
		{jsonl.EndpointImageEdits, []string{"--model", "gpt-image-1", "--image-field", "picture"}, `,"picture":"https://example.com/fox.png"`,
			func(t *testing.T, text string, body json.RawMessage) {
				decodePNG(t, body)
				require.EqualValues(t, 272, field(t, body, "usage.input_tokens_details.image_tokens"))
			}, true},
	}
	batchIDs := map[string]string{}
	for _, tt := range tests {
		file := filepath.Join(t.TempDir(), strings.ReplaceAll(strings.TrimPrefix(tt.endpoint, "/v1/"), "/", "-")+".jsonl")
		require.NoError(t, os.WriteFile(file, []byte(records(tt.extra)), 0o600))
		r := runCLI(t, "", e.env, append([]string{"submit", "--endpoint", tt.endpoint, "--id-field", "id", file}, tt.flags...)...)
		require.Equal(t, exitOK, r.code, "%s: %s", tt.endpoint, r.stderr)
		lines := submitLines(t, r.stdout)
		require.Len(t, lines, 1, tt.endpoint)
		require.Equal(t, tt.endpoint, lines[0]["endpoint"])
		batchIDs[tt.endpoint] = lines[0]["batch_id"].(string)
	}

	// The deprecated video endpoint: the API refuses the batch; submit says so and exits with the API's code.
	videos := filepath.Join(t.TempDir(), "videos.jsonl")
	require.NoError(t, os.WriteFile(videos, []byte(records("")), 0o600))
	r := runCLI(t, "", e.env, "submit", "--endpoint", jsonl.EndpointVideos, "--model", "sora-2", "--id-field", "id", videos)
	require.Equal(t, exitAPI, r.code, r.stderr)
	require.Contains(t, r.stderr, "/v1/videos is deprecated")
	require.Contains(t, r.stderr, "Video generation is deprecated")
	require.Empty(t, r.stdout)

	r = runCLI(t, "", e.env, fastPoll...)
	require.Equal(t, exitOK, r.code, r.stderr)

	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.endpoint, "/v1/"), func(t *testing.T) {
			id := batchIDs[tt.endpoint]
			r := runCLI(t, "", e.env, "results", id)
			require.Equal(t, exitOK, r.code, r.stderr)
			var rows []resultRow
			d := json.NewDecoder(strings.NewReader(r.stdout))
			for d.More() {
				var row resultRow
				require.NoError(t, d.Decode(&row))
				rows = append(rows, row)
			}
			require.Len(t, rows, len(texts))
			for i, row := range rows {
				require.Equal(t, fmt.Sprintf("r-%d", i+1), row.CustomID, "input order")
				require.NotNil(t, row.InputLine)
				require.Equal(t, i+1, *row.InputLine)
				require.NotNil(t, row.StatusCode, "%s", row.Error)
				require.Equal(t, 200, *row.StatusCode)
				tt.check(t, texts[i], row.Response)
			}

			var prompt, completion *int64
			require.NoError(t, e.store.Pool().QueryRow(context.Background(), `select prompt_tokens, completion_tokens from `+
				e.schema+`.batches where batch_id = $1 and results_loaded_at is not null`, id).Scan(&prompt, &completion))
			if !tt.usage {
				require.Nil(t, prompt, "no body reported usage")
				return
			}
			require.NotNil(t, prompt)
			var sum int64
			for _, row := range rows {
				sum += jsonl.Peek(row.Response, "usage.prompt_tokens").Int() + jsonl.Peek(row.Response, "usage.input_tokens").Int()
			}
			require.Equal(t, sum, *prompt, "the batch row sums the bodies' usage")
		})
	}
}
