package poll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"slices"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/pack"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// DefaultResubmitPack is the pack size a resubmission sends failed packed records in: one record a request, the
// fallback to individual calls.
const DefaultResubmitPack = 1

// packedParent is what resubmitting a batch of packed requests needs of it: its packing (the record-to-index map
// is looked up a chunk of request lines at a time).
type packedParent struct {
	pack store.Pack
}

// packedParentOf reads the packing of a batch whose requests are packed; nil for any other.
func (r *Resubmitter) packedParentOf(ctx context.Context, p store.Batch) (*packedParent, error) {
	if p.Metadata[batchapi.MetaPack] == "" {
		return nil, nil
	}
	pk, err := r.Store.GetPack(ctx, p.SpoolSHA256)
	if err != nil || pk == nil {
		return nil, err
	}
	return &packedParent{pack: *pk}, nil
}

// packSize is the pack size of resubmitted packed records.
func (r *Resubmitter) packSize() int {
	if r.Pack > 0 {
		return r.Pack
	}
	return DefaultResubmitPack
}

// spoolPacked is spool for a parent of packed requests: each packed request of the parent's input file is split,
// its records not in done repacked Resubmitter.Pack a request (pack.Repack), each under the custom_id "pack:" and
// its first record's, and the child's record-to-index map kept in childRecs (the failed records only), each record
// with its line in the root's input. A request that cannot be split (a template's own wording) is sent again whole
// when none of its records is done, and left out (its records stay as they are) otherwise.
func (r *Resubmitter) spoolPacked(ctx context.Context, api provider.Provider, p store.Batch, pp *packedParent, done map[string]struct{}) (path string, n int, sum string, childRecs []store.PackedRecord, err error) {
	resp, err := api.Open(ctx, p.InputFileID, 0)
	if err != nil {
		return "", 0, "", nil, fmt.Errorf("download input file %s of %s: %w", p.InputFileID, p.BatchID, err)
	}
	defer resp.Close()
	file, err := r.createFile(p.BatchID)
	if err != nil {
		return "", 0, "", nil, err
	}
	defer file.close(&err)
	path = file.path()
	rd := jsonl.NewReader(resp, p.InputFileID, 0)
	size := r.packSize()
	var (
		rec   jsonl.Record
		out   []byte
		lines [][]byte // a chunk of request lines, copied
		ids   []string
	)
	// flush resends the failed records of the chunk's requests.
	flush := func() error {
		recsOf, err := r.Store.PackedRecords(ctx, p.SpoolSHA256, ids)
		if err != nil {
			return err
		}
		for _, line := range lines {
			if err := jsonl.Inspect(line, &rec); err != nil || !rec.IsRequest {
				return fmt.Errorf("read input file %s of %s: not a request line", p.InputFileID, p.BatchID)
			}
			recs := recsOf[rec.Request.CustomID]
			var keep []int // the indexes to send again
			for _, m := range recs {
				if _, final := done[m.CustomID]; !final {
					keep = append(keep, m.Index)
				}
			}
			if len(keep) == 0 {
				continue
			}
			if _, err := pack.Items(pp.pack.Endpoint, rec.Request.Body); err != nil {
				if len(keep) < len(recs) {
					r.log().Warn("a packed request of a template's own wording cannot be split: its failed records are not sent again",
						"batch_id", p.BatchID, "custom_id", rec.Request.CustomID, "failed", len(keep), "records", len(recs))
					continue
				}
				file.line(line)
				childRecs = append(childRecs, recs...)
				continue
			}
			for chunk := range slices.Chunk(keep, size) {
				body, err := pack.Repack(pp.pack.Endpoint, rec.Request.Body, chunk, pp.pack.AnswerSchema)
				if err != nil {
					return fmt.Errorf("repack %s of %s: %w", rec.Request.CustomID, p.BatchID, err)
				}
				first := recs[chunk[0]-1]
				req := jsonl.Request{CustomID: "pack:" + first.CustomID, Method: "POST", URL: rec.Request.URL, Body: body}
				out = req.AppendJSON(out[:0])
				file.line(out)
				for i, k := range chunk {
					m := recs[k-1]
					childRecs = append(childRecs, store.PackedRecord{PackedCustomID: req.CustomID, Index: i + 1, CustomID: m.CustomID, Line: m.Line})
				}
			}
		}
		lines, ids = lines[:0], ids[:0]
		return nil
	}
	for {
		line, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return path, 0, "", nil, fmt.Errorf("read input file %s of %s: %w", p.InputFileID, p.BatchID, err)
		}
		line = append([]byte(nil), line...) // the reader reuses its buffer
		lines = append(lines, line)
		ids = append(ids, jsonl.Peek(line, "custom_id").Str)
		if len(lines) == packedChunk {
			if err := flush(); err != nil {
				return path, 0, "", nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return path, 0, "", nil, err
	}
	sum, err = file.finish()
	if err != nil {
		return path, 0, "", nil, err
	}
	return path, file.n, sum, childRecs, nil
}

func recordsSeq(recs []store.PackedRecord) iter.Seq2[store.PackedRecord, error] {
	return func(yield func(store.PackedRecord, error) bool) {
		for _, r := range recs {
			if !yield(r, nil) {
				return
			}
		}
	}
}
