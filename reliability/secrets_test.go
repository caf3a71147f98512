package reliability_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// testSecrets runs the pipeline with a distinctive API key, debug logs in both formats and faults on every path
// (retries, cut connections, truncated downloads, failed lines, rejected records, a killed submit, a wrong key),
// then looks for the key in every byte batchctl wrote: stdout and stderr of every process, every file under the
// working directory (spool files, journals, rejects), and every row of every table in the schema (batches, results,
// River's jobs and the rest).
func testSecrets(t *testing.T, tl *tally) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	needle := hex.EncodeToString(b[:]) // what must never appear
	key := "sk-reliability-SECRET-" + needle + "-end"
	wrongKey := "sk-wrong-SECRET-" + needle + "-end"

	e := newEnv(t, emulator.Options{APIKey: key, Seed: 7, PhaseDelay: 20 * time.Millisecond}).withDB(t)
	e.emu.SetFaults(emulator.Faults{HTTP429Rate: 0.1, HTTP500Rate: 0.1, ResetRate: 0.1, TruncateDownloadRate: 0.2,
		RetryAfter: 10 * time.Millisecond, RequestFailRate: 0.2, ExpireRate: 0.3, ExpireCompletedShare: 0.5})
	e.vars["BATCHCTL_LOG_LEVEL"] = "debug"

	// A submission killed after its first batch, then finished with bad records skipped.
	_, _ = writeRecords(t, e.dir, "records.jsonl", "k", 150, 100)
	f, err := os.OpenFile(filepath.Join(e.dir, "records.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("{\"text\":\n{\"id\":\"k-00001\",\"text\":\"again\"}\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	args := []string{"submit", "--model", "gpt-4o-mini", "--id-field", "id", "--max-requests", "50",
		"--skip-invalid", "--rejects", "rejects.jsonl", "records.jsonl"}
	p := e.start(t, tl, args...)
	creates := e.emu.Stats().BatchCreates
	waitFor(t, "a batch created", func() bool { return e.emu.Stats().BatchCreates > creates || p.exited() })
	p.kill(tl)
	p = e.run(t, tl, args...)
	require.Equal(t, exitOK, p.code, p.stderr.String())

	// The same pipeline in JSON logs: poll to the end.
	e.vars["BATCHCTL_LOG_FORMAT"] = "json"
	p = e.run(t, tl, append(append([]string{}, pollFlags...), "--exit-when-done")...)
	require.Equal(t, exitOK, p.code, p.stderr.String())
	delete(e.vars, "BATCHCTL_LOG_FORMAT")

	// A wrong key: submit fails with the API's answer, a poller logs the refusals until killed.
	e.vars["OPENAI_API_KEY"] = wrongKey
	_, _ = writeRecords(t, e.dir, "more.jsonl", "w", 10, 10)
	p = e.run(t, tl, "submit", "--model", "gpt-4o-mini", "more.jsonl")
	require.Equal(t, 4, p.code, "a refused key is an API error; stderr:\n%s", p.stderr.String())
	require.Contains(t, p.stderr.String(), "401")
	p = e.start(t, tl, pollFlags...)
	// It runs 1.5 s from its first log line, not from its start: on a loaded machine a poller may take seconds to
	// start, and the check below wants its debug logs.
	waitFor(t, "the poller's first log line", func() bool { return strings.Contains(p.stderr.String(), "level=") || p.exited() })
	time.Sleep(1500 * time.Millisecond)
	p.kill(tl)
	e.vars["OPENAI_API_KEY"] = key
	tl.faults.Add(injected(e.emu.Stats()))

	// Nowhere: process output,
	e.mu.Lock()
	procs := append([]*proc(nil), e.procs...)
	e.mu.Unlock()
	checked := 0
	for _, p := range procs {
		for name, out := range map[string]string{"stdout": p.stdout.String(), "stderr": p.stderr.String()} {
			require.NotContains(t, out, needle, "the API key in the %s of batchctl %s", name, strings.Join(p.cmd.Args[1:], " "))
			checked += len(out)
		}
	}
	require.Contains(t, procs[len(procs)-1].stderr.String(), "level=DEBUG", "debug logs were on")
	// files,
	files := 0
	require.NoError(t, filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		require.NotContains(t, string(b), needle, "the API key in %s", path)
		files++
		return nil
	}))
	require.NotZero(t, files)
	// the database.
	ctx := context.Background()
	rows, err := e.pool.Query(ctx, `select table_name from information_schema.tables where table_schema = $1 and table_type = 'BASE TABLE'`, e.schema)
	require.NoError(t, err)
	var tables []string
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		tables = append(tables, name)
	}
	require.NoError(t, rows.Err())
	require.Contains(t, tables, "river_job")
	for _, table := range tables {
		n := e.count(t, `select count(*) from $schema.`+table+` r where strpos(r::text, $1) > 0`, needle)
		require.Zero(t, n, "rows of %s.%s holding the API key", e.schema, table)
	}
	require.NotZero(t, e.count(t, `select count(*) from $schema.results`))
	t.Logf("the key is in none of %d processes' output (%d bytes), %d files, %d tables", len(procs), checked, files, len(tables))
}
