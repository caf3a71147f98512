package batchapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/store"
)

func newClient(t *testing.T, opts emulator.Options) (*emulator.Server, *batchapi.Client) {
	t.Helper()
	emu, baseURL := emulator.Start(t, opts)
	api := openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey("k"), option.WithMaxRetries(0))
	return emu, &batchapi.Client{API: &api, RetryInitial: time.Millisecond, Uploaded: new(atomic.Int64)}
}

func requestFile(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, `{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}`+"\n", i)
	}
	path := filepath.Join(t.TempDir(), "part.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

func TestUploadStreamsAndRetriesFromTheStart(t *testing.T) {
	t.Parallel()
	emu, c := newClient(t, emulator.Options{Seed: 1, HTTP500Rate: 0.5, RetryAfter: time.Millisecond})
	path := requestFile(t, 50)
	size, err := os.Stat(path)
	require.NoError(t, err)

	id, err := c.Upload(context.Background(), path)
	require.NoError(t, err)
	f, ok := emu.File(id)
	require.True(t, ok)
	require.Equal(t, size.Size(), f.Bytes, "the file arrived whole")
	got, err := os.ReadFile(f.Path)
	require.NoError(t, err)
	want, _ := os.ReadFile(path)
	require.Equal(t, want, got)
	require.GreaterOrEqual(t, c.Uploaded.Load(), size.Size())
}

// TestRetryGivesUpWithTheAPIsAnswer: a 429 asking for a wait longer than the time left to retry ends the retries at
// once, and the caller gets the API's answer (not backoff's "retry after").
func TestRetryGivesUpWithTheAPIsAnswer(t *testing.T) {
	t.Parallel()
	emu, c := newClient(t, emulator.Options{HTTP429Rate: 1, RetryAfter: time.Hour})
	start := time.Now()
	_, err := c.Upload(context.Background(), requestFile(t, 1))
	require.Less(t, time.Since(start), time.Minute, "no hour-long sleep")
	require.Equal(t, batchapi.Transient, batchapi.Classify(err))
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusTooManyRequests, apiErr.StatusCode)
	require.Contains(t, batchapi.Message(err), "Rate limit reached")
	require.Equal(t, time.Hour, batchapi.RetryAfter(err))
	require.Equal(t, 1, emu.Stats().Injected429, "one call: the wait asked for is past the retry budget")
}

// TestUploadLocalErrorsFailAtOnce: a request file that is missing or cannot be read is not the API's fault and
// will not heal by retrying; Upload fails at once, naming the file, with no call to the API.
func TestUploadLocalErrorsFailAtOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, path string
	}{
		{"missing", filepath.Join(dir, "gone.jsonl")},
		{"unreadable (a directory: reading fails even for root)", dir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			emu, c := newClient(t, emulator.Options{})
			// Retried as transient, the upload would run until this deadline (or the 15-minute retry budget).
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.Upload(ctx, tt.path)
			require.Error(t, err)
			require.Less(t, time.Since(start), time.Second, "no retries: %v", err)
			require.Equal(t, batchapi.Local, batchapi.Classify(err), "%v", err)
			require.ErrorContains(t, err, tt.path)
			require.LessOrEqual(t, emu.Stats().FileUploads, 1, "one attempt at most")
		})
	}
}

func TestCreateFindsTheBatchOfALostAnswer(t *testing.T) {
	t.Parallel()
	emu, c := newClient(t, emulator.Options{})
	ctx := context.Background()
	fileID, err := c.Upload(ctx, requestFile(t, 3))
	require.NoError(t, err)
	intent := batchapi.Intent{Endpoint: "/v1/chat/completions", InputFileID: fileID, Since: time.Now(),
		Metadata: map[string]string{"batchctl_intent": "i-1"},
		Match:    func(b *openai.Batch) bool { return b.Metadata["batchctl_intent"] == "i-1" }}

	// Every create answer is lost (the connection is cut after the batch exists): the retry must find the batch.
	emu.SetFaults(emulator.Faults{ResetRate: 1})
	c.RetryMaxElapsed = 300 * time.Millisecond // every retry is cut too: give up soon
	_, _, err = c.Create(ctx, intent, false)
	require.Error(t, err, "with every answer lost the first attempt cannot know")
	emu.SetFaults(emulator.Faults{})
	b, existing, err := c.Create(ctx, intent, true)
	require.NoError(t, err)
	require.True(t, existing)
	created := 0
	for _, rec := range emu.Batches() {
		if rec.Metadata["batchctl_intent"] == "i-1" {
			created++
			require.Equal(t, b.ID, rec.ID)
		}
	}
	require.Equal(t, 1, created, "one batch, however many lost answers")

	other := intent
	other.Match = func(b *openai.Batch) bool { return false }
	b2, existing, err := c.Create(ctx, other, true)
	require.NoError(t, err)
	require.False(t, existing)
	require.NotEqual(t, b.ID, b2.ID)
}

