package submit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/cost"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/provider"
)

// maxReportedErrors bounds the record errors collected from a bounded input before the run gives up reading it.
const maxReportedErrors = 20

type run struct {
	opts    *Options
	log     *slog.Logger
	enc     *json.Encoder
	emitted map[string]bool
	api     provider.Provider
	// runID is this run's ID, in every batch's metadata (MetaRun): consumers keep a run's batches together. See
	// newRunID.
	runID string
	spent cost.Pico // the estimates of the batches this run sent, against MaxCost
}

// Run submits the records of opts.Inputs, after finishing the unfinished intents found in opts.SpoolDir. It
// returns the first record error (a *jsonl.RecordError, several joined for a bounded input) when the input is bad
// and SkipInvalid is off; nothing from a bad bounded input is uploaded.
func Run(ctx context.Context, opts Options) error {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return err
	}
	if opts.Endpoint == jsonl.EndpointVideos && len(opts.Inputs) > 0 {
		opts.Logger.Warn("/v1/videos is deprecated (since 2026-08): the API may refuse its batches, and their answers are video jobs whose videos are fetched from /v1/videos/{id}/content, which batchctl does not load")
	}
	r := &run{opts: &opts, log: opts.Logger, enc: json.NewEncoder(opts.Out), emitted: map[string]bool{}, runID: newRunID(time.Now())}
	r.api = r.apiClient()
	if err := os.MkdirAll(opts.SpoolDir, 0o700); err != nil {
		return fmt.Errorf("create spool dir: %w", err)
	}
	var aside []SetAside
	if !opts.DryRun {
		var err error
		if aside, err = r.resumeAll(ctx); err != nil {
			return err
		}
	}
	if opts.Resume || len(opts.Inputs) == 0 {
		if len(aside) > 0 {
			return &SetAsideError{Intents: aside}
		}
		return nil
	}
	return r.submit(ctx)
}

// resumeAll finishes the unfinished intents of every run directory no other process holds. An intent that cannot
// be finished now is set aside, with a warning and its error saved in its journal, and the others go on: one dead
// intent never blocks the rest. It returns the intents set aside.
func (r *run) resumeAll(ctx context.Context) ([]SetAside, error) {
	dirs, err := runDirs(r.opts.SpoolDir)
	if err != nil {
		return nil, err
	}
	var aside []SetAside
	for _, dir := range dirs {
		more, err := r.resumeDir(ctx, dir)
		if err != nil {
			return aside, err
		}
		aside = append(aside, more...)
	}
	return aside, nil
}

// SetAside is an intent a run could not finish, and why. It stays in its journal: a later run tries it again, and
// `batchctl intents abandon` gives it up.
type SetAside struct {
	Journal string
	State   string
	Err     error
}

// SetAsideError is Run's error when it was asked only to resume and some intents could not be finished.
type SetAsideError struct{ Intents []SetAside }

// Unwrap returns the intents' errors, so that errors.As finds an API error among them.
func (e *SetAsideError) Unwrap() []error {
	errs := make([]error, len(e.Intents))
	for i, a := range e.Intents {
		errs[i] = a.Err
	}
	return errs
}

func (e *SetAsideError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d unfinished intents set aside (inspect them with `batchctl intents`, give one up with `batchctl intents abandon`):", len(e.Intents))
	for _, a := range e.Intents {
		fmt.Fprintf(&b, "\n  %s (%s): %v", a.Journal, a.State, a.Err)
	}
	return b.String()
}

