package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/store"
)

// trackInFlight creates a batch at the API and tracks it as validating without polling it: a batch in flight, whose
// input file no prune may delete.
func (e *apiEnv) trackInFlight(t *testing.T, prefix string) (fileID string) {
	t.Helper()
	fileID, batchID := e.createBatch(t, prefix, 3, 0)
	_, err := e.store.TrackBatch(context.Background(), store.Batch{BatchID: batchID, Status: store.StatusValidating, InputFileID: fileID})
	require.NoError(t, err)
	return fileID
}

// live reports whether the emulator still holds the file.
func (e *apiEnv) live(t *testing.T, fileID string) bool {
	t.Helper()
	f, ok := e.emu.File(fileID)
	require.True(t, ok, "the emulator never had %s", fileID)
	return !f.Deleted
}

// loadedFiles returns the input and output files of the loaded batches.
func (e *apiEnv) loadedFiles(t *testing.T) []string {
	t.Helper()
	rows, err := e.store.Pool().Query(context.Background(), `select unnest(array[input_file_id, output_file_id]) from `+e.schema+`.batches
		where results_loaded_at is not null`)
	require.NoError(t, err)
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, ids)
	return ids
}

// TestFilesListAndPrune: batchctl files lists each tracked batch's files with size, age, expiry and state; a dry run
// prints what prune would delete and deletes nothing; prune deletes the loaded batches' files and never the input of
// a batch in flight, prints one line per file, and a second run finds nothing to do; files then shows them deleted.
func TestFilesListAndPrune(t *testing.T) {
	t.Parallel()
	e := newDownstreamEnv(t, emulator.Options{})
	file, _ := writeRecords(t, t.TempDir(), "reviews.jsonl", "rev", 12)
	submitAndLoad(t, e, 10, file)
	flying := e.trackInFlight(t, "fly")

	r := runCLI(t, "", e.env, "files")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 7, r.stdout)
	require.Regexp(t, `^FILE\s+ROLE\s+BATCH\s+STATUS\s+LOADED\s+SIZE\s+AGE\s+EXPIRES\s+STATE$`, lines[0])
	require.Regexp(t, `^`+flying+`\s+input\s+batch_\S+\s+validating\s+no\s+\d+ B\s+\d+s\s+in 29d23h\s+needed$`, lines[1])
	for _, l := range lines[2:6] {
		require.Regexp(t, `^file-\S+\s+(input|output)\s+batch_\S+\s+completed\s+yes\s+\d+(\.\d)? k?B\s+\d+s\s+in 29d23h\s+prunable$`, l)
	}
	require.Regexp(t, `^TOTAL \(5 files\)\s+\d+(\.\d)? k?B\s+4 prunable \(\d+(\.\d)? k?B\)$`, lines[6])

	r = runCLI(t, "", e.env, "files", "prune", "--dry-run")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 4, strings.Count(r.stdout, " would delete\n"), r.stdout)
	require.Contains(t, r.stderr, "would delete 4 files")
	require.Zero(t, e.emu.Stats().FileDeletes)

	r = runCLI(t, "", e.env, "files", "prune", "-o", "json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var deleted []string
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var line struct {
			FileID  string `json:"file_id"`
			Role    string `json:"role"`
			BatchID string `json:"batch_id"`
			Result  string `json:"result"`
		}
		require.NoError(t, json.Unmarshal([]byte(l), &line))
		require.Equal(t, "deleted", line.Result)
		require.NotEmpty(t, line.BatchID)
		deleted = append(deleted, line.FileID)
	}
	require.ElementsMatch(t, e.loadedFiles(t), deleted)
	require.Contains(t, r.stderr, "deleted 4 files (0 of them already gone); 0 failed")
	for _, id := range deleted {
		require.False(t, e.live(t, id), id)
	}
	require.True(t, e.live(t, flying), "a batch in flight keeps its input")

	r = runCLI(t, "", e.env, "files", "prune")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, 1, strings.Count(r.stdout, "\n"), "the header only: %s", r.stdout)
	require.Contains(t, r.stderr, "deleted 0 files")
	require.Equal(t, 4, e.emu.Stats().FileDeletes, "no DELETE twice")

	r = runCLI(t, "", e.env, "files", "-o", "json")
	require.Equal(t, exitOK, r.code, r.stderr)
	states := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var f struct {
			State     string     `json:"state"`
			Bytes     *int64     `json:"bytes"`
			DeletedAt *time.Time `json:"deleted_at"`
			DeletedBy string     `json:"deleted_by"`
		}
		require.NoError(t, json.Unmarshal([]byte(l), &f))
		states[f.State]++
		if f.State == "deleted" {
			require.NotNil(t, f.DeletedAt)
			require.Equal(t, "files prune", f.DeletedBy)
			require.Nil(t, f.Bytes, "the API no longer has it")
		}
	}
	require.Equal(t, map[string]int{"deleted": 4, "needed": 1}, states)

	for _, args := range [][]string{{"files", "prune", "--older-than", "-1h"}, {"files", "-o", "yaml"}, {"files", "--limit", "-1"}} {
		r = runCLI(t, "", e.env, args...)
		require.Equal(t, exitUsage, r.code, "%v: %s", args, r.stderr)
	}
}

