package poll_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/pack"
	"github.com/batchctl/batchctl/poll"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
	"github.com/batchctl/batchctl/store"
)

// submitPacked submits records r-1..r-n packed size a request to endpoint, as submit --pack does: the record-to-
// index map saved with dbSchema as the answer schema (the request asks for a string), the batch created with
// batchctl_pack in its metadata and tracked with its spool sha256.
func (e *env) submitPacked(t *testing.T, endpoint string, n, size int, dbSchema string) string {
	t.Helper()
	f := pack.Form{Endpoint: endpoint, Model: "gpt-4o-mini", System: "Classify."}
	return e.submitPackedBodies(t, endpoint, n, size, dbSchema, f.AppendBody)
}

// templateBody is a packed chat body as a template might word it: the items in a user message of its own making,
// which the resubmitter cannot split.
func templateBody(_ []byte, texts [][]byte) []byte {
	b := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Classify each: `)
	for i, t := range texts {
		b = fmt.Appendf(b, "(%d) %s ", i+1, bytes.Trim(t, `"`))
	}
	b = append(b, `"}]}`...)
	return pack.WithFormat(nil, b, pack.EndpointChat, pack.DefaultAnswerSchema, len(texts))
}

// submitPackedBodies is submitPacked with the packed bodies written by body.
func (e *env) submitPackedBodies(t *testing.T, endpoint string, n, size int, dbSchema string, body func([]byte, [][]byte) []byte) string {
	t.Helper()
	ctx := context.Background()
	var file bytes.Buffer
	var recs []store.PackedRecord
	for first := 1; first <= n; first += size {
		var texts [][]byte
		id := fmt.Sprintf("pack:r-%d", first)
		for i := first; i < first+size && i <= n; i++ {
			texts = append(texts, []byte(fmt.Sprintf(`"review number %d"`, i)))
			recs = append(recs, store.PackedRecord{PackedCustomID: id, Index: len(texts), CustomID: fmt.Sprintf("r-%d", i), Line: i})
		}
		req := jsonl.Request{CustomID: id, Method: "POST", URL: endpoint, Body: body(nil, texts)}
		file.Write(req.AppendJSON(nil))
		file.WriteByte('\n')
	}
	sum := sha256.Sum256(file.Bytes())
	sha := hex.EncodeToString(sum[:])
	require.NoError(t, e.store.SavePack(ctx, store.Pack{SpoolSHA256: sha, Endpoint: endpoint, Size: size,
		AnswerSchema: json.RawMessage(dbSchema)}, func(yield func(store.PackedRecord, error) bool) {
		for _, r := range recs {
			if !yield(r, nil) {
				return
			}
		}
	}))
	up, err := e.api.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(file.Bytes()), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	require.NoError(t, err)
	meta := map[string]string{batchapi.MetaPack: fmt.Sprint(size), batchapi.MetaSpoolSHA256: sha}
	b, err := e.api.Batches.New(ctx, openai.BatchNewParams{InputFileID: up.ID, Endpoint: openai.BatchNewParamsEndpoint(endpoint),
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h, Metadata: meta})
	require.NoError(t, err)
	_, err = e.store.TrackBatch(ctx, store.Batch{BatchID: b.ID, Status: store.StatusValidating, Endpoint: endpoint,
		InputFileID: up.ID, Source: "test", SpoolSHA256: sha, Metadata: meta})
	require.NoError(t, err)
	return b.ID
}

// packedRow is a results row of a packed batch.
type packedRow struct {
	CustomID, PackedCustomID string
	InputLine                int
	StatusCode               *int
	Response, Error          []byte
}

func (e *env) packedRows(t *testing.T, batchID string) []packedRow {
	t.Helper()
	rows, err := e.store.Pool().Query(context.Background(), `select custom_id, coalesce(packed_custom_id, ''), input_line,
		status_code, response, error from `+e.store.Schema()+`.results where batch_id = $1 order by input_line`, batchID)
	require.NoError(t, err)
	defer rows.Close()
	var out []packedRow
	for rows.Next() {
		var r packedRow
		require.NoError(t, rows.Scan(&r.CustomID, &r.PackedCustomID, &r.InputLine, &r.StatusCode, &r.Response, &r.Error))
		out = append(out, r)
	}
	require.NoError(t, rows.Err())
	return out
}

