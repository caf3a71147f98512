package submit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/pack"
	"github.com/batchctl/batchctl/store"
	"github.com/batchctl/batchctl/submit"
)

// packedLines reads a spool file's request lines.
func packedLines(t *testing.T, path string) []map[string]json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []map[string]json.RawMessage
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		out = append(out, m)
	}
	return out
}

func TestRunPackDryRun(t *testing.T) {
	t.Parallel()
	for _, endpoint := range []string{pack.EndpointChat, pack.EndpointResponses} {
		t.Run(endpoint, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			opts := baseOptions(t, nil, &out)
			opts.DryRun, opts.Endpoint, opts.System, opts.Pack, opts.MaxRequests = true, endpoint, "Classify.", 3, 2
			opts.IDField = "id"
			opts.AnswerSchema = []byte(`{"type": "string", "enum": ["positive", "negative"]}`)
			var lines []string
			for i := 1; i <= 8; i++ {
				lines = append(lines, `{"id":"r`+string(rune('0'+i))+`","text":"review `+string(rune('0'+i))+`"}`)
			}
			opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", lines...)}
			require.NoError(t, submit.Run(t.Context(), opts))
			cs := decodeCreated(t, out.String())
			// 8 records in packs of 3: 3 requests, cut at 2 requests a batch file.
			require.Len(t, cs, 2)
			require.Equal(t, 2, cs[0].Requests)
			require.Equal(t, 1, cs[1].Requests)
			reqs := packedLines(t, cs[0].SpoolFile)
			require.Equal(t, `"pack:r1"`, string(reqs[0]["custom_id"]))
			require.Equal(t, `"pack:r4"`, string(reqs[1]["custom_id"]))
			texts, err := pack.Items(endpoint, reqs[1]["body"])
			require.NoError(t, err)
			require.Equal(t, []json.RawMessage{json.RawMessage(`"review 4"`), json.RawMessage(`"review 5"`), json.RawMessage(`"review 6"`)}, texts)
			require.True(t, pack.HasFormat(endpoint, reqs[0]["body"]))
			require.Contains(t, string(reqs[0]["body"]), `"enum":["positive","negative"]`)
			// The record-to-index map beside the batch file: every record, with its line among the file's records.
			m, err := os.ReadFile(cs[0].SpoolFile + ".packmap")
			require.NoError(t, err)
			require.Equal(t, 6, strings.Count(string(m), "\n"))
			require.Contains(t, string(m), `{"packed_custom_id":"pack:r4","index":2,"custom_id":"r5","line":5}`)
			m, err = os.ReadFile(cs[1].SpoolFile + ".packmap")
			require.NoError(t, err)
			require.Equal(t, `{"packed_custom_id":"pack:r7","index":1,"custom_id":"r7","line":1}`+"\n"+
				`{"packed_custom_id":"pack:r7","index":2,"custom_id":"r8","line":2}`+"\n", string(m))
		})
	}
}

func TestRunPackTemplate(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	opts := baseOptions(t, nil, &out)
	opts.DryRun, opts.Pack, opts.Model = true, 2, ""
	opts.Template = `{"model": "m", "messages": [{{range $i, $r := .records}}{{if $i}},{{end}}{"role": "user", "content": {{json (printf "%d. %s" $r.index $r.record.text)}}}{{end}}]}`
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", `{"text":"a"}`, `{"text":"b"}`, `{"text":"c"}`)}
	require.NoError(t, submit.Run(t.Context(), opts))
	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 1)
	reqs := packedLines(t, cs[0].SpoolFile)
	require.Len(t, reqs, 2)
	require.Equal(t, `"pack:in.jsonl:1"`, string(reqs[0]["custom_id"]))
	require.JSONEq(t, `{"model":"m","messages":[{"role":"user","content":"1. a"},{"role":"user","content":"2. b"}],
		"response_format":{"type":"json_schema","json_schema":{"name":"packed_answers","strict":true,"schema":`+
		string(pack.Schema(pack.DefaultAnswerSchema, 2))+`}}}`, string(reqs[0]["body"]))
	require.Contains(t, string(reqs[1]["body"]), `"maxItems":1`)
}

