package submit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"

	"github.com/batchctl/batchctl/store"
)

// packJournal records a packed batch file's packing in its intent's journal.
func (r *run) packJournal(j *journal, p *spooledPart) {
	if p.PackMap == "" {
		return
	}
	j.Pack, j.AnswerSchema, j.PackMap = r.opts.Pack, r.opts.AnswerSchema, filepath.Base(p.PackMap)
}

func (j *journal) packMapPath() string { return filepath.Join(filepath.Dir(j.path), j.PackMap) }

// savePack records, before the batch is created, which record each item of the intent's packed requests is
// (Options.SavePack). It is idempotent, so every attempt at the intent calls it.
func (r *run) savePack(ctx context.Context, j *journal) error {
	if j.Pack == 0 || r.opts.SavePack == nil {
		return nil
	}
	path := j.packMapPath()
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s: the record-to-index map of its packed requests: %w", j.spoolPath(), err)
	}
	p := store.Pack{SpoolSHA256: j.SpoolSHA256, Endpoint: j.Endpoint, Size: j.Pack, AnswerSchema: j.AnswerSchema}
	if err := r.opts.SavePack(ctx, p, readPackMap(path)); err != nil {
		return fmt.Errorf("%s: record its packed records: %w", j.spoolPath(), err)
	}
	return nil
}

// readPackMap streams a record-to-index map file.
func readPackMap(path string) iter.Seq2[store.PackedRecord, error] {
	return func(yield func(store.PackedRecord, error) bool) {
		f, err := os.Open(path)
		if err != nil {
			yield(store.PackedRecord{}, err)
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var rec store.PackedRecord
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				yield(rec, fmt.Errorf("read %s: %w", path, err))
				return
			}
			if !yield(rec, nil) {
				return
			}
		}
		if err := sc.Err(); err != nil && !errors.Is(err, os.ErrClosed) {
			yield(store.PackedRecord{}, fmt.Errorf("read %s: %w", path, err))
		}
	}
}

// remove deletes a sealed batch file that goes unsubmitted, and its record-to-index map.
func (p *spooledPart) remove() {
	_ = os.Remove(p.Path)
	if p.PackMap != "" {
		_ = os.Remove(p.PackMap)
	}
}
