package submit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gofrs/flock"
	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/submit"
)

// startStream runs submit on a pipe in the background and returns the pipe's writer and the run's result.
func startStream(ctx context.Context, opts submit.Options) (*io.PipeWriter, *submit.Progress, <-chan error) {
	pr, pw := io.Pipe()
	opts.Inputs = []submit.Input{{Name: "stdin", Reader: pr}}
	opts.Progress = new(submit.Progress)
	done := make(chan error, 1)
	go func() { done <- submit.Run(ctx, opts) }()
	return pw, opts.Progress, done
}

// feed writes records 1..n to a stream's pipe and waits until the run has read them all.
func feed(t *testing.T, w io.Writer, progress *submit.Progress, n int) {
	t.Helper()
	writeRecords(t, w, 1, n)
	require.Eventually(t, func() bool { return progress.Records.Load() == int64(n) }, 5*time.Second, 5*time.Millisecond)
}

func writeRecords(t *testing.T, w io.Writer, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		_, err := fmt.Fprintf(w, `{"text":"review number %d"}`+"\n", i)
		require.NoError(t, err)
	}
}

// requireRequests waits until the emulator's batches hold n requests in all (it reads a batch's custom_ids once it
// validated the batch).
func requireRequests(t *testing.T, srv *emulator.Server, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		got := 0
		for _, b := range srv.Batches() {
			got += len(b.CustomIDs)
		}
		return got == n
	}, 5*time.Second, 10*time.Millisecond)
}

// A stream stopped by a signal (its context cancelled) submits the open part it was filling, instead of dropping
// the records read since the last cut.
func TestStreamStopSubmitsOpenPart(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.FlushInterval = 10 * time.Minute
	opts.MaxRequests = 4
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pw, progress, done := startStream(ctx, opts)
	defer pw.Close()
	writeRecords(t, pw, 1, 7) // one full part of 4, and 3 in the open part
	require.Eventually(t, func() bool { return progress.Records.Load() == 7 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done, "a stop that submitted everything read is a clean exit")

	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 2)
	requireRequests(t, srv, 7)
	require.Equal(t, []int{1, 2}, []int{cs[0].Part, cs[1].Part})
}

// A stop whose batches cannot be created in ShutdownTimeout leaves them as intents: --resume creates them later,
// with every record read.
func TestStreamStopLeavesRestForResume(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.FlushInterval = 10 * time.Minute
	opts.ShutdownTimeout = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pw, progress, done := startStream(ctx, opts)
	defer pw.Close()
	feed(t, pw, progress, 5)
	srv.SetFaults(emulator.Faults{HTTP500Rate: 1})
	cancel()
	err := <-done
	require.ErrorIs(t, err, submit.ErrInterrupted)
	require.Contains(t, err.Error(), "--resume")
	require.Empty(t, srv.Batches())

	srv.SetFaults(emulator.Faults{})
	resume := baseOptions(t, client, &out)
	resume.SpoolDir, resume.Resume = opts.SpoolDir, true
	require.NoError(t, submit.Run(t.Context(), resume))
	require.Len(t, srv.Batches(), 1)
	requireRequests(t, srv, 5)
}

// Every record read is in the spool file on disk within about a second, before any cut: what a SIGKILL leaves.
func TestStreamWritesThrough(t *testing.T) {
	t.Parallel()
	_, client := newEmulator(t, emulator.Options{})
	opts := baseOptions(t, client, io.Discard)
	opts.FlushInterval = 10 * time.Minute
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pw, progress, done := startStream(ctx, opts)
	defer pw.Close()
	feed(t, pw, progress, 3)
	require.Eventually(t, func() bool {
		files, _ := filepath.Glob(filepath.Join(opts.SpoolDir, "*", "part-00001.spooling"))
		if len(files) != 1 {
			return false
		}
		b, _ := os.ReadFile(files[0])
		return bytes.Count(b, []byte("\n")) == 3
	}, submit.WriteThroughInterval+time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}

// Parts keep counting across runs of the same command on a stream, so two runs' parts never share a number.
func TestStreamPartsCountOnAcrossRuns(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	for run := range 2 {
		opts.Inputs = []submit.Input{{Name: "stdin", Reader: strings.NewReader(fmt.Sprintf(`{"text":"run %d"}`+"\n", run))}}
		require.NoError(t, submit.Run(t.Context(), opts))
	}
	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 2)
	require.Equal(t, []int{1, 2}, []int{cs[0].Part, cs[1].Part})
	bs := srv.Batches()
	require.Len(t, bs, 2)
	require.NotEmpty(t, bs[0].Metadata[submit.MetaRun])
	require.NotEqual(t, bs[0].Metadata[submit.MetaRun], bs[1].Metadata[submit.MetaRun], "each run has its own ID")
}

