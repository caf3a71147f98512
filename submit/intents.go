package submit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// IntentInfo describes an intent as its journal records it, for `batchctl intents`.
type IntentInfo struct {
	Journal    string    `json:"journal"`
	State      string    `json:"state"`
	Intent     string    `json:"intent"`
	Part       int       `json:"part"`
	Source     string    `json:"source"`
	Model      string    `json:"model,omitempty"`
	Requests   int       `json:"requests"`
	Bytes      int64     `json:"bytes"`
	FileID     string    `json:"input_file_id,omitempty"`
	BatchID    string    `json:"batch_id,omitempty"`
	APIBase    string    `json:"api_base,omitempty"`
	SpooledAt  time.Time `json:"spooled_at"`
	UploadedAt time.Time `json:"uploaded_at,omitzero"`
	CreatedAt  time.Time `json:"created_at,omitzero"`
	LastError  string    `json:"last_error,omitempty"`
}

// ListIntents reads the journals of every run directory under spoolDir, unfinished ones only unless all. It only
// reads: a run in progress may change them as it goes.
func ListIntents(spoolDir string, all bool) ([]IntentInfo, error) {
	dirs, err := runDirs(spoolDir)
	if err != nil {
		return nil, err
	}
	var out []IntentInfo
	for _, dir := range dirs {
		js, err := loadJournals(dir)
		if err != nil {
			return nil, err
		}
		for _, j := range js {
			if j.State == StateCreated && !all {
				continue
			}
			out = append(out, IntentInfo{
				Journal: j.path, State: j.State, Intent: j.Intent, Part: j.Part, Source: j.Source, Model: j.Model,
				Requests: j.Requests, Bytes: j.Bytes, FileID: j.FileID, BatchID: j.BatchID, APIBase: j.APIBase,
				SpooledAt: j.SpooledAt, UploadedAt: j.UploadedAt, CreatedAt: j.CreatedAt, LastError: j.LastError,
			})
		}
	}
	return out, nil
}

// ErrIntentNotFound: no unfinished intent has that ID or journal path.
var ErrIntentNotFound = errors.New("no unfinished intent with that ID or journal")

// abandonedSuffix replaces the journal suffix of an abandoned intent: the record stays, and no run reads it.
const abandonedSuffix = ".abandoned.json"

// AbandonIntent gives up an unfinished intent, named by its ID or its journal's path: its journal is renamed so
// no run finishes it, and its spool file is removed. A later run of the same input submits that content anew. If
// the intent was uploaded, its batch may exist already (a create whose answer was lost): abandoning it is then
// the user's decision to risk a second batch. It returns the abandoned journal's new path.
func AbandonIntent(spoolDir, ref string) (string, error) {
	dirs, err := runDirs(spoolDir)
	if err != nil {
		return "", err
	}
	for _, dir := range dirs {
		js, err := loadJournals(dir)
		if err != nil {
			return "", err
		}
		for _, j := range js {
			if j.State == StateCreated || (j.Intent != ref && j.path != ref && filepath.Base(j.path) != ref) {
				continue
			}
			lock, err := lockRunDir(dir)
			if err != nil {
				return "", err
			}
			defer lock.Unlock()
			to := strings.TrimSuffix(j.path, journalSuffix) + "-" + j.Intent[:8] + abandonedSuffix
			if err := os.Rename(j.path, to); err != nil {
				return "", fmt.Errorf("abandon intent: %w", err)
			}
			if err := os.Remove(j.spoolPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("abandon intent: %w", err)
			}
			return to, syncDir(dir)
		}
	}
	return "", fmt.Errorf("%q: %w", ref, ErrIntentNotFound)
}

func runDirs(spoolDir string) ([]string, error) {
	entries, err := os.ReadDir(spoolDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read spool dir: %w", err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasSuffix(e.Name(), ".dry-run") {
			dirs = append(dirs, filepath.Join(spoolDir, e.Name()))
		}
	}
	return dirs, nil
}
