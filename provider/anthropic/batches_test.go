package anthropic

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// outputLine is what the loader keeps of one output line.
type outputLine struct {
	status int
	body   string
	code   string
	msg    string
}

// openOutput opens a batch's results through the provider and decodes them as the loader does, by custom_id.
func openOutput(t *testing.T, p *Provider, fileID string, from int64) map[string]outputLine {
	t.Helper()
	body, err := p.Open(t.Context(), fileID, from)
	require.NoError(t, err)
	defer body.Close()
	require.Equal(t, int64(-1), body.Size, "the converted stream's length is unknown")
	require.False(t, body.Partial, "always the whole stream")
	dec := jsonl.NewOutputDecoder(body, fileID)
	out := map[string]outputLine{}
	for {
		ol, err := dec.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		require.NotContains(t, out, ol.CustomID, "one line per request")
		var l outputLine
		if ol.Response != nil {
			l.status, l.body = ol.Response.StatusCode, string(ol.Response.Body)
		}
		if ol.Error != nil {
			l.code, l.msg = ol.Error.Code, ol.Error.Message
		}
		out[ol.CustomID] = l
	}
}

// rawResults reads the results file the emulator serves, as Anthropic's SDK types.
func rawResults(t *testing.T, path string) []sdk.MessageBatchIndividualResponse {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var rs []sdk.MessageBatchIndividualResponse
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r sdk.MessageBatchIndividualResponse
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r))
		rs = append(rs, r)
	}
	require.NoError(t, sc.Err())
	return rs
}

// Open streams an ended batch's results as OpenAI output lines: every request once, a succeeded one as a 200
// response whose body is the message, an errored one as an error with the API's error type and message. A resume
// from an offset reads the whole stream again, and says so.
func TestOpenResults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{RequestFailRate: 0.3, Seed: 7}, nil)
	const n = 40
	created := e.create(t, "req", n)
	require.Equal(t, store.StatusInProgress, created.Status)
	require.Empty(t, created.OutputFileID)

	ended := e.waitEnded(t, created.BatchID)
	require.Equal(t, store.StatusCompleted, ended.Status)
	require.NotEmpty(t, ended.OutputFileID)
	require.Equal(t, n, ended.RequestTotal)
	errored := e.emu.Stats().Anthropic.ErroredRequests
	require.Positive(t, errored, "RequestFailRate makes some requests error")
	require.Equal(t, errored, ended.RequestFailed)
	require.Equal(t, n-errored, ended.RequestCompleted)

	out := openOutput(t, e.p, ended.OutputFileID, 0)
	require.Len(t, out, n)
	rec, ok := e.emu.MessageBatch(created.BatchID)
	require.True(t, ok)
	raw := rawResults(t, rec.ResultsPath)
	require.Len(t, raw, n)
	for _, r := range raw {
		got, ok := out[r.CustomID]
		require.True(t, ok, r.CustomID)
		switch r.Result.Type {
		case "succeeded":
			require.Equal(t, 200, got.status)
			require.JSONEq(t, r.Result.Message.RawJSON(), got.body)
			var m sdk.Message
			require.NoError(t, json.Unmarshal([]byte(got.body), &m))
			i := slices.Index(seqIDs("req", n), r.CustomID)
			require.Equal(t, emulator.AnswerText(fmt.Sprintf("review %d ", i)), m.Content[0].Text)
		case "errored":
			require.Zero(t, got.status)
			require.Equal(t, string(r.Result.Error.Error.Type), got.code)
			require.Equal(t, r.Result.Error.Error.Message, got.msg)
			require.Contains(t, []string{"invalid_request_error", "api_error"}, got.code)
		default:
			t.Fatalf("unexpected result type %s", r.Result.Type)
		}
	}

	require.Equal(t, out, openOutput(t, e.p, ended.OutputFileID, 1000), "a resume reads it all again")

	_, err := e.p.Open(t.Context(), "", 0)
	require.ErrorContains(t, err, "no input file")
	_, err = e.p.Open(t.Context(), ended.OutputFileID[:len(ended.OutputFileID)-len(created.BatchID+"/results")]+"msgbatch_gone/results", 0)
	require.Equal(t, batchapi.NotFound, batchapi.Classify(err), "%v", err)
}

