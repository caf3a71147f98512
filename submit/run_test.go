package submit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/submit"
)

func newEmulator(t *testing.T, o emulator.Options) (*emulator.Server, *openai.Client) {
	t.Helper()
	if o.PhaseDelay == 0 {
		o.PhaseDelay = 5 * time.Millisecond
	}
	srv, baseURL := emulator.Start(t, o)
	client := openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey("sk-test"))
	return srv, &client
}

func baseOptions(t *testing.T, client *openai.Client, out io.Writer) submit.Options {
	return submit.Options{
		Client:       client,
		Model:        "gpt-4o-mini",
		SpoolDir:     t.TempDir(),
		Out:          out,
		Logger:       slog.New(slog.DiscardHandler),
		RetryInitial: 5 * time.Millisecond,
		// The emulator's batch list is consistent at once.
		ReconcileSettle: 20 * time.Millisecond,
	}
}

// writeInput writes n data records {"text": ...} to a file and returns its input.
func writeInput(t *testing.T, name string, lines ...string) submit.Input {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	return submit.Input{Name: name, Path: path}
}

func records(n int) []string {
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf(`{"text":"review number %d"}`, i+1)
	}
	return lines
}

func decodeCreated(t *testing.T, out string) []submit.Created {
	t.Helper()
	var cs []submit.Created
	d := json.NewDecoder(strings.NewReader(out))
	for d.More() {
		var c submit.Created
		require.NoError(t, d.Decode(&c))
		cs = append(cs, c)
	}
	return cs
}

func TestRunSeveralFiles(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Inputs = []submit.Input{writeInput(t, "a.jsonl", records(3)...), writeInput(t, "b.jsonl", records(2)...)}
	opts.Metadata = map[string]string{"team": "data"}
	var hooked []submit.Created
	opts.OnCreated = func(_ context.Context, c submit.Created) error {
		hooked = append(hooked, c)
		return nil
	}
	require.NoError(t, submit.Run(t.Context(), opts))

	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 1)
	c := cs[0]
	require.Equal(t, hooked, cs)
	require.NotEmpty(t, c.BatchID)
	require.NotEmpty(t, c.InputFileID)
	require.Equal(t, 5, c.Requests)
	require.Equal(t, "a.jsonl,b.jsonl", c.Source)
	require.Equal(t, jsonl.EndpointChatCompletions, c.Endpoint)
	require.Equal(t, "gpt-4o-mini", c.Model)
	require.Len(t, c.SpoolSHA256, 64)

	b, ok := srv.Batch(c.BatchID)
	require.True(t, ok)
	require.Equal(t, c.InputFileID, b.InputFileID)
	require.Equal(t, "data", b.Metadata["team"])
	require.Equal(t, c.SpoolSHA256, b.Metadata[submit.MetaSpoolSHA256])
	require.Equal(t, "1", b.Metadata[submit.MetaPart])
	f, ok := srv.File(c.InputFileID)
	require.True(t, ok)
	require.Equal(t, c.Bytes, f.Bytes)
	require.Eventually(t, func() bool {
		b, _ := srv.Batch(c.BatchID)
		return b.Status == emulator.StatusCompleted
	}, 5*time.Second, 10*time.Millisecond)
	b, _ = srv.Batch(c.BatchID)
	require.Equal(t, []string{"a.jsonl:1", "a.jsonl:2", "a.jsonl:3", "b.jsonl:1", "b.jsonl:2"}, b.CustomIDs)
}