func TestClassify(t *testing.T) {
	t.Parallel()
	apiErr := func(code int) error {
		return &openai.Error{StatusCode: code, Response: &http.Response{Header: http.Header{}}}
	}
	tests := []struct {
		err  error
		want batchapi.ErrorKind
	}{
		{apiErr(401), batchapi.Auth}, {apiErr(403), batchapi.Auth}, {apiErr(404), batchapi.NotFound},
		{apiErr(400), batchapi.Permanent}, {apiErr(422), batchapi.Permanent},
		{apiErr(408), batchapi.Transient}, {apiErr(409), batchapi.Transient}, {apiErr(429), batchapi.Transient},
		{apiErr(500), batchapi.Transient}, {apiErr(503), batchapi.Transient},
		{errors.New("connection reset by peer"), batchapi.Transient},
		{&url.Error{Op: "Post", URL: "http://api/v1/files", Err: &net.OpError{Op: "read", Net: "tcp", Err: &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}}}, batchapi.Transient},
		{&url.Error{Op: "Post", URL: "http://api/v1/files", Err: os.ErrDeadlineExceeded}, batchapi.Transient},
		{fmt.Errorf("error reading response body: %w", io.ErrUnexpectedEOF), batchapi.Transient},
		{&fs.PathError{Op: "open", Path: "spool/0001.jsonl", Err: fs.ErrNotExist}, batchapi.Local},
		{&url.Error{Op: "Post", URL: "http://api/v1/files", Err: &fs.PathError{Op: "read", Path: "spool/0001.jsonl", Err: syscall.EIO}}, batchapi.Local},
		{context.Canceled, batchapi.Permanent},
		{fmt.Errorf("wrapped: %w", apiErr(502)), batchapi.Transient},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, batchapi.Classify(tt.err), "%v", tt.err)
	}
	e := &openai.Error{StatusCode: 429, Response: &http.Response{Header: http.Header{"Retry-After-Ms": {"1500"}, "Retry-After": {"2"}}}}
	require.Equal(t, 1500*time.Millisecond, batchapi.RetryAfter(e))
	e.Response.Header.Del("Retry-After-Ms")
	require.Equal(t, 2*time.Second, batchapi.RetryAfter(e))
	require.Zero(t, batchapi.RetryAfter(errors.New("x")))
}

func TestSaidAndMessage(t *testing.T) {
	t.Parallel()
	apiErr := &openai.Error{StatusCode: 400, Message: "Missing required parameter: 'file'.", Param: "file", Type: "invalid_request_error"}
	err := fmt.Errorf("upload batch file x.jsonl: %w", apiErr)
	require.Equal(t, "Missing required parameter: 'file'. (param file, type invalid_request_error)", batchapi.Said(err))
	require.Equal(t, "400 Missing required parameter: 'file'. (param file, type invalid_request_error)", batchapi.Message(err))
	apiErr.Code, apiErr.Param = "invalid_api_key", ""
	require.Contains(t, batchapi.Said(err), "(code invalid_api_key, type invalid_request_error)")
	require.Empty(t, batchapi.Said(&openai.Error{StatusCode: 502}), "no message, nothing said")
	require.Empty(t, batchapi.Said(errors.New("connection reset by peer")))
}