func TestLoadPackedBatch(t *testing.T) {
	t.Parallel()
	for _, endpoint := range []string{pack.EndpointChat, pack.EndpointResponses} {
		t.Run(endpoint, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, emulator.Options{})
			id := e.submitPacked(t, endpoint, 23, 5, `{"type":"string"}`)
			runUntilDone(t, e.config(t), 30*time.Second)
			rows := e.packedRows(t, id)
			require.Len(t, rows, 23, "one row per record")
			var prompt, completion int64
			for i, r := range rows {
				require.Equal(t, fmt.Sprintf("r-%d", i+1), r.CustomID)
				require.Equal(t, i+1, r.InputLine)
				require.Equal(t, fmt.Sprintf("pack:r-%d", i/5*5+1), r.PackedCustomID)
				require.Nil(t, r.Error)
				require.Equal(t, 200, *r.StatusCode)
				var resp struct {
					Index  int             `json:"index"`
					Answer string          `json:"answer"`
					Usage  map[string]any  `json:"usage"`
					Other  json.RawMessage `json:"other"`
				}
				require.NoError(t, json.Unmarshal(r.Response, &resp))
				require.Equal(t, i%5+1, resp.Index)
				require.NotEmpty(t, resp.Answer)
				if endpoint == pack.EndpointResponses {
					prompt += int64(resp.Usage["input_tokens"].(float64))
					completion += int64(resp.Usage["output_tokens"].(float64))
				} else {
					prompt += int64(resp.Usage["prompt_tokens"].(float64))
					completion += int64(resp.Usage["completion_tokens"].(float64))
				}
			}
			// The records' shares add up to the batch's usage, which is the requests'.
			b := e.batchRow(t, id)
			require.Equal(t, *b.Usage.PromptTokens, prompt)
			require.Equal(t, *b.Usage.CompletionTokens, completion)
			require.Equal(t, 23, *b.ResultsCount)
		})
	}
}

func TestLoadPackedErrors(t *testing.T) {
	t.Parallel()
	// Garbled answers and failed requests: every record has exactly one row, its own error or its own answer.
	e := newEnv(t, emulator.Options{GarbleRate: 0.5, RequestFailRate: 0.3, Seed: 3})
	id := e.submitPacked(t, pack.EndpointChat, 200, 4, `{"type":"string"}`)
	runUntilDone(t, e.config(t), 30*time.Second)
	rows := e.packedRows(t, id)
	require.Len(t, rows, 200)
	codes := map[string]int{}
	byRequest := map[string]map[string]bool{} // packed custom_id → the error codes of its records
	for i, r := range rows {
		require.Equal(t, fmt.Sprintf("r-%d", i+1), r.CustomID)
		code := "ok"
		if r.Error != nil {
			var le jsonl.LineError
			require.NoError(t, json.Unmarshal(r.Error, &le))
			code = le.Code
			require.NotEmpty(t, le.Message)
			require.Nil(t, r.Response, "an error row has no answer")
		} else if *r.StatusCode != 200 {
			code = fmt.Sprint("http_", *r.StatusCode)
		}
		codes[code]++
		if byRequest[r.PackedCustomID] == nil {
			byRequest[r.PackedCustomID] = map[string]bool{}
		}
		byRequest[r.PackedCustomID][code] = true
	}
	for _, code := range []string{"ok", pack.CodeMissing, pack.CodeDuplicate, pack.CodeUnparseable, pack.CodeTruncated} {
		require.Positive(t, codes[code], "%s in %v", code, codes)
	}
	requestFailed := 0
	for pid, cs := range byRequest {
		for c := range cs {
			switch c {
			case "ok", pack.CodeMissing, pack.CodeDuplicate:
			case pack.CodeUnparseable, pack.CodeTruncated:
				require.Len(t, cs, 1, "%s: a whole answer that fails fails all its records", pid)
			default: // the request failed (server_error, http_400, http_500, http_503): all its records with it
				require.Len(t, cs, 1, "%s: %v", pid, cs)
				requestFailed++
			}
		}
	}
	require.Positive(t, requestFailed, "%v", codes)
	packedFailed := codes[pack.CodeMissing] + codes[pack.CodeDuplicate] + codes[pack.CodeUnparseable] + codes[pack.CodeTruncated]
	var got *int
	require.NoError(t, e.store.Pool().QueryRow(context.Background(), `select packed_failed from `+e.store.Schema()+`.batches where batch_id = $1`, id).Scan(&got))
	require.Equal(t, packedFailed, *got)
}

func TestLoadPackedAnswerSchema(t *testing.T) {
	t.Parallel()
	// The recorded answer schema holds every answer to it: answers that fail it are their records' errors.
	e := newEnv(t, emulator.Options{})
	id := e.submitPacked(t, pack.EndpointChat, 6, 3, `{"type":"string","enum":["positive","negative"]}`)
	runUntilDone(t, e.config(t), 30*time.Second)
	rows := e.packedRows(t, id)
	require.Len(t, rows, 6)
	invalid := 0
	for _, r := range rows {
		if r.Error != nil {
			require.Contains(t, string(r.Error), pack.CodeInvalid)
			require.Contains(t, string(r.Error), "fails the answer schema")
			invalid++
			continue
		}
		require.Regexp(t, `"answer": "(positive|negative)"`, string(r.Response))
	}
	require.Positive(t, invalid, "the emulator's labels include neutral and mixed")
}