func (r *run) resumeDir(ctx context.Context, dir string) ([]SetAside, error) {
	lock, err := lockRunDir(dir)
	if errors.Is(err, ErrRunDirBusy) {
		r.log.Debug("skipping a run directory in use", "dir", dir)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	js, err := prepareDir(dir)
	if err != nil {
		return nil, err
	}
	var aside []SetAside
	for _, j := range js {
		if j.State == StateCreated {
			continue
		}
		if ctx.Err() != nil {
			return aside, ctx.Err()
		}
		ours, err := r.ours(ctx, j)
		if err == nil && !ours {
			continue
		}
		if err == nil {
			r.log.Info("finishing an unfinished intent", "journal", j.path, "state", j.State)
			err = r.finish(ctx, j)
		}
		if err != nil {
			if ctx.Err() != nil {
				return aside, err
			}
			r.log.Warn("setting aside an intent that cannot be finished now; other input goes on", "journal", j.path,
				"state", j.State, "error", err)
			j.LastError = err.Error()
			if serr := j.save(); serr != nil {
				return aside, serr
			}
			aside = append(aside, SetAside{Journal: j.path, State: j.State, Err: err})
		}
	}
	return aside, nil
}

func spoolFiles(js []*journal) map[string]bool {
	keep := make(map[string]bool, len(js))
	for _, j := range js {
		keep[j.SpoolFile] = true
	}
	return keep
}

// runKey names the run directory of a command line: the same inputs with the same options that shape the batch
// files find the journals of their earlier runs there.
func runKey(o *Options) (string, error) {
	var ids []string
	for _, in := range o.Inputs {
		if in.Reader != nil {
			ids = append(ids, "stream:"+in.Name)
			continue
		}
		abs, err := filepath.Abs(in.Path)
		if err != nil {
			return "", err
		}
		ids = append(ids, "file:"+abs)
	}
	meta := make([]string, 0, len(o.Metadata))
	for k, v := range o.Metadata {
		meta = append(meta, k+"="+v)
	}
	sort.Strings(meta)
	shape := []any{ids, o.Format, o.Endpoint, o.Model, o.System, o.TextField, o.IDField,
		o.Template, o.MaxRequests, o.MaxBytes, meta}
	if o.MaxTokens > 0 { // only then, so that the run directories of earlier versions keep their names
		shape = append(shape, o.MaxTokens)
	}
	if o.ProviderName != provider.OpenAI || o.MaxOutputTokens > 0 { // likewise
		shape = append(shape, o.ProviderName, o.MaxOutputTokens)
	}
	if o.Endpoint == jsonl.EndpointImageEdits { // likewise
		shape = append(shape, o.ImageField)
	}
	if o.Pack > 0 { // likewise
		shape = append(shape, o.Pack, string(o.AnswerSchema))
	}
	shapeJSON, err := json.Marshal(shape)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(shapeJSON)
	name := "input"
	if len(o.Inputs) > 0 {
		name = strings.Map(func(c rune) rune {
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' {
				return c
			}
			return '_'
		}, batchapi.Truncate(o.Inputs[0].Name, 40))
	}
	return name + "-" + hex.EncodeToString(sum[:8]), nil
}

// bounded reports whether every input is a regular file, which can be validated whole before any upload; a stream
// cannot be, so its batches go as they fill.
func (r *run) bounded() (bool, error) {
	for _, in := range r.opts.Inputs {
		if in.Reader != nil {
			return false, nil
		}
		st, err := os.Stat(in.Path)
		if err != nil {
			return false, fmt.Errorf("open input: %w", err)
		}
		if !st.Mode().IsRegular() {
			return false, nil
		}
	}
	return true, nil
}

func (r *run) warnRejected() {
	if n := r.opts.Progress.Rejected.Load(); n > 0 {
		r.log.Warn("skipped invalid records", "count", n)
	}
}

// reject writes a bad record and its reason to the rejects file as one JSON line.
func (r *run) reject(re *jsonl.RecordError, line []byte) error {
	type rejected struct {
		Source string  `json:"source"`
		Line   int     `json:"line"`
		Reason string  `json:"reason"`
		Record *string `json:"record,omitempty"`
	}
	rej := rejected{Source: re.Source, Line: re.Line, Reason: re.Reason}
	if len(line) > 0 { // a line too long to hold comes as an empty slice: no record, rather than ""
		s := string(line)
		rej.Record = &s
	}
	b, err := json.Marshal(rej)
	if err != nil {
		return err
	}
	if _, err := r.opts.Rejects.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write rejects: %w", err)
	}
	return nil
}

// metadata is what a batch carries: the user's pairs and batchctl's own, by which a lost create is recognised.
func (r *run) metadata(source string, part int, sha, intent string) map[string]string {
	m := make(map[string]string, len(r.opts.Metadata)+4)
	for k, v := range r.opts.Metadata {
		m[k] = v
	}
	if sha != "" {
		m[MetaSpoolSHA256] = sha
	}
	m[MetaIntent] = intent
	m[MetaSource] = source
	m[MetaPart] = strconv.Itoa(part)
	m[MetaRun] = r.runID
	if r.opts.Pack > 0 {
		m[MetaPack] = strconv.Itoa(r.opts.Pack)
	}
	return m
}

// newRunID names a run: its start in nanoseconds (16 hex digits, so IDs sort by start) and 8 random hex digits. The
// export orders runs by their first batch's creation, which the API gives in whole seconds; two runs started within
// the same second are then ordered by their IDs, that is by their start, not at random.
func newRunID(start time.Time) string {
	return fmt.Sprintf("%016x", uint64(start.UnixNano())) + newIntent()[:8]
}