func TestRunSplits(t *testing.T) {
	t.Parallel()
	line := `{"text":"review number 10"}` // every record below builds a request line of the same length
	reqLen := len(`{"custom_id":"in.jsonl:10","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"review number 10"}]}}`) + 1
	bodyTokens := int64(len(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"review number 10"}]}`)+3) / 4 // all ASCII
	tests := []struct {
		name        string
		maxRequests int
		maxBytes    int64
		maxTokens   int64
		want        []int
	}{
		{"by count", 4, 0, 0, []int{4, 4, 2}},
		{"by bytes", 0, int64(3*reqLen + 5), 0, []int{3, 3, 3, 1}},
		{"exact bytes", 0, int64(5 * reqLen), 0, []int{5, 5}},
		{"by tokens", 0, 0, 3*bodyTokens + 1, []int{3, 3, 3, 1}},
		{"exact tokens", 0, 0, 5 * bodyTokens, []int{5, 5}},
		{"tokens and count", 2, 0, 3 * bodyTokens, []int{2, 2, 2, 2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, client := newEmulator(t, emulator.Options{})
			var out bytes.Buffer
			opts := baseOptions(t, client, &out)
			lines := make([]string, 10)
			for i := range lines {
				lines[i] = strings.Replace(line, "10", fmt.Sprint(10+i), 1)
			}
			opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", lines...)}
			opts.MaxRequests, opts.MaxBytes, opts.MaxTokens = tt.maxRequests, tt.maxBytes, tt.maxTokens
			require.NoError(t, submit.Run(t.Context(), opts))
			var got []int
			for i, c := range decodeCreated(t, out.String()) {
				got = append(got, c.Requests)
				require.Equal(t, i+1, c.Part)
				if tt.maxBytes > 0 {
					require.LessOrEqual(t, c.Bytes, tt.maxBytes)
				}
			}
			require.Equal(t, tt.want, got)
			require.Len(t, srv.Batches(), len(tt.want))
		})
	}
}

func TestRunStdinFlushInterval(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	pr, pw := io.Pipe()
	out := &lockedBuffer{}
	opts := baseOptions(t, client, out)
	opts.Inputs = []submit.Input{{Name: "stdin", Reader: pr}}
	opts.FlushInterval = 50 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- submit.Run(t.Context(), opts) }()

	fmt.Fprintln(pw, `{"text":"first"}`)
	fmt.Fprintln(pw, `{"text":"second"}`)
	require.Eventually(t, func() bool { return strings.Count(out.String(), "\n") == 1 }, 5*time.Second, 5*time.Millisecond,
		"a slow stream's partial batch goes out after the flush interval")
	require.Len(t, srv.Batches(), 1)
	fmt.Fprintln(pw, `{"text":"third"}`)
	require.NoError(t, pw.Close())
	require.NoError(t, <-done)

	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 2)
	require.Equal(t, []int{2, 1}, []int{cs[0].Requests, cs[1].Requests})
	require.Equal(t, "stdin", cs[0].Source)
	b, _ := srv.Batch(cs[1].BatchID)
	require.Eventually(t, func() bool { b, _ = srv.Batch(cs[1].BatchID); return b.CustomIDs != nil }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, []string{"stdin:3"}, b.CustomIDs)
}

// lockedBuffer is a bytes.Buffer safe to read while Run writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunBadInput(t *testing.T) {
	t.Parallel()
	const good = `{"text":"fine"}`
	req := func(id, url, model string) string {
		return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":%q,"body":{"model":%q,"messages":[]}}`, id, url, model)
	}
	tests := []struct {
		name    string
		lines   []string
		tweak   func(*submit.Options)
		wantErr string
	}{
		{"invalid JSON", []string{good, `{"text":`}, nil, "in.jsonl:2: invalid JSON"},
		{"invalid UTF-8", []string{good, good, "{\"text\":\"caf\xe9\"}"}, nil, "in.jsonl:3: invalid UTF-8 at byte 13"},
		{"not an object", []string{`[1,2]`}, nil, "in.jsonl:1: not a JSON object but an array"},
		{"missing custom_id", []string{`{"body":{"model":"m"}}`}, nil, "in.jsonl:1: request line has no custom_id"},
		{"missing body", []string{`{"custom_id":"x","url":"/v1/chat/completions"}`}, nil, "in.jsonl:1: request line has no body"},
		{"missing text field", []string{good, `{"title":"no text"}`}, nil, `in.jsonl:2: field "text" is missing`},
		{"non-string custom_id", []string{`{"custom_id":7,"body":{"model":"m"}}`}, nil, "in.jsonl:1: custom_id is a number, want a string"},
		{"repeated custom_id", []string{req("r-1", "/v1/chat/completions", "m"), good, req("r-1", "/v1/chat/completions", "m")}, nil,
			`in.jsonl:3: custom_id "r-1" repeated in this batch (first on line 1)`},
		{"url mismatch", []string{req("r-1", "/v1/embeddings", "m")}, nil, `in.jsonl:1: url "/v1/embeddings" does not match the endpoint /v1/chat/completions`},
		{"second model", []string{req("r-1", "/v1/chat/completions", "m1"), req("r-2", "/v1/chat/completions", "m2")}, nil,
			`in.jsonl:2: second model "m2" in this batch (model "m1" since in.jsonl:1)`},
		{"no model", []string{`{"custom_id":"a","body":{"messages":[]}}`}, nil, "in.jsonl:1: body has no model"},
		{"request over the byte limit", []string{good, `{"text":"` + strings.Repeat("x", 250) + `"}`},
			func(o *submit.Options) { o.MaxBytes = 300 }, "in.jsonl:2: request is 395 bytes with its newline, over the batch limit of 300"},
		{"line over the byte limit", []string{good, `{"text":"` + strings.Repeat("x", 4000) + `"}`},
			func(o *submit.Options) { o.MaxBytes = 300 }, "in.jsonl:2: line is 4011 bytes, over the limit of 300"},
		// The body: 65 bytes of chat request around the text's 250, a quarter token each, rounded up.
		{"request over the token limit", []string{good, `{"text":"` + strings.Repeat("x", 250) + `"}`},
			func(o *submit.Options) { o.MaxTokens = 30 }, "in.jsonl:2: request is about 79 tokens (estimated), over the batch limit of 30"},
		{"template renders invalid JSON", []string{good}, func(o *submit.Options) { o.Template = `{"model":"m","input":{{.text}}}` },
			"in.jsonl:1: template rendered invalid JSON"},
		{"template missing key", []string{good}, func(o *submit.Options) { o.Template = `{"model":"m","input":{{json .nope}}}` },
			`in.jsonl:1: template: template:1:28: executing "template" at <.nope>: map has no entry for key "nope"`},
		{"id field of the wrong type", []string{`{"id":[1],"text":"x"}`}, func(o *submit.Options) { o.IDField = "id" },
			`in.jsonl:1: id field "id" is [1], want a non-empty string or an integer`},
		{"good lines before a bad one are not uploaded either", []string{good, good, good, `{"text":1}`},
			func(o *submit.Options) { o.MaxRequests = 1 }, `in.jsonl:4: field "text" is 1, want a string`},
		{"no model flag", []string{good}, func(o *submit.Options) { o.Model = "" }, "in.jsonl:1: not a request line"},
		{"edit of a local path", []string{`{"text":"add a hat","image":"https://x/fox.png"}`, `{"text":"add a hat","image":"fox.png"}`},
			func(o *submit.Options) { o.Endpoint, o.Model = "/v1/images/edits", "gpt-image-1" },
			`in.jsonl:2: field "image": "fox.png" is neither an http(s) URL, a data:image/ URL nor a file ID (file-…)`},
		{"edit without pictures", []string{`{"text":"add a hat"}`},
			func(o *submit.Options) { o.Endpoint, o.Model = "/v1/images/edits", "gpt-image-1" }, `in.jsonl:1: field "image" is missing`},
		{"edit of too many pictures", []string{`{"text":"add a hat","image":[` + strings.Repeat(`"file-a",`, 16) + `"file-b"]}`},
			func(o *submit.Options) { o.Endpoint, o.Model = "/v1/images/edits", "gpt-image-1" }, `in.jsonl:1: field "image" holds 17 pictures, want 1 to 16`},
		{"edit of a bad reference", []string{`{"text":"add a hat","image":{"image_url":"https://x/a.png","file_id":"file-a"}}`},
			func(o *submit.Options) { o.Endpoint, o.Model = "/v1/images/edits", "gpt-image-1" }, `in.jsonl:1: field "image": {"image_url"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, client := newEmulator(t, emulator.Options{})
			var out bytes.Buffer
			opts := baseOptions(t, client, &out)
			opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", tt.lines...)}
			if tt.tweak != nil {
				tt.tweak(&opts)
			}
			err := submit.Run(t.Context(), opts)
			require.ErrorContains(t, err, tt.wantErr)
			re, ok := jsonl.AsRecordError(err)
			require.True(t, ok, "%T", err)
			require.Equal(t, "in.jsonl", re.Source)
			require.Zero(t, srv.Stats().FileUploads, "nothing from an invalid input is uploaded")
			require.Empty(t, out.String())
		})
	}
}

func TestRunSkipInvalid(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out, rejects bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", `{"text":"a"}`, `{"text":`, `{"text":"b"}`, "{\"text\":\"\xff\"}", `{"text":3}`)}
	opts.SkipInvalid, opts.Rejects = true, &rejects
	progress := new(submit.Progress)
	opts.Progress = progress
	require.NoError(t, submit.Run(t.Context(), opts))

	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 1)
	require.Equal(t, 2, cs[0].Requests)
	require.Len(t, srv.Batches(), 1)
	require.EqualValues(t, 5, progress.Records.Load())
	require.EqualValues(t, 3, progress.Rejected.Load())

	var got []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(rejects.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		got = append(got, m)
	}
	require.Len(t, got, 3)
	require.Equal(t, []any{2.0, 4.0, 5.0}, []any{got[0]["line"], got[1]["line"], got[2]["line"]})
	require.Equal(t, `{"text":`, got[0]["record"])
	require.Contains(t, got[0]["reason"], "invalid JSON")
	require.Equal(t, "invalid UTF-8 at byte 10", got[1]["reason"])
	require.Equal(t, `field "text" is 3, want a string`, got[2]["reason"])
}

// TestRunSkipInvalidRejectsTheLineAsRead: a record turned away by a check across the batch (here a repeated
// custom_id) goes to the rejects file as the user wrote it, not as the request built from it.
func TestRunSkipInvalidRejectsTheLineAsRead(t *testing.T) {
	t.Parallel()
	_, client := newEmulator(t, emulator.Options{})
	var out, rejects bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.IDField = "id"
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", `{"id":"r-1","text":"a"}`, `{"id":"r-1","text":"b"}`)}
	opts.SkipInvalid, opts.Rejects = true, &rejects
	require.NoError(t, submit.Run(t.Context(), opts))
	var rej map[string]any
	require.NoError(t, json.Unmarshal(rejects.Bytes(), &rej))
	require.Equal(t, `{"id":"r-1","text":"b"}`, rej["record"])
	require.EqualValues(t, 2, rej["line"])
	require.Contains(t, rej["reason"], "repeated in this batch")
}

func TestRunStreamStopsAtBadRecord(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.MaxRequests = 2
	input := strings.Join(append(records(4), `{"oops"`, `{"text":"never"}`), "\n")
	opts.Inputs = []submit.Input{{Name: "stdin", Reader: strings.NewReader(input)}}
	err := submit.Run(t.Context(), opts)
	require.ErrorContains(t, err, "stdin:5: invalid JSON")
	// A stream cannot be checked whole: the batches filled before the bad line stay; the one holding it never goes.
	require.Len(t, srv.Batches(), 2)
	require.Len(t, decodeCreated(t, out.String()), 2)
}

func TestRunCrashBetweenUploadAndCreate(t *testing.T) {
	t.Parallel()
	for _, resume := range []bool{false, true} {
		t.Run(fmt.Sprintf("resume=%v", resume), func(t *testing.T) {
			t.Parallel()
			srv, client := newEmulator(t, emulator.Options{})
			var out bytes.Buffer
			opts := baseOptions(t, client, &out)
			opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(5)...)}
			opts.MaxRequests = 2
			crash := errors.New("crash")
			crashed := opts
			submit.SetAfterUploadHook(&crashed, func() error { return crash })
			require.ErrorIs(t, submit.Run(t.Context(), crashed), crash)
			require.Equal(t, 1, srv.Stats().FileUploads)
			require.Empty(t, srv.Batches())

			again := opts
			if resume {
				again.Inputs, again.Resume = nil, true
			}
			require.NoError(t, submit.Run(t.Context(), again))
			wantBatches := 3
			if resume {
				wantBatches = 1 // --resume finishes the intent and reads no input
			}
			require.Len(t, srv.Batches(), wantBatches)
			require.Equal(t, wantBatches, srv.Stats().FileUploads, "the uploaded file is reused")
			cs := decodeCreated(t, out.String())
			require.Len(t, cs, wantBatches)

			// Once more: every part exists, so nothing new is created; the lines come again, marked existing.
			out.Reset()
			require.NoError(t, submit.Run(t.Context(), opts))
			require.Len(t, srv.Batches(), 3)
			for _, c := range decodeCreated(t, out.String()) {
				require.True(t, c.Existing || resume)
			}
		})
	}
}

func TestRunCreateAnswerLost(t *testing.T) {
	t.Parallel()
	// Every call has its connection cut half the time after taking effect: creates happen but their answers are
	// lost. Reconciling by the intent's metadata must find each batch instead of creating another.
	srv, client := newEmulator(t, emulator.Options{Seed: 7, ResetRate: 0.5, HTTP500Rate: 0.1})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(9)...)}
	opts.MaxRequests = 2
	require.NoError(t, submit.Run(t.Context(), opts))
	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 5)
	seen := map[string]int{}
	for _, b := range srv.Batches() {
		seen[b.Metadata[submit.MetaSpoolSHA256]]++
	}
	require.Len(t, seen, 5)
	for sha, n := range seen {
		require.Equal(t, 1, n, "batches for %s", sha)
	}
	require.Positive(t, srv.Stats().InjectedResets)
}

func TestRunRerunCreatesNothing(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(3)...)}
	require.NoError(t, submit.Run(t.Context(), opts))
	first := decodeCreated(t, out.String())
	out.Reset()
	require.NoError(t, submit.Run(t.Context(), opts))
	second := decodeCreated(t, out.String())
	require.Len(t, srv.Batches(), 1)
	require.Len(t, second, 1)
	require.Equal(t, first[0].BatchID, second[0].BatchID)
	require.True(t, second[0].Existing)

	out.Reset()
	opts.Force = true
	require.NoError(t, submit.Run(t.Context(), opts))
	require.Len(t, srv.Batches(), 2, "--force submits again")
}

func TestRunDryRun(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Client = nil
	opts.DryRun = true
	opts.MaxRequests = 2
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(3)...)}
	require.NoError(t, submit.Run(t.Context(), opts))
	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 2)
	for _, c := range cs {
		require.True(t, c.DryRun)
		require.Empty(t, c.BatchID)
		b, err := os.ReadFile(c.SpoolFile)
		require.NoError(t, err)
		require.EqualValues(t, c.Bytes, len(b))
		st, err := os.Stat(c.SpoolFile)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	}
	require.Zero(t, srv.Stats().FileUploads)
}

func TestRunBuiltinForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		tweak func(*submit.Options)
		input string
		want  string
	}{
		{"chat with system", func(o *submit.Options) { o.System = "Classify." }, `{"text":"great"}`,
			`{"custom_id":"in:1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Classify."},{"role":"user","content":"great"}]}}`},
		{"embeddings with id field", func(o *submit.Options) { o.Endpoint, o.IDField, o.TextField = "/v1/embeddings", "id", "doc" }, `{"id":42,"doc":"a b"}`,
			`{"custom_id":"42","method":"POST","url":"/v1/embeddings","body":{"model":"gpt-4o-mini","input":"a b"}}`},
		{"responses", func(o *submit.Options) { o.Endpoint, o.System = "/v1/responses", "Be brief." }, `{"text":"hi"}`,
			`{"custom_id":"in:1","method":"POST","url":"/v1/responses","body":{"model":"gpt-4o-mini","input":"hi","instructions":"Be brief."}}`},
		{"text format", func(o *submit.Options) { o.Format = submit.FormatText }, "plain \"text\" line",
			`{"custom_id":"in:1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"plain \"text\" line"}]}}`},
		{"template", func(o *submit.Options) {
			o.Template = "{\n  \"model\": \"m2\",\n  \"messages\": [{\"role\": \"user\", \"content\": {{json .text}}}],\n  \"max_tokens\": {{.n}}\n}"
		}, `{"text":"say \"hi\"","n":12345678901234567890}`,
			`{"custom_id":"in:1","method":"POST","url":"/v1/chat/completions","body":{"model":"m2","messages":[{"role":"user","content":"say \"hi\""}],"max_tokens":12345678901234567890}}`},
		{"completions", func(o *submit.Options) { o.Endpoint = "/v1/completions" }, `{"text":"Once upon"}`,
			`{"custom_id":"in:1","method":"POST","url":"/v1/completions","body":{"model":"gpt-4o-mini","prompt":"Once upon"}}`},
		{"moderations of an array", func(o *submit.Options) { o.Endpoint, o.Model = "/v1/moderations", "omni-moderation-latest" }, `{"text":["a","b"]}`,
			`{"custom_id":"in:1","method":"POST","url":"/v1/moderations","body":{"model":"omni-moderation-latest","input":["a","b"]}}`},
		{"image generations", func(o *submit.Options) { o.Endpoint, o.Model = "/v1/images/generations", "gpt-image-1" }, `{"text":"a red fox"}`,
			`{"custom_id":"in:1","method":"POST","url":"/v1/images/generations","body":{"model":"gpt-image-1","prompt":"a red fox"}}`},
		{"image edit of a URL", func(o *submit.Options) { o.Endpoint, o.Model = "/v1/images/edits", "gpt-image-1" },
			`{"text":"add a hat","image":"https://example.com/fox.png"}`,
			`{"custom_id":"in:1","method":"POST","url":"/v1/images/edits","body":{"model":"gpt-image-1","prompt":"add a hat","images":[{"image_url":"https://example.com/fox.png"}]}}`},
		{"image edit of several, by file and reference", func(o *submit.Options) {
			o.Endpoint, o.Model, o.ImageField, o.TextField = "/v1/images/edits", "gpt-image-1", "pics", "ask"
		}, `{"ask":"merge","pics":["file-abc","data:image/png;base64,iVBO",{"image_url":"https://x/y.png"}]}`,
			`{"custom_id":"in:1","method":"POST","url":"/v1/images/edits","body":{"model":"gpt-image-1","prompt":"merge","images":[{"file_id":"file-abc"},{"image_url":"data:image/png;base64,iVBO"},{"image_url":"https://x/y.png"}]}}`},
		{"videos", func(o *submit.Options) { o.Endpoint, o.Model = "/v1/videos", "sora-2" }, `{"text":"a cat at a piano"}`,
			`{"custom_id":"in:1","method":"POST","url":"/v1/videos","body":{"model":"sora-2","prompt":"a cat at a piano"}}`},
		{"request line passes through", nil, `{"custom_id":"x","body":{"model":"m","messages":[]},"url":"/v1/chat/completions"}`,
			`{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			opts := baseOptions(t, nil, &out)
			opts.DryRun = true
			opts.Inputs = []submit.Input{{Name: "in", Reader: strings.NewReader(tt.input + "\n\n")}}
			if tt.tweak != nil {
				tt.tweak(&opts)
			}
			require.NoError(t, submit.Run(t.Context(), opts))
			cs := decodeCreated(t, out.String())
			require.Len(t, cs, 1)
			b, err := os.ReadFile(cs[0].SpoolFile)
			require.NoError(t, err)
			require.Equal(t, tt.want+"\n", string(b))
		})
	}
}

