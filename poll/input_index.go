package poll

import (
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"

	"github.com/tidwall/gjson"

	"github.com/batchctl/batchctl/jsonl"
)

// inputIndex maps custom_id to its line in a batch's input file. It keeps 16 bytes per request (a hash and a line
// number), not the IDs, so a 1 000 000-line file costs 16 MB. A hash shared by two IDs (or an ID repeated in the
// file) maps to no line: input_line stays null rather than wrong.
type inputIndex struct {
	seed    maphash.Seed
	entries []indexEntry // sorted by hash
}

type indexEntry struct {
	hash uint64
	line uint32 // 0: ambiguous
}

// buildInputIndex reads a request file line by line.
func buildInputIndex(r io.Reader, source string) (*inputIndex, error) {
	ix := &inputIndex{seed: maphash.MakeSeed()}
	rd := jsonl.NewReader(r, source, 0)
	for {
		line, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		var recErr *jsonl.RecordError
		if errors.As(err, &recErr) {
			continue // the API accepted the file; a line we cannot read just keeps a null input_line
		}
		if err != nil {
			return nil, fmt.Errorf("read input file %s: %w", source, err)
		}
		id := gjson.GetBytes(line, "custom_id")
		if id.Type != gjson.String {
			continue
		}
		ix.entries = append(ix.entries, indexEntry{hash: maphash.String(ix.seed, id.Str), line: uint32(rd.Line())})
	}
	slices.SortFunc(ix.entries, func(a, b indexEntry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	for i := 1; i < len(ix.entries); i++ {
		if ix.entries[i].hash == ix.entries[i-1].hash {
			ix.entries[i].line, ix.entries[i-1].line = 0, 0
		}
	}
	ix.entries = slices.Clip(ix.entries)
	return ix, nil
}

// lookup returns the 1-based input line of customID.
func (ix *inputIndex) lookup(customID string) (int, bool) {
	if ix == nil {
		return 0, false
	}
	h := maphash.String(ix.seed, customID)
	i, found := slices.BinarySearchFunc(ix.entries, h, func(e indexEntry, h uint64) int {
		switch {
		case e.hash < h:
			return -1
		case e.hash > h:
			return 1
		}
		return 0
	})
	if !found || ix.entries[i].line == 0 {
		return 0, false
	}
	return int(ix.entries[i].line), true
}
