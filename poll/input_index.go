package poll

import (
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"sort"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/batchctl/batchctl/jsonl"
)

// inputIndex maps custom_id to its line in a batch's input file. It keeps 12 bytes per request (a hash and a line
// number, in two arrays so no padding is stored), not the IDs, so a 1 000 000-line file costs 12 MB. A hash shared
// by two IDs (or an ID repeated in the file) maps to no line: input_line stays null rather than wrong.
type inputIndex struct {
	seed   maphash.Seed
	hashes []uint64 // sorted
	lines  []uint32 // lines[i] is the line of hashes[i]; 0: ambiguous
}

// sampleLines is how many lines buildInputIndex reads before it sizes its arrays from their mean length.
const sampleLines = 64

// buildInputIndex reads a request file line by line.
func buildInputIndex(r io.Reader, source string) (*inputIndex, error) {
	return buildInputIndexSize(r, source, -1)
}

// buildInputIndexSize reads a request file of size bytes (-1 when unknown, as an HTTP body without Content-Length).
// A known size lets it allocate its arrays once, from the mean length of the first lines, instead of growing them
// by append: a grown array and its copy would coexist, and they were the poller's peak of memory.
func buildInputIndexSize(r io.Reader, source string, size int64) (*inputIndex, error) {
	ix := &inputIndex{seed: maphash.MakeSeed()}
	rd := jsonl.NewReader(r, source, 0)
	var read int64 // bytes of the lines read so far, for the estimate
	for {
		line, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		read += int64(len(line)) + 1
		if rd.Line() == sampleLines && size > 0 {
			ix.reserve(estimateLines(size, read, sampleLines))
		}
		if err != nil {
			if _, ok := jsonl.AsRecordError(err); ok {
				continue // the API accepted the file; a line we cannot read just keeps a null input_line
			}
			return nil, fmt.Errorf("read input file %s: %w", source, err)
		}
		// A view of the line, not a copy: gjson copies only an ID with escapes, and the hash keeps nothing of it.
		id := gjson.Get(unsafe.String(unsafe.SliceData(line), len(line)), "custom_id")
		if id.Type != gjson.String {
			continue
		}
		ix.hashes = append(ix.hashes, maphash.String(ix.seed, id.Str))
		ix.lines = append(ix.lines, uint32(rd.Line()))
	}
	sort.Sort(byHash{ix})
	for i := 1; i < len(ix.hashes); i++ {
		if ix.hashes[i] == ix.hashes[i-1] {
			ix.lines[i], ix.lines[i-1] = 0, 0
		}
	}
	return ix, nil
}

// estimateLines guesses the lines of a file of size bytes from the first lines (n of them, read bytes): 10 % more
// than the mean promises, as the first lines of a file are often its shortest IDs. An underestimate only costs one
// growth by append at the end.
func estimateLines(size, read int64, n int) int {
	if read <= 0 {
		return 0
	}
	return int(size*int64(n)/read) + int(size*int64(n)/read)/10 + n
}

// reserve makes room for n entries in all, once.
func (ix *inputIndex) reserve(n int) {
	if n <= cap(ix.hashes) {
		return
	}
	hashes, lines := make([]uint64, len(ix.hashes), n), make([]uint32, len(ix.lines), n)
	copy(hashes, ix.hashes)
	copy(lines, ix.lines)
	ix.hashes, ix.lines = hashes, lines
}

// byHash sorts the index's two arrays together.
type byHash struct{ ix *inputIndex }

func (s byHash) Len() int           { return len(s.ix.hashes) }
func (s byHash) Less(i, j int) bool { return s.ix.hashes[i] < s.ix.hashes[j] }
func (s byHash) Swap(i, j int) {
	s.ix.hashes[i], s.ix.hashes[j] = s.ix.hashes[j], s.ix.hashes[i]
	s.ix.lines[i], s.ix.lines[j] = s.ix.lines[j], s.ix.lines[i]
}

// lookup returns the 1-based input line of customID.
func (ix *inputIndex) lookup(customID string) (int, bool) {
	if ix == nil {
		return 0, false
	}
	h := maphash.String(ix.seed, customID)
	i, found := slices.BinarySearch(ix.hashes, h)
	if !found || ix.lines[i] == 0 {
		return 0, false
	}
	return int(ix.lines[i]), true
}
