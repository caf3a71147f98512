package submit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// prepareDir reads a run directory's journals, first sealing the open batch file a stream's run left when it
// stopped without sealing it (a kill -9, a crash), so the records written through to it are submitted, and then
// removes what a stopped run of a bounded input left: its files are read again whole. The caller holds the lock.
func prepareDir(dir string) ([]*journal, error) {
	js, err := loadJournals(dir)
	if err != nil {
		return nil, err
	}
	kept := js[:0]
	for _, j := range js {
		if j.State == StateSpooling {
			ok, err := sealLeftover(j, js)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		kept = append(kept, j)
	}
	if err := cleanStale(dir, spoolFiles(kept)); err != nil {
		return nil, err
	}
	return kept, nil
}

// sealLeftover seals the spool file of a journal left in StateSpooling: cut after its last whole line, hashed,
// renamed and made pending. When the rename happened but the journal was not saved, the sealed file is found by
// its part number. A file with no whole line goes, with its journal; ok is false then.
func sealLeftover(j *journal, all []*journal) (ok bool, err error) {
	dir := filepath.Dir(j.path)
	path := j.spoolPath()
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		path, err = sealedOrphan(dir, j.Part, all)
		if err != nil {
			return false, err
		}
	}
	if path == "" {
		return false, removeJournal(j)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Errorf("seal leftover spool file: %w", err)
	}
	defer f.Close()
	size, err := wholeLines(f)
	if err != nil {
		return false, fmt.Errorf("seal leftover spool file %s: %w", path, err)
	}
	packMap, err := leftoverPackMap(j, path)
	if err != nil {
		return false, err
	}
	if size == 0 {
		_ = f.Close()
		if err := os.Remove(path); err != nil {
			return false, fmt.Errorf("remove empty spool file: %w", err)
		}
		if packMap != "" {
			_ = os.Remove(packMap)
		}
		return false, removeJournal(j)
	}
	if err := f.Truncate(size); err != nil {
		return false, fmt.Errorf("seal leftover spool file %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	h, lines := sha256.New(), &lineCounter{}
	if _, err := io.Copy(io.MultiWriter(h, lines), f); err != nil {
		return false, fmt.Errorf("seal leftover spool file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("seal leftover spool file %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	sealed := filepath.Join(dir, sealedName(j.Part, sum))
	if packMap != "" {
		// The map may hold the records of a request line cut above: they name a packed request the file does not
		// hold, and are never looked up.
		if err := os.Rename(packMap, sealed+packMapSuffix); err != nil {
			return false, fmt.Errorf("seal leftover pack map: %w", err)
		}
		j.PackMap = filepath.Base(sealed + packMapSuffix)
	}
	if err := os.Rename(path, sealed); err != nil {
		return false, fmt.Errorf("seal leftover spool file: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return false, err
	}
	j.State, j.SpoolFile, j.SpoolSHA256, j.Requests, j.Bytes = StatePending, filepath.Base(sealed), sum, lines.n, size
	j.Tokens = lines.tokens() // of whole lines, above the bodies' own estimate: on the safe side
	j.Metadata[MetaSpoolSHA256] = sum
	return true, j.save()
}

// leftoverPackMap finds the record-to-index map of a packed leftover spool file at path: beside the open file, or
// already renamed beside its sealed name (the spooler renames the map first). "" for a journal of unpacked requests.
func leftoverPackMap(j *journal, path string) (string, error) {
	if j.Pack == 0 {
		return "", nil
	}
	if _, err := os.Stat(path + packMapSuffix); err == nil {
		return path + packMapSuffix, nil
	}
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(path), fmt.Sprintf("part-%05d-*.jsonl%s", j.Part, packMapSuffix)))
	if err != nil {
		return "", err
	}
	if len(matches) == 1 {
		return matches[0], nil
	}
	return "", fmt.Errorf("seal leftover spool file %s: its packed requests' record-to-index map is missing", path)
}

// sealedOrphan finds the sealed file of part n that no journal names: sealed by a run that stopped before it
// saved the journal. "" when there is none.
func sealedOrphan(dir string, n int, all []*journal) (string, error) {
	named := spoolFiles(all)
	matches, err := filepath.Glob(filepath.Join(dir, fmt.Sprintf("part-%05d-*.jsonl", n)))
	if err != nil {
		return "", err
	}
	for _, m := range matches {
		if !named[filepath.Base(m)] {
			return m, nil
		}
	}
	return "", nil
}

// wholeLines returns the length of f up to and including its last newline, reading backwards from its end.
func wholeLines(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	for end := st.Size(); end > 0; {
		start := max(0, end-int64(len(buf)))
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}

// lineCounter counts the lines written to it, and the bytes EstimateTokens counts.
type lineCounter struct {
	n            int
	ascii, other int64
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n += bytes.Count(p, []byte{'\n'})
	for _, b := range p {
		switch {
		case b < 0x80:
			c.ascii++
		case b >= 0xC0:
			c.other++
		}
	}
	return len(p), nil
}

// tokens is EstimateTokens of everything written.
func (c *lineCounter) tokens() int64 { return (c.ascii+3)/4 + c.other }

func removeJournal(j *journal) error {
	if err := os.Remove(j.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove journal: %w", err)
	}
	return nil
}

// sealedName names a sealed batch file by its part and content: part-NNNNN-<sha256 prefix>.jsonl.
func sealedName(part int, sha string) string {
	return fmt.Sprintf("part-%05d-%s.jsonl", part, sha[:12])
}

// spoolingName names the open batch file of a part.
func spoolingName(part int) string { return fmt.Sprintf("part-%05d.spooling", part) }
