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

// inputIndex maps custom_id to its line in a batch's input file. It keeps 8 bytes per request, not the IDs: the top
// bits of the ID's hash and, in the low lineBits, the line number. So a 1 000 000-line file costs 8 MB and keeps 44
// bits of each hash (at most 0.03 pairs of IDs expected to share them); a 50 000-line file, the API's largest, keeps
// 48. A hash shared by two IDs (or an ID repeated in the file) maps to no line: input_line stays null rather than
// wrong.
type inputIndex struct {
	seed     maphash.Seed
	lineBits uint     // the low lineBits bits of an entry are its line: 0 ambiguous
	entries  []uint64 // sorted, so by hash
}

const (
	// minLineBits holds the line numbers of any file the Batch API accepts (50 000 requests); a longer file widens
	// the line field as it goes.
	minLineBits = 16
	// sampleLines is how many lines buildInputIndexSize reads before it sizes the index from their mean length.
	sampleLines = 64
)

// buildInputIndexSize reads a request file of size bytes (-1 when unknown, as an HTTP body without Content-Length).
// A known size lets it allocate the index once, from the mean length of the first lines, instead of growing it by
// append: a grown array and its copy would coexist, and they were the poller's peak of memory.
func buildInputIndexSize(r io.Reader, source string, size int64) (*inputIndex, error) {
	ix := &inputIndex{seed: maphash.MakeSeed(), lineBits: minLineBits}
	rd := jsonl.NewReader(r, source, 0)
	var read int64 // bytes of the lines read so far, for the estimate
	for {
		line, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		read += int64(len(line)) + 1
		if rd.Line() == sampleLines && size > 0 {
			ix.entries = slices.Grow(ix.entries, estimateLines(size, read, sampleLines)-len(ix.entries))
		}
		if err != nil {
			if _, ok := jsonl.AsRecordError(err); ok {
				continue // the API accepted the file; a line we cannot read just keeps a null input_line
			}
			return nil, fmt.Errorf("read input file %s: %w", source, err)
		}
		// A view of the line, not a copy: gjson copies only an ID with escapes, and the hash keeps nothing of it.
		id := jsonl.Peek(line, "custom_id")
		if id.Type != gjson.String {
			continue
		}
		ix.add(maphash.String(ix.seed, id.Str), uint64(rd.Line()))
	}
	slices.Sort(ix.entries)
	for i := 1; i < len(ix.entries); i++ {
		if ix.hashBits(ix.entries[i]) == ix.hashBits(ix.entries[i-1]) {
			// Clearing the lines keeps the order: the two entries become equal.
			ix.entries[i], ix.entries[i-1] = ix.hashBits(ix.entries[i]), ix.hashBits(ix.entries[i-1])
		}
	}
	return ix, nil
}

// estimateLines guesses the lines of a file of size bytes from its first n lines, read bytes: 5 % more than their
// mean length promises. An underestimate costs one growth by append at the end.
func estimateLines(size, read int64, n int) int {
	if read <= 0 {
		return n
	}
	est := size * int64(n) / read
	return int(est + est/20 + int64(n))
}

// add appends the entry of a hash and its line, widening the line field first when the line needs it.
func (ix *inputIndex) add(hash, line uint64) {
	for line>>ix.lineBits != 0 {
		ix.widen()
	}
	ix.entries = append(ix.entries, ix.hashBits(hash)|line)
}

// widen gives the line field one more bit, taken from the hash of every entry so far.
func (ix *inputIndex) widen() {
	ix.lineBits++
	for i, e := range ix.entries {
		ix.entries[i] = ix.hashBits(e) | e&(1<<(ix.lineBits-1)-1)
	}
}

// hashBits clears the line field of e.
func (ix *inputIndex) hashBits(e uint64) uint64 { return e >> ix.lineBits << ix.lineBits }

// lookup returns the 1-based input line of customID.
func (ix *inputIndex) lookup(customID string) (int, bool) {
	if ix == nil {
		return 0, false
	}
	h := ix.hashBits(maphash.String(ix.seed, customID))
	i, _ := slices.BinarySearch(ix.entries, h) // the first entry ≥ h: h's own, if it has one
	if i == len(ix.entries) || ix.hashBits(ix.entries[i]) != h {
		return 0, false
	}
	line := ix.entries[i] - h
	return int(line), line != 0
}
