package reliability_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/store"
)

// checkSubmitted compares the input records with the batches the emulator created: every record is in exactly
// one batch, and no batch file (identified by its spool sha256, or for Anthropic by the records it holds) became
// two batches. It counts what it checked, lost and duplicated into tl before asserting, so the summary shows it even
// when the assertion fails.
func checkSubmitted(t *testing.T, tl *tally, e *env, ids []string, wantBatches int) []apiBatch {
	t.Helper()
	batches := e.submitted(t)
	in := make(map[string]int, len(ids))
	for _, id := range ids {
		in[id] = 0
	}
	var unexpected []string
	byContent := map[string][]string{}
	for _, b := range batches {
		byContent[b.content] = append(byContent[b.content], b.id)
		for _, r := range b.requests {
			if _, ok := in[r.record]; !ok {
				unexpected = append(unexpected, b.id+":"+r.record)
				continue
			}
			in[r.record]++
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
	for content, bs := range byContent {
		if len(bs) > 1 {
			dupBatches = append(dupBatches, fmt.Sprintf("batch file %.64q: %v", content, bs))
		}
	}
	// Anthropic's count of batches made includes any deleted since: nothing here deletes one.
	if made := e.made(); made > len(batches) {
		dupBatches = append(dupBatches, fmt.Sprintf("%d batches made, %d listed", made, len(batches)))
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

// resultKey identifies one expected result row: a batch and the user's custom_id.
type resultKey struct{ batchID, customID string }

// resultVal is what the check compares of a row: the HTTP status of a response, or the code of an error, and the
// custom_id the API knew the request by when it was not the user's.
type resultVal struct {
	status int    // 0 for an error line
	code   string // "" for a response
	apiID  string // "" when the API had the user's custom_id
}

// endedBatch is what the batches table must hold of a batch that ended at the API.
type endedBatch struct {
	id, status string
	total      int64
}

// expectedResults reads the emulator's answers to every batch from disk, the output and error files or the
// message batches' results: the rows the results table must hold. It fails unless every batch has ended.
func expectedResults(t *testing.T, e *env) (map[resultKey]resultVal, []endedBatch) {
	t.Helper()
	if e.api.inline() {
		return expectedMessageResults(t, e.emu)
	}
	want := map[resultKey]resultVal{}
	var ended []endedBatch
	for _, b := range e.emu.Batches() {
		require.True(t, store.IsTerminal(b.Status), "batch %s has ended at the API (status %s)", b.ID, b.Status)
		ended = append(ended, endedBatch{b.ID, b.Status, b.Total})
		lines := 0
		for _, fileID := range []string{b.OutputFileID, b.ErrorFileID} {
			if fileID == "" {
				continue
			}
			f, ok := e.emu.File(fileID)
			require.True(t, ok, "file %s of batch %s", fileID, b.ID)
			eachLine(t, f.Path, func(line []byte) {
				var l struct {
					CustomID string `json:"custom_id"`
					Response *struct {
						StatusCode int `json:"status_code"`
					} `json:"response"`
					Error *struct {
						Code string `json:"code"`
					} `json:"error"`
				}
				require.NoError(t, json.Unmarshal(line, &l), "line of %s", f.Path)
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
			})
		}
		require.EqualValues(t, b.Total, lines, "the emulator's files of batch %s hold request_counts.total lines", b.ID)
	}
	return want, ended
}

// expectedMessageResults is expectedResults of message batches. A result is keyed by the user's custom_id, the
// record its request was made from; a result line of type succeeded is a response with status 200, one errored an
// error with the code of the API's error type, canceled and expired errors with those codes. The batches table
// reads an ended batch as cancelled when a cancel was initiated, expired when every request expired, and
// completed otherwise.
func expectedMessageResults(t *testing.T, emu *emulator.Server) (map[resultKey]resultVal, []endedBatch) {
	t.Helper()
	want := map[resultKey]resultVal{}
	var ended []endedBatch
	for _, b := range emu.MessageBatches() {
		require.Equal(t, emulator.ProcessingEnded, b.ProcessingStatus, "message batch %s has ended at the API", b.ID)
		status := store.StatusCompleted
		switch {
		case !b.CancelInitiatedAt.IsZero():
			status = store.StatusCancelled
		case b.Expired > 0 && b.Expired == b.Requests:
			status = store.StatusExpired
		}
		ended = append(ended, endedBatch{b.ID, status, b.Requests})
		record := map[string]string{} // the record of each custom_id the API got
		for _, r := range messageRequests(t, b) {
			record[r.apiID] = r.record
		}
		var lines int64
		eachLine(t, b.ResultsPath, func(line []byte) {
			var l struct {
				CustomID string `json:"custom_id"`
				Result   struct {
					Type  string `json:"type"`
					Error *struct {
						Error struct {
							Type string `json:"type"`
						} `json:"error"`
					} `json:"error"`
				} `json:"result"`
			}
			require.NoError(t, json.Unmarshal(line, &l), "line of %s", b.ResultsPath)
			id, ok := record[l.CustomID]
			require.True(t, ok, "message batch %s answered %s, which it was not sent", b.ID, l.CustomID)
			v := resultVal{}
			if id != l.CustomID {
				v.apiID = l.CustomID
			}
			switch l.Result.Type {
			case emulator.ResultSucceeded:
				v.status = 200
			case emulator.ResultErrored:
				require.NotNil(t, l.Result.Error, "errored result %s of %s", l.CustomID, b.ID)
				v.code = l.Result.Error.Error.Type
			default:
				v.code = l.Result.Type
			}
			k := resultKey{b.ID, id}
			_, dup := want[k]
			require.False(t, dup, "the emulator answered %v twice", k)
			want[k] = v
			lines++
		})
		require.Equal(t, b.Requests, lines, "the results of message batch %s hold a line per request", b.ID)
		require.Equal(t, b.Requests, b.Succeeded+b.Errored+b.Canceled+b.Expired, "request_counts of message batch %s", b.ID)
	}
	return want, ended
}

// eachLine calls fn with every non-blank line of the file at path.
func eachLine(t *testing.T, path string, fn func([]byte)) {
	t.Helper()
	r, err := os.Open(filepath.Clean(path))
	require.NoError(t, err)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		fn(sc.Bytes())
	}
	require.NoError(t, sc.Err(), "read %s", path)
}

// checkResults compares the results and batches tables with the emulator's record: one row per answered request,
// none missing, none twice, none unexpected, each under the user's custom_id with the emulator's status code or
// error code (and the custom_id the API knew it by, when that was another); every batch row of the env's provider,
// in the status the API's end maps to, with its results loaded. It returns the rows checked.
func checkResults(t *testing.T, tl *tally, e *env) int {
	t.Helper()
	want, batches := expectedResults(t, e)
	ctx := context.Background()
	rows, err := e.pool.Query(ctx, `select batch_id, custom_id, coalesce(status_code, 0), coalesce(error->>'code', ''),
		coalesce(api_custom_id, '') from `+e.schema+`.results`)
	require.NoError(t, err)
	got := map[resultKey]int{}
	var wrong []string
	for rows.Next() {
		var k resultKey
		var v resultVal
		require.NoError(t, rows.Scan(&k.batchID, &k.customID, &v.status, &v.code, &v.apiID))
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
	sort.Strings(wrong)
	tl.records.Add(int64(len(want)))
	tl.lost.Add(int64(len(lost)))
	tl.duplicated.Add(int64(len(twice)))
	require.Empty(t, lost, "answers missing from the results table")
	require.Empty(t, twice, "result rows twice or not answered by the API")
	require.Empty(t, wrong, "result rows that differ from the API's answer")

	for _, b := range batches {
		var status, prov string
		var total int64
		var loaded bool
		require.NoError(t, e.pool.QueryRow(ctx, `select status, request_total, results_loaded_at is not null, provider
			from `+e.schema+`.batches where batch_id = $1`, b.id).Scan(&status, &total, &loaded, &prov), "batch %s tracked", b.id)
		require.Equal(t, b.status, status, "status of batch %s", b.id)
		require.Equal(t, b.total, total, "request_total of batch %s", b.id)
		require.True(t, loaded, "results of batch %s loaded", b.id)
		require.Equal(t, e.api.name, prov, "provider of batch %s", b.id)
	}
	require.Equal(t, len(batches), e.count(t, `select count(*) from $schema.batches`), "batch rows")
	t.Logf("results of %d %s batches: %s", len(batches), e.api.name, answerKinds(want))
	return len(want)
}

// answerKinds says what the answers were: how many responses by status, errors by code, and under IDs the API
// gave, so a run's log shows which kinds of result it loaded.
func answerKinds(want map[resultKey]resultVal) string {
	n := map[string]int{}
	for _, v := range want {
		if v.code != "" {
			n["error "+v.code]++
		} else {
			n[fmt.Sprintf("status %d", v.status)]++
		}
		if v.apiID != "" {
			n["under r<line> IDs"]++
		}
	}
	var parts []string
	for k, c := range n {
		parts = append(parts, fmt.Sprintf("%d %s", c, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