func TestRunPackErrors(t *testing.T) {
	t.Parallel()
	tests := map[string]func(*submit.Options){
		"schema without pack": func(o *submit.Options) { o.AnswerSchema = []byte(`{"type":"string"}`) },
		"embeddings":          func(o *submit.Options) { o.Pack, o.Endpoint = 2, "/v1/embeddings" },
		"pack too large":      func(o *submit.Options) { o.Pack = pack.MaxSize + 1 },
		"bad schema":          func(o *submit.Options) { o.Pack, o.AnswerSchema = 2, []byte(`{"type": 3}`) },
		"no database":         func(o *submit.Options) { o.Pack, o.DryRun = 2, false },
	}
	for name, tweak := range tests {
		var out bytes.Buffer
		_, client := newEmulator(t, emulator.Options{})
		opts := baseOptions(t, client, &out)
		opts.DryRun = true
		opts.Inputs = []submit.Input{{Name: "in", Reader: strings.NewReader(`{"text":"x"}`)}}
		tweak(&opts)
		require.ErrorIs(t, submit.Run(t.Context(), opts), submit.ErrInvalidOptions, name)
	}
	// A repeated custom_id among the records of a batch is a bad record, whether in one pack or two.
	var out bytes.Buffer
	opts := baseOptions(t, nil, &out)
	opts.DryRun, opts.Pack, opts.IDField = true, 2, "id"
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", `{"id":"a","text":"x"}`, `{"id":"b","text":"x"}`, `{"id":"a","text":"y"}`)}
	err := submit.Run(t.Context(), opts)
	require.ErrorContains(t, err, `custom_id "a" repeated in this batch`)
}

func filepathGlob(dir, pattern string) ([]string, error) {
	return filepath.Glob(filepath.Join(dir, "*", pattern))
}

func TestRunPackSavesTheMapBeforeTheBatch(t *testing.T) {
	t.Parallel()
	srv, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Pack, opts.IDField = 2, "id"
	var mu sync.Mutex
	var saved []store.PackedRecord
	var packs []store.Pack
	opts.SavePack = func(_ context.Context, p store.Pack, recs iter.Seq2[store.PackedRecord, error]) error {
		mu.Lock()
		defer mu.Unlock()
		require.Zero(t, srv.Stats().BatchCreates, "the map is saved before the batch is created")
		packs = append(packs, p)
		for r, err := range recs {
			require.NoError(t, err)
			saved = append(saved, r)
		}
		return nil
	}
	opts.Inputs = []submit.Input{writeInput(t, "in.jsonl", `{"id":"a","text":"x"}`, `{"id":"b","text":"y"}`, `{"id":"c","text":"z"}`)}
	require.NoError(t, submit.Run(t.Context(), opts))
	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 1)
	require.Equal(t, 2, cs[0].Requests)
	require.Len(t, packs, 1)
	require.Equal(t, store.Pack{SpoolSHA256: cs[0].SpoolSHA256, Endpoint: pack.EndpointChat, Size: 2,
		AnswerSchema: json.RawMessage(`{"type":"string"}`)}, packs[0])
	require.Equal(t, []store.PackedRecord{
		{PackedCustomID: "pack:a", Index: 1, CustomID: "a", Line: 1},
		{PackedCustomID: "pack:a", Index: 2, CustomID: "b", Line: 2},
		{PackedCustomID: "pack:c", Index: 1, CustomID: "c", Line: 3},
	}, saved)
	b, ok := srv.Batch(cs[0].BatchID)
	require.True(t, ok)
	require.Equal(t, "2", b.Metadata[submit.MetaPack])
	// The map goes with the spool file once the batch exists: it is in the database.
	left, err := filepathGlob(opts.SpoolDir, "*.packmap")
	require.NoError(t, err)
	require.Empty(t, left)
}

func TestRunPackStream(t *testing.T) {
	t.Parallel()
	_, client := newEmulator(t, emulator.Options{})
	var out bytes.Buffer
	opts := baseOptions(t, client, &out)
	opts.Pack, opts.IDField = 10, "id"
	var mu sync.Mutex
	saved := map[string]string{} // record → packed request
	opts.SavePack = func(_ context.Context, p store.Pack, recs iter.Seq2[store.PackedRecord, error]) error {
		mu.Lock()
		defer mu.Unlock()
		for r, err := range recs {
			require.NoError(t, err)
			saved[r.CustomID] = r.PackedCustomID
		}
		return nil
	}
	pr, pw := io.Pipe()
	opts.Inputs = []submit.Input{{Name: "stdin", Reader: pr}}
	go func() {
		// Three records, a pause longer than the write-through interval, two more: a stream's records are not
		// held back waiting for a full pack.
		_, _ = io.WriteString(pw, `{"id":"a","text":"x"}`+"\n"+`{"id":"b","text":"x"}`+"\n"+`{"id":"c","text":"x"}`+"\n")
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(pw, `{"id":"d","text":"x"}`+"\n"+`{"id":"e","text":"x"}`+"\n")
		_ = pw.Close()
	}()
	require.NoError(t, submit.Run(t.Context(), opts))
	cs := decodeCreated(t, out.String())
	require.Len(t, cs, 1)
	require.Equal(t, 2, cs[0].Requests, "a pack of the three read before the pause, one of the two after")
	require.Equal(t, map[string]string{"a": "pack:a", "b": "pack:a", "c": "pack:a", "d": "pack:d", "e": "pack:d"}, saved)
}
