package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a goroutine-safe stderr for a command still running.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestEmulatorCommand(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	outR, outW := io.Pipe()
	var errOut syncBuffer
	streams := &IOStreams{In: strings.NewReader(""), Out: outW, ErrOut: &errOut}
	env := map[string]string{"BATCHCTL_EMULATOR_API_KEY": "sk-emulator"}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"emulator", "--addr", "127.0.0.1:0", "--phase-delay", "5ms", "--token-limit", "gpt-4o-mini=1000000",
			"--max-batch-creates-per-hour", "1"},
			streams, func(k string) string { return env[k] })
		_ = outW.Close()
	}()

	line, err := bufio.NewReader(outR).ReadString('\n')
	require.NoError(t, err, "stderr: %s", errOut.String())
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	var ready struct {
		BaseURL string `json:"base_url"`
	}
	require.NoError(t, json.Unmarshal([]byte(line), &ready))
	require.True(t, strings.HasPrefix(ready.BaseURL, "http://127.0.0.1:"), ready.BaseURL)
	require.Contains(t, errOut.String(), "emulator listening")

	client := openai.NewClient(option.WithBaseURL(ready.BaseURL), option.WithAPIKey("sk-emulator"), option.WithMaxRetries(0))
	input := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}` + "\n"
	f, err := client.Files.New(ctx, openai.FileNewParams{
		File: openai.File(strings.NewReader(input), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch,
	})
	require.NoError(t, err)
	b, err := client.Batches.New(ctx, openai.BatchNewParams{
		InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: "24h",
	})
	require.NoError(t, err)
	deadline := time.Now().Add(10 * time.Second)
	for b.Status != openai.BatchStatusCompleted {
		require.True(t, time.Now().Before(deadline), "batch stuck in %s", b.Status)
		time.Sleep(5 * time.Millisecond)
		b, err = client.Batches.Get(ctx, b.ID)
		require.NoError(t, err)
	}

	// --max-batch-creates-per-hour 1: a second batch within the hour is refused.
	_, err = client.Batches.New(ctx, openai.BatchNewParams{
		InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: "24h",
	})
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 429, apiErr.StatusCode)

	// --api-key (here from its env var) refuses other keys.
	other := openai.NewClient(option.WithBaseURL(ready.BaseURL), option.WithAPIKey("sk-other"), option.WithMaxRetries(0))
	_, err = other.Batches.Get(ctx, b.ID)
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 401, apiErr.StatusCode)

	cancel()
	select {
	case code := <-done:
		require.Equal(t, exitOK, code, "stderr: %s", errOut.String())
	case <-time.After(15 * time.Second):
		t.Fatal("emulator did not shut down")
	}
	require.Contains(t, errOut.String(), "emulator shutting down")
}

func TestEmulatorCommandUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad token limit", []string{"--token-limit", "gpt-4o-mini"}, "MODEL=TOKENS"},
		{"rate above one", []string{"--rate-429", "1.5"}, "--rate-429"},
		{"disk fail rate above one", []string{"--disk-fail-rate", "2"}, "--disk-fail-rate"},
		{"zero phase delay", []string{"--phase-delay", "0s"}, "--phase-delay"},
		{"extra argument", []string{"now"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := runCLI(t, "", nil, append([]string{"emulator", "--addr", "127.0.0.1:0"}, tt.args...)...)
			require.Equal(t, exitUsage, res.code, res.stderr)
			require.Contains(t, res.stderr, tt.want)
		})
	}
}

func TestEmulatorHelp(t *testing.T) {
	t.Parallel()
	res := runCLI(t, "", nil, "emulator", "--help")
	require.Equal(t, exitOK, res.code)
	for _, flag := range []string{"--addr", "--api-key", "--data-dir", "--phase-delay", "--seed", "--fail-rate", "--rate-429",
		"--rate-500", "--reset-rate", "--truncate-rate", "--download-bps", "--expire-rate", "--token-limit"} {
		require.Contains(t, res.stdout, flag)
	}
}
