package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// TestAPIErrorsShowTheAPIsMessage: openai-go's error text is only the HTTP status; whatever command met the API's
// refusal, batchctl prints the API's own message and code beside it, and exits 4.
func TestAPIErrorsShowTheAPIsMessage(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t, emulator.Options{APIKey: "sk-test-secret"})
	file, _ := writeRecords(t, t.TempDir(), "in.jsonl", "r", 2)
	wrongKey := func(env map[string]string) map[string]string {
		out := map[string]string{"BATCHCTL_SPOOL_DIR": t.TempDir()}
		for k, v := range env {
			out[k] = v
		}
		out["OPENAI_API_KEY"] = "sk-wrong-key-0123456789"
		return out
	}
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		wants []string
	}{
		{"cancel of an unknown batch", e.env, []string{"cancel", "batch_nope"},
			[]string{"404 Not Found", "No batch found with id 'batch_nope'.", "type invalid_request_error"}},
		{"cancel with a wrong key", wrongKey(e.env), []string{"cancel", "batch_nope"},
			[]string{"401 Unauthorized", "Incorrect API key provided", "code invalid_api_key"}},
		{"submit with a wrong key", wrongKey(e.env), []string{"submit", "--model", "m", "--id-field", "id", file},
			[]string{"401 Unauthorized", "Incorrect API key provided", "code invalid_api_key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, "", tt.env, tt.args...)
			require.Equal(t, exitAPI, r.code, r.stderr)
			line := errorLine(r.stderr)
			for _, want := range tt.wants {
				require.Contains(t, line, want, "the error line of:\n%s", r.stderr)
			}
			require.NotContains(t, r.stderr, "sk-wrong-key-0123456789", "the key itself is never printed")
		})
	}
}

// errorLine is the line run printed for the command's error, not a log line.
func errorLine(stderr string) string {
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "batchctl: ") {
			return line
		}
	}
	return ""
}