// A re-run of the same command leaves no spool file behind: the batch exists, and its journal is all it needs.
func TestRerunLeavesNoSpoolFile(t *testing.T) {
	t.Parallel()
	_, client := newEmulator(t, emulator.Options{})
	opts := baseOptions(t, client, io.Discard)
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(3)...)}
	for range 2 {
		require.NoError(t, submit.Run(t.Context(), opts))
	}
	left, err := filepath.Glob(filepath.Join(opts.SpoolDir, "*", "*.jsonl"))
	require.NoError(t, err)
	require.Empty(t, left)
}

// Journals belong to the endpoint and account they were written for: the same command against another emulator
// uploads and creates there, instead of claiming the first emulator's batch; back at the first, nothing is
// created twice. A new key for the same account (the API knows the batch) finds the batch.
func TestIntentsBelongToTheirAccount(t *testing.T) {
	t.Parallel()
	srvA, clientA := newEmulator(t, emulator.Options{})
	srvB, clientB := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, clientA, &out)
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(3)...)}
	opts.Account = "account-a"
	require.NoError(t, submit.Run(t.Context(), opts))
	first := decodeCreated(t, out.String())
	require.Len(t, first, 1)

	out.Reset()
	onB := opts
	onB.Client, onB.Account = clientB, "account-b"
	require.NoError(t, submit.Run(t.Context(), onB))
	onBLines := decodeCreated(t, out.String())
	require.Len(t, onBLines, 1)
	require.False(t, onBLines[0].Existing, "B has never seen this batch")
	require.NotEqual(t, first[0].BatchID, onBLines[0].BatchID)
	require.Len(t, srvB.Batches(), 1)
	require.Equal(t, 1, srvB.Stats().FileUploads)

	out.Reset()
	require.NoError(t, submit.Run(t.Context(), opts))
	again := decodeCreated(t, out.String())
	require.Len(t, again, 1)
	require.True(t, again[0].Existing)
	require.Equal(t, first[0].BatchID, again[0].BatchID)
	require.Len(t, srvA.Batches(), 1)

	out.Reset()
	rotated := opts
	rotated.Account = "account-a-new-key"
	require.NoError(t, submit.Run(t.Context(), rotated))
	require.Len(t, srvA.Batches(), 1, "the API knows the batch: a new key of the same account creates none")
	require.True(t, decodeCreated(t, out.String())[0].Existing)
}

// uploadedThenGone leaves an intent that a crash stopped after its upload, whose file the API then lost.
func uploadedThenGone(t *testing.T) (*emulator.Server, *openai.Client, submit.Options, *bytes.Buffer) {
	t.Helper()
	srv, client := newEmulator(t, emulator.Options{})
	out := new(bytes.Buffer)
	opts := baseOptions(t, client, out)
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(2)...)}
	crashed := opts
	submit.SetAfterUploadHook(&crashed, func() error { return errors.New("crash") })
	require.Error(t, submit.Run(t.Context(), crashed))
	files := srv.Files()
	require.Len(t, files, 1)
	_, err := client.Files.Delete(t.Context(), files[0].ID)
	require.NoError(t, err)
	return srv, client, opts, out
}

