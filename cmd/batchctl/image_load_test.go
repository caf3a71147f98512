package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// TestPollLoadsLargeImageRowsInFlatMemory loads image batches whose output files are up to 290 MB, each with a real
// poller process, and measures the poller's peak RSS. A file eight times larger in lines of the same size (one
// high-quality 1536x1024 picture a request, 2 MB) takes the same memory; lines ten times larger (ten pictures a
// request, the API's most: 20 MB) take more, set by the line. Each row's response holds the pictures' base64 as the
// API sent it. Skipped with -short: it moves about 400 MB through the emulator, the pollers and Postgres.
func TestPollLoadsLargeImageRowsInFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 400 MB of image rows into Postgres")
	}
	bin := buildBinary(t)
	small := loadImages(t, bin, 17, 1)
	large := loadImages(t, bin, 140, 1)
	wide := loadImages(t, bin, 4, 10)
	require.Greater(t, large.file, int64(250<<20), "an output file of hundreds of MB")
	require.Less(t, large.peak, small.peak+int64(16<<20), "eight times the file, the same memory")
	require.Less(t, large.peak, large.file/2, "well below the file")
	require.Less(t, wide.peak, small.peak+6*wide.line, "the largest line sets the memory")
}

// imageLoad is what loadImages measured.
type imageLoad struct {
	file, line, peak int64 // bytes: the output file, its largest line, the poller's peak RSS
}

// loadImages submits requests image requests of n high-quality 1536x1024 pictures each to a new emulator and schema,
// waits for the batch, loads it with a poller process, checks the rows and returns the poller's peak RSS.
func loadImages(t *testing.T, bin string, requests, n int) imageLoad {
	t.Helper()
	e := newAPIEnv(t, emulator.Options{})
	e.env["BATCHCTL_SPOOL_DIR"] = t.TempDir()
	dir := t.TempDir()
	var in strings.Builder
	for i := 1; i <= requests; i++ {
		fmt.Fprintf(&in, `{"id":"pic-%03d","text":"a lighthouse at dusk, study %d"}`+"\n", i, i)
	}
	input := filepath.Join(dir, "pictures.jsonl")
	require.NoError(t, os.WriteFile(input, []byte(in.String()), 0o600))
	tmpl := filepath.Join(dir, "body.tmpl")
	require.NoError(t, os.WriteFile(tmpl, []byte(fmt.Sprintf(
		`{"model":"gpt-image-1","prompt":{{json .text}},"n":%d,"quality":"high","size":"1536x1024"}`, n)), 0o600))

	r := runCLI(t, "", e.env, "submit", "--endpoint", "/v1/images/generations", "--template", tmpl, "--id-field", "id", input)
	require.Equal(t, exitOK, r.code, r.stderr)
	batchID := submitLines(t, r.stdout)[0]["batch_id"].(string)
	var rec emulator.BatchRecord
	require.Eventually(t, func() bool {
		rec, _ = e.emu.Batch(batchID)
		return rec.Status == emulator.StatusCompleted
	}, 3*time.Minute, 20*time.Millisecond)
	out, ok := e.emu.File(rec.OutputFileID)
	require.True(t, ok)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	poll := exec.CommandContext(ctx, bin, fastPoll...)
	poll.Env = environ(e.env)
	start := time.Now()
	logs, err := poll.CombinedOutput()
	require.NoError(t, err, string(logs))
	took := time.Since(start)
	peak := poll.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10 // KiB on Linux

	var rows, b64Len, stored, text int64
	require.NoError(t, e.store.Pool().QueryRow(context.Background(), `select count(*),
		sum((select sum(length(d->>'b64_json')) from jsonb_array_elements(response->'data') d)),
		sum(pg_column_size(response)), sum(octet_length(response::text))
		from `+e.schema+`.results where batch_id = $1 and status_code = 200`, batchID).Scan(&rows, &b64Len, &stored, &text))
	require.EqualValues(t, requests, rows)
	// A 1536x1024 8-bit PNG in 25 stored deflate blocks, in base64.
	png := int64(8 + 25 + 1024*(1+1536) + 25*(12+5) + 2 + 4 + 12)
	require.Equal(t, int64(requests*n)*((png+2)/3*4), b64Len, "every picture's base64 whole, as the API sent it")

	t.Logf("output file %.1f MiB in lines of %.1f MiB: %d rows loaded in %s (poller CPU %s), peak RSS %.1f MiB (%.0f%% of the file); results.response %.1f MiB as JSON text, %.1f MiB stored (pg_column_size)",
		mib(out.Bytes), mib(out.Bytes/int64(requests)), rows, took.Round(time.Millisecond),
		(poll.ProcessState.UserTime() + poll.ProcessState.SystemTime()).Round(time.Millisecond),
		mib(peak), 100*float64(peak)/float64(out.Bytes), mib(text), mib(stored))
	return imageLoad{file: out.Bytes, line: out.Bytes / int64(requests), peak: peak}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
