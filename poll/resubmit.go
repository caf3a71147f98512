package poll

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// Defaults of the Resubmitter.
const (
	DefaultMaxAttempts = 3
	// DefaultTokenLimitBackoff is how long after a token_limit_exceeded failure its batch is sent again: long enough
	// for the batches that filled the model's enqueued-token quota to make room.
	DefaultTokenLimitBackoff = 15 * time.Minute
)

// Metadata keys of a resubmitted batch, beside the submitter's.
const (
	MetaParent  = "batchctl_parent"
	MetaRoot    = "batchctl_root"
	MetaAttempt = "batchctl_attempt"
)

// ErrNotYet: the batch will be resubmitted, but not before its back-off has passed.
var ErrNotYet = errors.New("not yet")

// errBusy: another process holds the batch's resubmission lock.
var errBusy = errors.New("another process is resubmitting this batch")

// Resubmitter sends again the requests of ended batches that failed for a retryable cause (store.RetryableSQL)
// or never ran (missing from the results), and whole batches that failed with token_limit_exceeded. Successes and
// final failures are never resent. Each parent gets at most one child, found again by its metadata after a crash,
// so a resubmission is never made twice.
type Resubmitter struct {
	Store *store.Store
	// Providers are the batch APIs this process has credentials for.
	Providers provider.Set
	Logger    *slog.Logger
	// MaxAttempts bounds a lineage: a batch of attempt MaxAttempts is not resubmitted; its failures stay final.
	MaxAttempts       int
	TokenLimitBackoff time.Duration
	// Dir holds the request file of a child while it is built and uploaded; os.TempDir() when empty.
	Dir string
	// Pack is how many failed records of a packed request a child's request carries (DefaultResubmitPack, one,
	// when 0): each record is sent again alone by default, the fallback to individual calls.
	Pack int
}

// Resubmission reports what Resubmit did with one batch.
type Resubmission struct {
	BatchID  string `json:"batch_id"`
	Child    string `json:"resubmitted_as,omitempty"`
	Requests int    `json:"requests"`
	// Skipped says why nothing was sent, when nothing was.
	Skipped string `json:"skipped,omitempty"`
}

func (r *Resubmitter) log() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// Resubmit handles one ended batch. It returns ErrNotYet (wrapped, with the wait) for a token-limit failure whose
// back-off has not passed.
func (r *Resubmitter) Resubmit(ctx context.Context, batchID string) (Resubmission, error) {
	res := Resubmission{BatchID: batchID}
	unlock, ok, err := r.Store.LockResubmit(ctx, batchID)
	if err != nil {
		return res, err
	}
	if !ok {
		return res, errBusy
	}
	defer unlock()

	p, err := r.Store.GetBatch(ctx, batchID)
	if err != nil {
		return res, err
	}
	all, skip, err := r.plan(p)
	if err != nil || skip != "" {
		res.Skipped, res.Child = skip, p.ResubmittedAs
		return res, err
	}

	api, err := r.Providers.Get(p.Provider)
	if err != nil {
		return res, fmt.Errorf("resubmit %s: %w", p.BatchID, err)
	}
	if p.InputFileID == "" {
		// Anthropic takes the requests inline and gives no copy back: there is nothing to resend from.
		res.Skipped = "the provider keeps no input file to resend from (" + api.Name() + ")"
		return res, nil
	}
	// A child created before a crash carries the parent in its metadata: find it before building another.
	if child, err := api.FindIntent(ctx, provider.Intent{Since: *p.EndedAt, Match: isChildOf(p.BatchID)}); err != nil {
		return res, fmt.Errorf("look for an earlier resubmission of %s: %w", p.BatchID, err)
	} else if child != nil {
		r.log().Info("found the resubmission of an interrupted run", "batch_id", p.BatchID, "child", child.BatchID)
		n, _ := strconv.Atoi(child.Metadata[MetaRequests])
		return r.record(ctx, res, p, *child, n)
	}

	var done map[string]struct{}
	if !all {
		if done, err = r.Store.FinalCustomIDs(ctx, p.BatchID); err != nil {
			return res, err
		}
	}
	pp, err := r.packedParentOf(ctx, p)
	if err != nil {
		return res, err
	}
	var (
		path, sum string
		n         int
		childPack store.Pack
		childRecs []store.PackedRecord
	)
	switch {
	case pp != nil && !all:
		path, n, sum, childRecs, err = r.spoolPacked(ctx, api, p, pp, done)
		childPack = store.Pack{Endpoint: pp.pack.Endpoint, Size: r.packSize(), AnswerSchema: pp.pack.AnswerSchema}
	case pp != nil:
		// The whole batch again (token_limit_exceeded): its requests as they were, packed as they were, so its file
		// is the parent's, whose map the child shares.
		path, n, sum, err = r.spool(ctx, api, p, nil)
		childPack = pp.pack
		if err == nil && sum != p.SpoolSHA256 {
			err = fmt.Errorf("resubmit %s whole: its input file is not the file submit recorded (sha256 %s, not %s)", p.BatchID, sum, p.SpoolSHA256)
		}
	default:
		path, n, sum, err = r.spool(ctx, api, p, done)
	}
	if path != "" {
		defer os.Remove(path)
	}
	if err != nil {
		return res, err
	}
	if n == 0 {
		res.Skipped = "no request to resend"
		return res, r.Store.RecordResubmission(ctx, p.BatchID, nil, 0)
	}
	if pp != nil {
		// Before the child exists, as submit does: its loader finds which record each answer belongs to.
		childPack.SpoolSHA256 = sum
		if err := r.Store.SavePack(ctx, childPack, recordsSeq(childRecs)); err != nil {
			return res, err
		}
	}
	fileID, err := api.Stage(ctx, path)
	if err != nil {
		return res, err
	}
	child, _, err := api.Create(ctx, provider.Intent{
		Endpoint: p.Endpoint, InputFileID: fileID, Path: path, Requests: n, Since: *p.EndedAt, Match: isChildOf(p.BatchID),
		Metadata: r.childMetadata(p, n, sum, childPack.Size), OutputExpiresAfter: p.OutputExpiresAfter,
	}, false) // the search above covered an earlier run; Create still searches again after a lost answer
	if err != nil {
		return res, err
	}
	return r.record(ctx, res, p, child, n)
}