func TestRunOptionsErrors(t *testing.T) {
	t.Parallel()
	tests := map[string]func(*submit.Options){
		"max requests":         func(o *submit.Options) { o.MaxRequests = 50_001 },
		"max bytes":            func(o *submit.Options) { o.MaxBytes = 200_000_001 },
		"max tokens":           func(o *submit.Options) { o.MaxTokens = -1 },
		"endpoint":             func(o *submit.Options) { o.Endpoint = "/v1/chat" },
		"metadata prefix":      func(o *submit.Options) { o.Metadata = map[string]string{"batchctl_x": "1"} },
		"metadata value":       func(o *submit.Options) { o.Metadata = map[string]string{"k": strings.Repeat("v", 513)} },
		"bad template":         func(o *submit.Options) { o.Template = "{{" },
		"skip without rejects": func(o *submit.Options) { o.SkipInvalid = true },
		// A system prompt the built-in form has no place for is refused, not dropped.
		"system for completions": func(o *submit.Options) { o.Endpoint, o.System = "/v1/completions", "Classify." },
		"system for embeddings":  func(o *submit.Options) { o.Endpoint, o.System = "/v1/embeddings", "Classify." },
		"system for images":      func(o *submit.Options) { o.Endpoint, o.System = "/v1/images/generations", "Watercolour." },
		"text input for edits":   func(o *submit.Options) { o.Endpoint, o.Format = "/v1/images/edits", submit.FormatText },
	}
	for name, tweak := range tests {
		var out bytes.Buffer
		opts := baseOptions(t, nil, &out)
		opts.DryRun = true
		opts.Inputs = []submit.Input{{Name: "in", Reader: strings.NewReader(`{"text":"x"}`)}}
		tweak(&opts)
		require.ErrorIs(t, submit.Run(t.Context(), opts), submit.ErrInvalidOptions, name)
	}
}

