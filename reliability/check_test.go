package reliability_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/store"
	"github.com/batchctl/batchctl/submit"
)

// checkSubmitted compares the input records with the batches the emulator created: every custom_id is in exactly
// one batch, and no batch file (identified by its spool sha256) became two batches. It counts what it checked, lost
// and duplicated into tl before asserting, so the summary shows it even when the assertion fails.
func checkSubmitted(t *testing.T, tl *tally, emu *emulator.Server, ids []string, wantBatches int) []emulator.BatchRecord {
	t.Helper()
	batches := waitValidated(t, emu)
	in := make(map[string]int, len(ids))
	for _, id := range ids {
		in[id] = 0
	}
	var unexpected []string
	bySHA := map[string][]string{}
	for _, b := range batches {
		sha := b.Metadata[submit.MetaSpoolSHA256]
		bySHA[sha] = append(bySHA[sha], b.ID)
		for _, id := range b.CustomIDs {
			if _, ok := in[id]; !ok {
				unexpected = append(unexpected, b.ID+":"+id)
				continue
			}
			in[id]++
		}
	}
	var lost, twice []string
	for _, id := range ids {
		switch n := in[id]; {
		case n == 0:
			lost = append(lost, id)
		case n > 1:
			twice = append(twice, fmt.Sprintf("%s (%d batches)", id, n))
		}
	}
	var dupBatches []string
	for sha, bs := range bySHA {
		if len(bs) > 1 {
			dupBatches = append(dupBatches, fmt.Sprintf("spool %s: %v", sha, bs))
		}
	}
	tl.records.Add(int64(len(ids)))
	tl.lost.Add(int64(len(lost)))
	tl.duplicated.Add(int64(len(twice) + len(unexpected) + len(dupBatches)))
	require.Empty(t, lost, "records in no batch")
	require.Empty(t, twice, "records in more than one batch")
	require.Empty(t, unexpected, "batched records that are not in the input")
	require.Empty(t, dupBatches, "batch files created twice")
	require.Len(t, batches, wantBatches, "batches created")
	return batches
}

// resultKey identifies one expected result row.
type resultKey struct{ batchID, customID string }

// resultVal is what the check compares of a row: the HTTP status of a response, or the code of an error.
type resultVal struct {
	status int    // 0 for an error-file line
	code   string // "" for an output line
}

// expectedResults reads the emulator's output and error files of every batch from disk: the rows the results
// table must hold. It fails unless every batch has ended.
func expectedResults(t *testing.T, emu *emulator.Server) (map[resultKey]resultVal, []emulator.BatchRecord) {
	t.Helper()
	want := map[resultKey]resultVal{}
	batches := emu.Batches()
	for _, b := range batches {
		require.True(t, store.IsTerminal(b.Status), "batch %s has ended at the API (status %s)", b.ID, b.Status)
		lines := 0
		for _, fileID := range []string{b.OutputFileID, b.ErrorFileID} {
			if fileID == "" {
				continue
			}
			f, ok := emu.File(fileID)
			require.True(t, ok, "file %s of batch %s", fileID, b.ID)
			r, err := os.Open(f.Path)
			require.NoError(t, err)
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 1<<20), 64<<20)
			for sc.Scan() {
				if strings.TrimSpace(sc.Text()) == "" {
					continue
				}
				var l struct {
					CustomID string `json:"custom_id"`
					Response *struct {
						StatusCode int `json:"status_code"`
					} `json:"response"`
					Error *struct {
						Code string `json:"code"`
					} `json:"error"`
				}
				require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "line of %s", f.Path)
				var v resultVal
				if l.Response != nil {
					v.status = l.Response.StatusCode
				}
				if l.Error != nil {
					v.code = l.Error.Code
				}
				k := resultKey{b.ID, l.CustomID}
				_, dup := want[k]
				require.False(t, dup, "the emulator answered %v twice", k)
				want[k] = v
				lines++
			}
			require.NoError(t, sc.Err())
			r.Close()
		}
		require.EqualValues(t, b.Total, lines, "the emulator's files of batch %s hold request_counts.total lines", b.ID)
	}
	return want, batches
}

// checkResults compares the results and batches tables with the emulator's record: one row per answered request,
// none missing, none twice, none unexpected, each with the emulator's status code or error code; every batch row
// in the emulator's terminal status with its results loaded. It returns the rows checked.
func checkResults(t *testing.T, tl *tally, e *env) int {
	t.Helper()
	want, batches := expectedResults(t, e.emu)
	ctx := context.Background()
	rows, err := e.pool.Query(ctx, `select batch_id, custom_id, coalesce(status_code, 0), coalesce(error->>'code', '')
		from `+e.schema+`.results`)
	require.NoError(t, err)
	got := map[resultKey]int{}
	var wrong []string
	for rows.Next() {
		var k resultKey
		var v resultVal
		require.NoError(t, rows.Scan(&k.batchID, &k.customID, &v.status, &v.code))
		got[k]++
		if w, ok := want[k]; ok && w != v && got[k] == 1 {
			wrong = append(wrong, fmt.Sprintf("%v: row %+v, emulator %+v", k, v, w))
		}
	}
	require.NoError(t, rows.Err())
	var lost, twice []string
	for k := range want {
		if got[k] == 0 {
			lost = append(lost, fmt.Sprint(k))
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok {
			twice = append(twice, fmt.Sprintf("unexpected %v", k))
		} else if n > 1 {
			twice = append(twice, fmt.Sprintf("%v %d times", k, n))
		}
	}
	sort.Strings(lost)
	sort.Strings(twice)
	tl.records.Add(int64(len(want)))
	tl.lost.Add(int64(len(lost)))
	tl.duplicated.Add(int64(len(twice)))
	require.Empty(t, lost, "answers missing from the results table")
	require.Empty(t, twice, "result rows twice or not answered by the API")
	require.Empty(t, wrong, "result rows that differ from the API's answer")

	for _, b := range batches {
		var status string
		var total int64
		var loaded bool
		require.NoError(t, e.pool.QueryRow(ctx, `select status, request_total, results_loaded_at is not null from `+e.schema+`.batches
			where batch_id = $1`, b.ID).Scan(&status, &total, &loaded), "batch %s tracked", b.ID)
		require.Equal(t, b.Status, status, "status of batch %s", b.ID)
		require.Equal(t, b.Total, total, "request_total of batch %s", b.ID)
		require.True(t, loaded, "results of batch %s loaded", b.ID)
	}
	require.Equal(t, len(batches), e.count(t, `select count(*) from $schema.batches`), "batch rows")
	return len(want)
}