// MetaRequests records on a child how many requests it carries.
const MetaRequests = "batchctl_requests"

func isChildOf(parentID string) func(*store.Batch) bool {
	return func(b *store.Batch) bool { return b.Metadata[MetaParent] == parentID }
}

// plan decides whether p is resubmitted, and whether whole (token_limit_exceeded) or by its retryable requests.
func (r *Resubmitter) plan(p store.Batch) (all bool, skip string, err error) {
	maxAttempts := cmp.Or(r.MaxAttempts, DefaultMaxAttempts)
	switch {
	case p.ResubmittedAt != nil:
		return false, "already resubmitted", nil
	case !store.IsTerminal(p.Status) || p.ResultsLoadedAt == nil || p.EndedAt == nil:
		return false, "not ended and loaded yet", nil
	case p.Status == store.StatusCancelled:
		return false, "cancelled: not resent", nil
	case p.Attempt >= maxAttempts:
		return false, fmt.Sprintf("attempt %d of %d: failures are final", p.Attempt, maxAttempts), nil
	case p.Status == store.StatusFailed:
		if !strings.Contains(string(p.Errors), "token_limit_exceeded") {
			return false, "failed validation: not retryable", nil
		}
		if wait := time.Until(p.EndedAt.Add(cmp.Or(r.TokenLimitBackoff, DefaultTokenLimitBackoff))); wait > 0 {
			return false, "", fmt.Errorf("token_limit_exceeded back-off, %s left: %w", wait.Round(time.Second), ErrNotYet)
		}
		return true, "", nil
	}
	return false, "", nil
}

// spool streams p's input file from the API into a local request file, keeping the lines whose custom_id is not in
// done (nil done keeps every line). It returns the file, its line count and sha256.
func (r *Resubmitter) spool(ctx context.Context, api provider.Provider, p store.Batch, done map[string]struct{}) (path string, n int, sum string, err error) {
	resp, err := api.Open(ctx, p.InputFileID, 0)
	if err != nil {
		return "", 0, "", fmt.Errorf("download input file %s of %s: %w", p.InputFileID, p.BatchID, err)
	}
	defer resp.Close()
	out, err := r.createFile(p.BatchID)
	if err != nil {
		return "", 0, "", err
	}
	defer out.close(&err)
	rd := jsonl.NewReader(resp, p.InputFileID, 0)
	for {
		line, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out.path(), 0, "", fmt.Errorf("read input file %s of %s: %w", p.InputFileID, p.BatchID, err)
		}
		if done != nil {
			if _, final := done[jsonl.Peek(line, "custom_id").Str]; final {
				continue
			}
		}
		out.line(line)
	}
	sum, err = out.finish()
	return out.path(), out.n, sum, err
}

// resubmissionFile is a child batch's request file as it is written: through a buffer to disk, hashed on the way.
type resubmissionFile struct {
	f *os.File
	h hash.Hash
	w *bufio.Writer
	n int // lines written
}