func TestEstimateTokens(t *testing.T) {
	t.Parallel()
	tests := map[string]int64{
		``:         0,
		`{}`:       1,
		`abcd`:     1,
		`abcde`:    2,
		`日本語`:      3, // one a character outside ASCII, whatever its bytes
		`café`:     2, // "caf" a quarter each (1), "é" one
		`ab日本`:     3, // 1 + 2
		`"\u00e9"`: 2, // an escaped character is ASCII: 8 bytes
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"review number 10"}]}`: 21,
	}
	for body, want := range tests {
		require.Equal(t, want, submit.EstimateTokens([]byte(body)), "%q", body)
	}
}

// TestRunMaxTokensUnderTheAPICount submits mixed English and CJK records with a token limit per batch and checks,
// with the emulator's own count of each batch's prompt tokens, that no batch passed the limit and that the limit cut.
func TestRunMaxTokensUnderTheAPICount(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	lines := make([]string, 60)
	for i := range lines {
		text := fmt.Sprintf("review %d: %s", i, strings.Repeat("good value ", i%7))
		if i%3 == 0 {
			text += strings.Repeat("很好", i%11)
		}
		lines[i] = fmt.Sprintf(`{"text":%q}`, text)
	}
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", lines...)}
	const limit = 400
	opts.MaxTokens = limit
	require.NoError(t, submit.Run(t.Context(), opts))
	created := decodeCreated(t, out.String())
	require.Greater(t, len(created), 1, "the limit cuts the input into several batches")
	var requests int
	var total int64
	for _, c := range created {
		requests += c.Requests
		require.Eventually(t, func() bool {
			b, _ := srv.Batch(c.BatchID)
			return b.Status == emulator.StatusCompleted
		}, 5*time.Second, 5*time.Millisecond)
		b, _ := srv.Batch(c.BatchID)
		require.LessOrEqual(t, b.InputTokens, int64(limit), "batch %s", c.BatchID)
		require.Positive(t, b.InputTokens)
		total += b.InputTokens
	}
	require.Equal(t, len(lines), requests)
	require.Greater(t, total, int64(limit))
}