// TestFilesPruneKilledFinishesOnReRun kills a batchctl files prune with SIGKILL while its deletes are under way (the
// API answers half of them 429 with a one-second Retry-After): nothing a batch needs is gone, every file recorded as
// deleted is, and a second run deletes the rest (a file the first run deleted without recording it is answered 404
// and recorded as gone).
func TestFilesPruneKilledFinishesOnReRun(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	e := newDownstreamEnv(t, emulator.Options{Seed: 7})
	file, _ := writeRecords(t, t.TempDir(), "reviews.jsonl", "rev", 40)
	submitAndLoad(t, e, 4, file)
	flying := e.trackInFlight(t, "fly")
	prunable := e.loadedFiles(t)
	require.Len(t, prunable, 20)

	e.emu.SetFaults(emulator.Faults{HTTP429Rate: 0.5, RetryAfter: time.Second})
	cmd := exec.Command(bin, "files", "prune")
	cmd.Env = environ(e.env)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := bufio.NewScanner(out)
	for lines.Scan() && !strings.HasSuffix(lines.Text(), " deleted") {
	}
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	e.emu.SetFaults(emulator.Faults{})

	require.True(t, e.live(t, flying), "the batch in flight keeps its input")
	recorded := e.count(t, `select count(*) from $schema.deleted_files`)
	gone := 0
	for _, id := range prunable {
		if !e.live(t, id) {
			gone++
		}
	}
	require.Positive(t, recorded)
	require.GreaterOrEqual(t, gone, recorded, "a file is recorded only once the API has deleted it")
	require.Less(t, gone, len(prunable), "killed half way")
	require.Zero(t, e.count(t, `select count(*) from $schema.deleted_files where gone`))
	t.Logf("killed with %d of %d files deleted, %d recorded", gone, len(prunable), recorded)

	r := runCLI(t, "", e.env, "files", "prune")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, len(prunable)-recorded, strings.Count(r.stdout, " deleted\n")+strings.Count(r.stdout, " gone\n"), r.stdout)
	// Deleted by the killed run, unrecorded: 404, recorded as gone. A delete request the kill cut short may still have
	// reached the emulator after the count above (a server finishes a request its client gave up on): at least those.
	require.GreaterOrEqual(t, strings.Count(r.stdout, " gone\n"), gone-recorded, r.stdout)
	for _, id := range prunable {
		require.False(t, e.live(t, id), id)
	}
	require.True(t, e.live(t, flying))
	require.Equal(t, len(prunable), e.count(t, `select count(*) from $schema.deleted_files`))
}
