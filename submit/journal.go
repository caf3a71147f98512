package submit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"cmp"

	"github.com/gofrs/flock"

	"github.com/batchctl/batchctl/provider"
)

// Intent states, in the order a batch file goes through them.
const (
	// StateSpooling: a stream's open batch file, written through as records arrive; a later run seals it.
	StateSpooling = "spooling"
	StatePending  = "pending"  // spooled and validated; not uploaded yet (or the upload's answer was lost)
	StateUploaded = "uploaded" // the file is stored under FileID; the batch may or may not exist
	StateCreated  = "created"  // the batch BatchID exists
	// StateQueued: handed to the database's admission queue (Options.Admit), which creates the batch when its
	// model's token quota has room; the spool file stays until the batch exists.
	StateQueued = "queued"
)

const journalSuffix = ".journal.json"

// journal is the intent record kept beside a spool file. It is rewritten atomically at each state change, before
// the next API call, so a crash at any point leaves a state from which a later run can finish without duplicates.
type journal struct {
	Version     int               `json:"version"`
	State       string            `json:"state"`
	Intent      string            `json:"intent"` // random; sent as batch metadata to recognise this intent's batch
	Part        int               `json:"part"`
	SpoolFile   string            `json:"spool_file"` // base name, beside the journal
	SpoolSHA256 string            `json:"spool_sha256"`
	Requests    int               `json:"requests"`
	Tokens      int64             `json:"estimated_tokens,omitempty"`
	OutTokens   int64             `json:"estimated_output_tokens,omitempty"`
	Bytes       int64             `json:"bytes"`
	Model       string            `json:"model"`
	Endpoint    string            `json:"endpoint"`
	Source      string            `json:"source"`
	Metadata    map[string]string `json:"metadata"`
	// OutputExpiresAfter is the batch's output_expires_after in seconds (0: the API's default), fixed with the intent.
	OutputExpiresAfter int64     `json:"output_expires_after,omitempty"`
	FileID             string    `json:"file_id,omitempty"`
	BatchID            string    `json:"batch_id,omitempty"`
	SpooledAt          time.Time `json:"spooled_at"`
	UploadedAt         time.Time `json:"uploaded_at,omitzero"`
	// CreateSentAt is when a create call was last sent: a later run trusts a search that finds nothing only once
	// the API's list has had time to show a batch created then.
	CreateSentAt time.Time `json:"create_sent_at,omitzero"`
	CreatedAt    time.Time `json:"created_at,omitzero"`
	// APIBase and Account say where the file and batch live: the base URL and the fingerprint of endpoint and key
	// (batchapi.Account), never the key. Journals of version 1 have neither.
	APIBase string `json:"api_base,omitempty"`
	Account string `json:"account,omitempty"`
	// Provider is the batch API (provider.OpenAI when empty: journals written before there were others).
	Provider string `json:"provider,omitempty"`
	// Pack is the pack size of a batch file of packed requests (Options.Pack), 0 otherwise; AnswerSchema the
	// answer schema they ask for, and PackMap the base name of the record-to-index map beside the spool file
	// (saved to the database before the batch is created, removed with the spool file once it exists).
	Pack         int             `json:"pack,omitempty"`
	AnswerSchema json.RawMessage `json:"answer_schema,omitempty"`
	PackMap      string          `json:"pack_map,omitempty"`
	// LastError is why the last run could not finish this intent, when it set it aside.
	LastError string `json:"last_error,omitempty"`

	path string // of the journal file itself
}

// journalVersion is written into new journals: 2 adds the spooling state, the account and the create time.
const journalVersion = 2

func newIntent() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (j *journal) spoolPath() string { return filepath.Join(filepath.Dir(j.path), j.SpoolFile) }

func (j *journal) created() Created {
	return Created{
		BatchID: j.BatchID, Provider: cmp.Or(j.Provider, provider.OpenAI), InputFileID: j.FileID, Requests: j.Requests, Bytes: j.Bytes, SpoolSHA256: j.SpoolSHA256,
		Source: j.Source, Endpoint: j.Endpoint, Model: j.Model, Part: j.Part, EstimatedTokens: j.Tokens,
		OutputExpiresAfter: j.OutputExpiresAfter,
	}
}