// An intent that cannot be finished (its file is gone and so is its spool file) is set aside with a warning; a new
// input goes on. --resume reports it, and abandoning it clears it.
func TestDeadIntentIsSetAside(t *testing.T) {
	t.Parallel()
	srv, client, opts, out := uploadedThenGone(t)
	spooled, err := filepath.Glob(filepath.Join(opts.SpoolDir, "*", "*.jsonl"))
	require.NoError(t, err)
	require.Len(t, spooled, 1)
	require.NoError(t, os.Remove(spooled[0]))

	other := opts
	other.Inputs = []submit.Input{writeInput(t, "other.jsonl", records(3)...)}
	require.NoError(t, submit.Run(t.Context(), other), "one dead intent does not block other input")
	require.Len(t, srv.Batches(), 1)

	resume := baseOptions(t, client, out)
	resume.SpoolDir, resume.Resume = opts.SpoolDir, true
	err = submit.Run(t.Context(), resume)
	var aside *submit.SetAsideError
	require.ErrorAs(t, err, &aside)
	require.Len(t, aside.Intents, 1)
	require.Equal(t, submit.StateUploaded, aside.Intents[0].State)

	infos, err := submit.ListIntents(opts.SpoolDir, false)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	require.NotEmpty(t, infos[0].LastError)
	_, err = submit.AbandonIntent(opts.SpoolDir, infos[0].Intent)
	require.NoError(t, err)
	require.NoError(t, submit.Run(t.Context(), resume))
	infos, err = submit.ListIntents(opts.SpoolDir, false)
	require.NoError(t, err)
	require.Empty(t, infos)
}

// An uploaded intent whose file the API no longer knows (expired, deleted) is uploaded again from its spool file.
func TestGoneUploadIsUploadedAgain(t *testing.T) {
	t.Parallel()
	srv, client, opts, out := uploadedThenGone(t)
	gone := srv.Files()[0].ID

	resume := baseOptions(t, client, out)
	resume.SpoolDir, resume.Resume = opts.SpoolDir, true
	require.NoError(t, submit.Run(t.Context(), resume))
	bs := srv.Batches()
	require.Len(t, bs, 1)
	require.NotEqual(t, gone, bs[0].InputFileID)
	require.Equal(t, 2, srv.Stats().FileUploads)
}

// --file-expires-after and --output-expires-after reach the API: the uploaded file expires then, and so do the
// batch's output files; a value the API does not take is refused before anything is read.
func TestExpiryOptions(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", records(2)...)}
	opts.FileExpiresAfter, opts.OutputExpiresAfter = 2*time.Hour, 3*time.Hour
	require.NoError(t, submit.Run(t.Context(), opts))
	c := decodeCreated(t, out.String())[0]
	require.EqualValues(t, 3*3600, c.OutputExpiresAfter, "the line says what the poller will go by")
	f, ok := srv.File(c.InputFileID)
	require.True(t, ok)
	require.Equal(t, f.CreatedAt+7200, f.ExpiresAt)
	require.Eventually(t, func() bool {
		b, _ := srv.Batch(c.BatchID)
		return b.Status == emulator.StatusCompleted
	}, 5*time.Second, 10*time.Millisecond)
	b, _ := srv.Batch(c.BatchID)
	outFile, ok := srv.File(b.OutputFileID)
	require.True(t, ok)
	require.Equal(t, outFile.CreatedAt+3*3600, outFile.ExpiresAt)

	for _, bad := range []time.Duration{30 * time.Minute, 31 * 24 * time.Hour, 90*time.Minute + time.Millisecond} {
		o := opts
		o.OutputExpiresAfter = bad
		require.ErrorIs(t, submit.Run(t.Context(), o), submit.ErrInvalidOptions, "%s", bad)
	}
}

// A run whose directory another process holds for a moment (every submit's start-up scan for dead runs' intents
// takes each run directory's lock in turn) waits for it instead of failing as if a second run of its input were at
// work. Eight submitters started at once once failed so.
func TestRunWaitsOutAnotherSubmitsScanOfItsDirectory(t *testing.T) {
	t.Parallel()
	_, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", `{"text":"a"}`, `{"text":"b"}`)}
	require.NoError(t, submit.Run(t.Context(), opts))
	entries, err := os.ReadDir(opts.SpoolDir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	dir := filepath.Join(opts.SpoolDir, entries[0].Name())

	scan := flock.New(filepath.Join(dir, ".lock"))
	locked, err := scan.TryLock()
	require.NoError(t, err)
	require.True(t, locked)
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = scan.Unlock()
	}()
	out.Reset()
	require.NoError(t, submit.Run(t.Context(), opts), "the re-run waits for the lock, then finds its batch made")
	require.Len(t, decodeCreated(t, out.String()), 1)
}