func TestResubmitPacked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{GarbleRate: 0.5, Seed: 5})
	id := e.submitPacked(t, pack.EndpointChat, 40, 5, `{"type":"string"}`)
	runUntilDone(t, e.config(t), 30*time.Second)
	failed := map[string]bool{}
	for _, r := range e.packedRows(t, id) {
		if r.Error != nil {
			failed[r.CustomID] = true
		}
	}
	require.NotEmpty(t, failed)
	r := &poll.Resubmitter{Store: e.store, Providers: oaiprov.Set(&batchapi.Client{API: &e.api}), Dir: t.TempDir(), Pack: 2}
	res, err := r.Resubmit(context.Background(), id)
	require.NoError(t, err)
	require.NotEmpty(t, res.Child)
	// The failed records only, two a request (a request's failed records are not packed with another's).
	require.GreaterOrEqual(t, res.Requests, (len(failed)+1)/2)
	require.Less(t, res.Requests, len(failed)+1)
	child := e.batchRow(t, res.Child)
	require.Equal(t, "2", child.Metadata[batchapi.MetaPack])
	recs, err := e.store.PackedRecords(context.Background(), child.SpoolSHA256, nil)
	require.NoError(t, err)
	got := map[string]bool{}
	for pid, rs := range recs {
		require.LessOrEqual(t, len(rs), 2)
		require.Equal(t, "pack:"+rs[0].CustomID, pid)
		for i, r := range rs {
			require.Equal(t, i+1, r.Index)
			got[r.CustomID] = true
			// The record keeps its line in the root's input.
			require.Equal(t, fmt.Sprintf("r-%d", r.Line), r.CustomID)
		}
	}
	require.Equal(t, failed, got)
}

func TestLoadPackedManyChunks(t *testing.T) {
	t.Parallel()
	// 550 request lines: the records are looked up in two chunks.
	e := newEnv(t, emulator.Options{})
	id := e.submitPacked(t, pack.EndpointChat, 1100, 2, `{"type":"string"}`)
	runUntilDone(t, e.config(t), 30*time.Second)
	rows := e.packedRows(t, id)
	require.Len(t, rows, 1100)
	for i, r := range rows {
		require.Equal(t, fmt.Sprintf("r-%d", i+1), r.CustomID)
		require.Equal(t, fmt.Sprintf("pack:r-%d", i/2*2+1), r.PackedCustomID)
		require.Equal(t, 200, *r.StatusCode)
	}
}

func TestResubmitPackedAfterTokenLimit(t *testing.T) {
	t.Parallel()
	// A packed batch failed whole goes again whole, packed as it was.
	e := newEnv(t, emulator.Options{TokenLimitPerModel: map[string]int64{"gpt-4o-mini": 5}})
	root := e.submitPacked(t, pack.EndpointChat, 12, 5, `{"type":"string"}`)
	waitEmulator(t, e, root, emulator.StatusFailed)
	e.emu.SetFaults(emulator.Faults{})
	runUntilDone(t, e.resubmitConfig(t), time.Minute)
	kids := e.children(root)
	require.Len(t, kids, 1)
	require.Equal(t, "5", kids[0].Metadata[batchapi.MetaPack])
	final := e.finalResults(t, root)
	require.Len(t, final, 12)
	for i, r := range final {
		require.Equal(t, fmt.Sprintf("r-%d", i+1), r.CustomID)
		require.Equal(t, i+1, *r.InputLine)
		require.Equal(t, 200, *r.StatusCode)
		require.Equal(t, 2, r.Attempt)
	}
}

func TestResubmitPackedTemplate(t *testing.T) {
	t.Parallel()
	// A template's own wording cannot be split: a request whose records all failed goes again whole, one with some
	// records answered is left, its failed records final.
	e := newEnv(t, emulator.Options{GarbleRate: 0.6, Seed: 2})
	id := e.submitPackedBodies(t, pack.EndpointChat, 60, 3, `{"type":"string"}`, templateBody)
	runUntilDone(t, e.config(t), 30*time.Second)
	byRequest := map[string][]packedRow{}
	for _, r := range e.packedRows(t, id) {
		byRequest[r.PackedCustomID] = append(byRequest[r.PackedCustomID], r)
	}
	whole, partial := map[string]bool{}, 0
	for _, rows := range byRequest {
		failed := 0
		for _, r := range rows {
			if r.Error != nil {
				failed++
			}
		}
		switch {
		case failed == len(rows):
			for _, r := range rows {
				whole[r.CustomID] = true
			}
		case failed > 0:
			partial++
		}
	}
	require.NotEmpty(t, whole)
	require.Positive(t, partial)
	r := &poll.Resubmitter{Store: e.store, Providers: oaiprov.Set(&batchapi.Client{API: &e.api}), Dir: t.TempDir()}
	res, err := r.Resubmit(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, len(whole)/3, res.Requests, "the wholly failed requests, as they were")
	child := e.batchRow(t, res.Child)
	recs, err := e.store.PackedRecords(context.Background(), child.SpoolSHA256, nil)
	require.NoError(t, err)
	got := map[string]bool{}
	for _, rs := range recs {
		require.Len(t, rs, 3)
		for _, r := range rs {
			got[r.CustomID] = true
		}
	}
	require.Equal(t, whole, got)
}