// save writes the journal atomically: a temporary file, fsynced, renamed over the old one, and the directory
// fsynced, so a crash leaves either the old state or the new one.
func (j *journal) save() error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(j.path)
	f, err := os.CreateTemp(dir, ".journal-*")
	if err != nil {
		return fmt.Errorf("save journal: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), j.path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("save journal %s: %w", j.path, err)
	}
	return syncDir(dir)
}

// loadJournals reads the journals of a run directory, in part order.
func loadJournals(dir string) ([]*journal, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*"+journalSuffix))
	if err != nil {
		return nil, err
	}
	var js []*journal
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read journal: %w", err)
		}
		j := &journal{path: name}
		if err := json.Unmarshal(b, j); err != nil {
			return nil, fmt.Errorf("read journal %s: %w", name, err)
		}
		js = append(js, j)
	}
	sort.Slice(js, func(a, b int) bool { return js[a].Part < js[b].Part })
	return js, nil
}

// ErrRunDirBusy means another batchctl submit works in the same run directory.
var ErrRunDirBusy = errors.New("spool directory is in use by another batchctl submit")

// runDirLockWait is how long a run waits for its own run directory's lock before it says the directory is busy:
// every submit's start-up scan for the intents of dead runs (resumeDir) takes each run directory's lock for a
// moment, and a run of another input starting in that moment must not mistake the scan for a second process working
// on its input (it did, in the reliability suite's eight submitters started at once).
const runDirLockWait = 10 * time.Second

// lockOwnRunDir takes the lock of a run's own directory, trying again for up to runDirLockWait while another
// process holds it: a scan lets go within milliseconds, a run of the same input holds it until it ends. The error
// wraps ErrRunDirBusy when the wait runs out, and is ctx's when the run is stopped while waiting.
func lockOwnRunDir(ctx context.Context, dir string) (*flock.Flock, error) {
	l := flock.New(filepath.Join(dir, ".lock"))
	wait, cancel := context.WithTimeout(ctx, runDirLockWait)
	defer cancel()
	ok, err := l.TryLockContext(wait, 20*time.Millisecond)
	switch {
	case ok:
		return l, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil && !errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return nil, fmt.Errorf("%s: %w", dir, ErrRunDirBusy)
}

// lockRunDir takes the run directory's lock without waiting: two processes finishing the same intents could upload
// and create twice.
func lockRunDir(dir string) (*flock.Flock, error) {
	l := flock.New(filepath.Join(dir, ".lock"))
	ok, err := l.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if !ok {
		return nil, fmt.Errorf("%s: %w", dir, ErrRunDirBusy)
	}
	return l, nil
}

// cleanStale removes what a run that stopped half way leaves behind without a journal: open spool files and
// sealed ones whose input was never validated whole. The caller holds the lock.
func cleanStale(dir string, keep map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		stale := strings.HasSuffix(n, ".spooling") || strings.HasPrefix(n, ".journal-") ||
			(strings.HasSuffix(n, ".jsonl") && !keep[n]) ||
			(strings.HasSuffix(n, packMapSuffix) && !keep[strings.TrimSuffix(n, packMapSuffix)])
		if stale {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// journalPath names the journal of part n in dir; every part of a run directory has its own number.
func journalPath(dir string, n int) string {
	return filepath.Join(dir, fmt.Sprintf("part-%05d%s", n, journalSuffix))
}

// nextPart is the number after every part a run directory has seen: its journals and any spool file left in it, so
// that parts of successive runs never share a number.
func nextPart(dir string, js []*journal) (int, error) {
	n := 0
	for _, j := range js {
		n = max(n, j.Part)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read run dir: %w", err)
	}
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscanf(e.Name(), "part-%05d", &p); err == nil {
			n = max(n, p)
		}
	}
	return n + 1, nil
}