// createFile creates the request file of a child of parentID in the resubmitter's directory.
func (r *Resubmitter) createFile(parentID string) (*resubmissionFile, error) {
	f, err := os.CreateTemp(r.Dir, "resubmit-"+parentID+"-*.jsonl")
	if err != nil {
		return nil, fmt.Errorf("create resubmission file: %w", err)
	}
	h := sha256.New()
	return &resubmissionFile{f: f, h: h, w: bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)}, nil
}

func (o *resubmissionFile) path() string { return o.f.Name() }

// line appends one request line. A bufio.Writer keeps its first error and reports it at finish.
func (o *resubmissionFile) line(b []byte) {
	_, _ = o.w.Write(b)
	_ = o.w.WriteByte('\n')
	o.n++
}

// finish writes the file through to the disk and returns its sha256.
func (o *resubmissionFile) finish() (string, error) {
	if err := o.w.Flush(); err != nil {
		return "", fmt.Errorf("write resubmission file: %w", err)
	}
	if err := o.f.Sync(); err != nil {
		return "", fmt.Errorf("write resubmission file: %w", err)
	}
	return hex.EncodeToString(o.h.Sum(nil)), nil
}

// close closes the file, setting *err to the close's error when it was nil.
func (o *resubmissionFile) close(err *error) {
	if cerr := o.f.Close(); *err == nil && cerr != nil {
		*err = cerr
	}
}

func (r *Resubmitter) childMetadata(p store.Batch, n int, sum string, packSize int) map[string]string {
	m := map[string]string{
		MetaParent:               p.BatchID,
		MetaRoot:                 p.RootBatchID,
		MetaAttempt:              strconv.Itoa(p.Attempt + 1),
		MetaRequests:             strconv.Itoa(n),
		batchapi.MetaSpoolSHA256: sum,
	}
	if packSize > 0 {
		m[batchapi.MetaPack] = strconv.Itoa(packSize)
	}
	if src := p.Source; src != "" {
		m[batchapi.MetaSource] = batchapi.Truncate(src, batchapi.MaxMetadataValueLen)
	}
	return m
}

// record tracks the child with its lineage and marks the parent, in one transaction.
func (r *Resubmitter) record(ctx context.Context, res Resubmission, p store.Batch, child store.Batch, n int) (Resubmission, error) {
	row := child
	row.Source, row.RootBatchID, row.ParentBatchIDs, row.Attempt = p.Source, p.RootBatchID, []string{p.BatchID}, p.Attempt+1
	row.SpoolSHA256 = child.Metadata[batchapi.MetaSpoolSHA256]
	// The child counts against its model's quota while in flight, as its share of the parent's estimate; the API
	// names no model before validation.
	row.Model = cmp.Or(row.Model, p.Model)
	row.EstimatedTokens = childEstimate(p, n)
	row.OutputExpiresAfter = p.OutputExpiresAfter // the child's files expire as its parent's were asked to
	if err := r.Store.RecordResubmission(ctx, p.BatchID, &row, n); err != nil {
		return res, err
	}
	r.log().Info("resubmitted", "batch_id", p.BatchID, "child", child.BatchID, "requests", n, "attempt", row.Attempt)
	res.Child, res.Requests = child.BatchID, n
	return res, nil
}

// resubmitWorker runs the Resubmitter for the daemon (poll --resubmit).
type resubmitWorker struct {
	river.WorkerDefaults[store.ResubmitArgs]
	d *Daemon
}

func (w *resubmitWorker) Timeout(*river.Job[store.ResubmitArgs]) time.Duration {
	return w.d.cfg.LoadTimeout
}

func (w *resubmitWorker) Work(ctx context.Context, job *river.Job[store.ResubmitArgs]) error {
	_, err := w.d.resubmitter().Resubmit(ctx, job.Args.BatchID)
	switch {
	case err == nil:
		// The parent's input is read no more, unless its lineage still needs it.
		w.d.deleteFiles(ctx, job.Args.BatchID)
		return nil
	case errors.Is(err, ErrNotYet):
		return river.JobSnooze(w.d.cfg.Interval.Max)
	case errors.Is(err, errBusy):
		return river.JobSnooze(w.d.cfg.Interval.Min)
	}
	w.d.log.Warn("resubmission failed; retrying", "batch_id", job.Args.BatchID, "error", err)
	return shutdownAware(ctx, err)
}

// childEstimate is a child's share of its parent's estimated tokens for n of its requests, rounded up: all of it
// when the parent's request total is unknown (a batch failed before it ran). Nil when the parent has no estimate.
func childEstimate(p store.Batch, n int) *int64 {
	if p.EstimatedTokens == nil {
		return nil
	}
	est := *p.EstimatedTokens
	if p.RequestTotal > 0 && n < p.RequestTotal {
		est = (est*int64(n) + int64(p.RequestTotal) - 1) / int64(p.RequestTotal)
	}
	return &est
}