func TestRowMapsTheBatchObject(t *testing.T) {
	t.Parallel()
	emu, c := newClient(t, emulator.Options{})
	ctx := context.Background()
	fileID, err := c.Upload(ctx, requestFile(t, 4))
	require.NoError(t, err)
	b, _, err := c.Create(ctx, batchapi.Intent{Endpoint: "/v1/chat/completions", InputFileID: fileID,
		Metadata: map[string]string{"team": "x"}, Match: func(*openai.Batch) bool { return false }}, false)
	require.NoError(t, err)
	require.Eventually(t, func() bool { r, _ := emu.Batch(b.ID); return r.Status == "completed" }, 10*time.Second, 5*time.Millisecond)
	got, err := c.API.Batches.Get(ctx, b.ID)
	require.NoError(t, err)

	row := batchapi.Row(got)
	require.Equal(t, b.ID, row.BatchID)
	require.Equal(t, store.StatusCompleted, row.Status)
	require.Equal(t, "m", row.Model)
	require.Equal(t, fileID, row.InputFileID)
	require.NotEmpty(t, row.OutputFileID)
	require.Empty(t, row.ErrorFileID)
	require.Equal(t, 4, row.RequestTotal)
	require.Equal(t, 4, row.RequestCompleted)
	require.Equal(t, "x", row.Metadata["team"])
	require.NotNil(t, row.EndedAt)
	require.Nil(t, row.Errors)
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	require.Equal(t, "short", batchapi.Truncate("short", 8))
	require.Equal(t, "abcd...", batchapi.Truncate("abcdefghij", 7))
	require.Equal(t, "ab...", batchapi.Truncate("abé日本", 6), "é would be cut in half: it goes whole")
	long := strings.Repeat("日", 200) // 600 bytes
	got := batchapi.Truncate(long, batchapi.MaxMetadataValueLen)
	require.LessOrEqual(t, len(got), batchapi.MaxMetadataValueLen)
	require.True(t, utf8.ValidString(got))
}

// The search for a batch whose create may have happened fails closed: with a page cap too small to reach back to
// the intent, Create stops with ErrReconcileIncomplete instead of creating a second batch; without a cap it walks
// every page back to the intent and finds the batch.
func TestCreateSearchFailsClosed(t *testing.T) {
	t.Parallel()
	emu, c := newClient(t, emulator.Options{})
	ctx := context.Background()
	fileID, err := c.Upload(ctx, requestFile(t, 1))
	require.NoError(t, err)
	since := time.Now().Add(-time.Second)
	intent := batchapi.Intent{Endpoint: "/v1/chat/completions", InputFileID: fileID, Since: since,
		Metadata: map[string]string{"batchctl_intent": "target"},
		Match:    func(b *openai.Batch) bool { return b.Metadata["batchctl_intent"] == "target" }}
	target, existing, err := c.Create(ctx, intent, false)
	require.NoError(t, err)
	require.False(t, existing)
	for i := range 250 {
		_, err := c.API.Batches.New(ctx, openai.BatchNewParams{CompletionWindow: batchapi.CompletionWindow,
			Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, InputFileID: fileID,
			Metadata: map[string]string{"n": fmt.Sprint(i)}})
		require.NoError(t, err)
	}

	capped := *c
	capped.ReconcilePages = 1
	_, _, err = capped.Create(ctx, intent, true)
	require.ErrorIs(t, err, batchapi.ErrReconcileIncomplete)
	require.Len(t, emu.Batches(), 251, "no batch created on an unfinished search")

	b, existing, err := c.Create(ctx, intent, true)
	require.NoError(t, err)
	require.True(t, existing)
	require.Equal(t, target.ID, b.ID)
	require.Len(t, emu.Batches(), 251)
}

// After a lost create answer, a search that finds nothing is not trusted until ReconcileSettle has passed: a batch
// that shows in the list a moment later is found, not created again.
func TestCreateWaitsForTheListToSettle(t *testing.T) {
	t.Parallel()
	emu, c := newClient(t, emulator.Options{})
	ctx := context.Background()
	fileID, err := c.Upload(ctx, requestFile(t, 1))
	require.NoError(t, err)
	meta := map[string]string{"batchctl_intent": "late"}
	intent := batchapi.Intent{Endpoint: "/v1/chat/completions", InputFileID: fileID, Since: time.Now(),
		Metadata: meta, LastAttempt: time.Now(),
		Match: func(b *openai.Batch) bool { return b.Metadata["batchctl_intent"] == "late" }}
	c.ReconcileSettle = 2 * time.Second
	// The batch of the lost create appears in the list only now.
	time.AfterFunc(300*time.Millisecond, func() {
		_, _ = c.API.Batches.New(ctx, openai.BatchNewParams{CompletionWindow: batchapi.CompletionWindow,
			Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, InputFileID: fileID, Metadata: meta})
	})
	_, existing, err := c.Create(ctx, intent, true)
	require.NoError(t, err)
	require.True(t, existing)
	require.Len(t, emu.Batches(), 1)
}