// Cancel maps the batch it answers: cancelling, then cancelled once ended, its unprocessed requests failed and
// their results canceled.
func TestCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{PhaseDelay: time.Second}, nil)
	const n = 30
	b := e.create(t, "req", n)
	c, err := e.p.Cancel(t.Context(), b.BatchID)
	require.NoError(t, err)
	require.Equal(t, b.BatchID, c.BatchID)
	require.Equal(t, store.StatusCancelling, c.Status)
	require.Nil(t, c.EndedAt)

	ended := e.waitEnded(t, b.BatchID)
	require.Equal(t, store.StatusCancelled, ended.Status)
	require.Equal(t, n, ended.RequestTotal)
	require.Equal(t, n, ended.RequestCompleted+ended.RequestFailed)
	require.Positive(t, ended.RequestFailed)
	out := openOutput(t, e.p, ended.OutputFileID, 0)
	require.Len(t, out, n)
	canceled := 0
	for _, l := range out {
		if l.code == "canceled" {
			canceled++
		}
	}
	require.Equal(t, ended.RequestFailed, canceled)

	_, err = e.p.Cancel(t.Context(), b.BatchID)
	require.Equal(t, batchapi.Permanent, batchapi.Classify(err), "an ended batch cannot be canceled: %v", err)
	_, err = e.p.Cancel(t.Context(), "msgbatch_gone")
	require.Equal(t, batchapi.NotFound, batchapi.Classify(err))
}

// A batch whose every request expired is expired, its results expired error lines.
func TestExpired(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{PhaseDelay: time.Second}, nil)
	b := e.create(t, "req", 5)
	require.NoError(t, e.emu.ExpireMessageBatch(b.BatchID))
	ended := e.waitEnded(t, b.BatchID)
	require.Equal(t, store.StatusExpired, ended.Status)
	require.Equal(t, 5, ended.RequestFailed)
	for id, l := range openOutput(t, e.p, ended.OutputFileID, 0) {
		require.Equal(t, "expired", l.code, id)
	}
}

// Get maps a batch; an unknown one is NotFound, which BatchExists reports as false.
func TestGetAndExists(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, nil)
	b := e.create(t, "req", 2)
	got, err := e.p.Get(t.Context(), b.BatchID)
	require.NoError(t, err)
	require.Equal(t, b.BatchID, got.BatchID)
	require.Equal(t, provider.Anthropic, got.Provider)
	require.Equal(t, 2, got.RequestTotal)
	rec, _ := e.emu.MessageBatch(b.BatchID)
	require.True(t, rec.CreatedAt.Equal(got.CreatedAt), "created_at as the API wrote it")

	_, err = e.p.Get(t.Context(), "msgbatch_gone")
	require.Equal(t, batchapi.NotFound, batchapi.Classify(err))
	ok, err := e.p.BatchExists(t.Context(), b.BatchID)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = e.p.BatchExists(t.Context(), "msgbatch_gone")
	require.NoError(t, err)
	require.False(t, ok)

	ok, err = e.p.FileExists(t.Context(), "anything")
	require.NoError(t, err)
	require.True(t, ok, "a message batch has no file at the API to lose")
}

// BatchExists cannot tell when the API does not answer: an error, not false.
func TestBatchExistsUnreachable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{HTTP500Rate: 1}, nil)
	_, err := e.p.BatchExists(t.Context(), "msgbatch_1")
	require.Error(t, err)
	require.Equal(t, batchapi.Transient, batchapi.Classify(err))
}

// Stage has nothing to upload, but the spool file must be there.
func TestStage(t *testing.T) {
	t.Parallel()
	var p Provider
	path := writeSpool(t, []string{"a"}, 0)
	id, err := p.Stage(t.Context(), path)
	require.NoError(t, err)
	require.Empty(t, id)
	_, err = p.Stage(t.Context(), filepath.Join(t.TempDir(), "missing.jsonl"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Equal(t, provider.Anthropic, p.Name())
	require.Equal(t, provider.Limits{MaxRequests: 100_000, MaxBytes: 256_000_000}, p.Limits())
}

// List pages the batches newest first, 100 a page, the cursor being the last ID of a page; Find follows the pages
// back to a lost create's batch behind 104 newer ones.
func TestListPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, nil)
	sent := time.Now()
	target := e.create(t, "target", 2)
	for i := range 104 {
		e.create(t, fmt.Sprintf("b%d", i), 1)
	}
	var want []string
	for _, r := range e.emu.MessageBatches() {
		want = append(want, r.ID)
	}
	slices.Reverse(want)

	first, err := e.p.List(t.Context(), "")
	require.NoError(t, err)
	require.Len(t, first.Batches, 100)
	require.True(t, first.HasMore)
	require.Equal(t, first.Batches[99].BatchID, first.Next)
	second, err := e.p.List(t.Context(), first.Next)
	require.NoError(t, err)
	require.Len(t, second.Batches, 5)
	require.False(t, second.HasMore)
	var got []string
	for _, b := range append(first.Batches, second.Batches...) {
		require.Equal(t, provider.Anthropic, b.Provider)
		got = append(got, b.BatchID)
	}
	require.Equal(t, want, got)

	lists := e.emu.Stats().Anthropic.BatchLists
	b, err := e.p.Find(t.Context(), provider.Intent{Requests: 2}, sent)
	require.NoError(t, err)
	require.NotNil(t, b)
	require.Equal(t, target.BatchID, b.BatchID)
	require.Equal(t, lists+2, e.emu.Stats().Anthropic.BatchLists, "two pages")
}
