// Package anthropic is the Provider of Anthropic's Message Batches API.
//
// Anthropic has no file upload: a batch's requests go inline in POST /v1/messages/batches. The submitter's spool and
// journal work as for the other providers (the spool file is the request file, and Stage has nothing to do); Create
// streams the spool file as the create call's body, converting each request line
// {"custom_id","method","url","body"} to {"custom_id","params"} on the way, so memory stays flat up to the 256 MB a
// batch may hold.
//
// A custom_id must match ^[a-zA-Z0-9_-]{1,64}$. A file whose IDs all do, each once, is sent under them; otherwise
// every request of the file is sent as r<line> (its line in the file), and RequestIDs tells the submitter the
// mapping, which it records for the loader (store.SaveRequestIDs).
//
// Batches carry no metadata, so a create whose answer was lost cannot be recognised by a tag. Create finds it by
// what it can prove instead; see Find.
//
// Results are JSONL at the batch's results_url, in no particular order. Open converts each line to an OpenAI
// output line, so the loader is the same for every provider: result type succeeded becomes status 200 with the
// message as the response body; errored, canceled and expired become error lines with the API's own error (its
// type as the code) or the result type as the code.
package anthropic

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/cenkalti/backoff/v5"
	"github.com/gofrs/flock"
	"github.com/tidwall/gjson"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// Limits of a Message Batch.
var Limits = provider.Limits{MaxRequests: 100_000, MaxBytes: 256_000_000}

// DefaultMatchWindow is how far from the moment a lost create was sent a batch may have been created, by the API's
// clock, and still be taken for it: clock skew, plus the time the call took.
const DefaultMatchWindow = 2 * time.Minute

// listPageSize is the page of GET /v1/messages/batches (the API allows up to 1 000).
const listPageSize = 100

// Provider is Anthropic's Message Batches behind provider.Provider.
type Provider struct {
	API    *sdk.Client
	Logger *slog.Logger
	// Retry shapes the backoff of creates.
	Retry batchapi.Retry
	// ReconcileSettle is how long after a lost create a search that finds nothing is trusted
	// (batchapi.DefaultReconcileSettle when zero); MatchWindow is DefaultMatchWindow when zero.
	ReconcileSettle time.Duration
	MatchWindow     time.Duration
	// LockPath, when set, is a file whose lock serialises this provider's creates across the processes sharing it
	// (the submitters of one spool directory): two of our creates are then never in flight at once, which is what
	// lets Find tell our batches apart by the moment they were sent.
	LockPath string

	mu sync.Mutex // serialises the creates of this process
}

var (
	_ provider.Provider = (*Provider)(nil)
	_ provider.Renamer  = (*Provider)(nil)
)

// Name implements provider.Provider.
func (p *Provider) Name() string { return provider.Anthropic }

// Limits implements provider.Provider.
func (p *Provider) Limits() provider.Limits { return Limits }

// Stage has nothing to upload: the requests go inline in the create call, from the spool file.
func (p *Provider) Stage(ctx context.Context, path string) (string, error) {
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("stage batch file %s: %w", path, err)
	}
	return "", nil
}

func (p *Provider) log() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// Create implements provider.Provider. A create whose answer was lost (or an earlier run's, with mayExist) is
// looked for with Find before it is sent again; a search cut by a transient failure is retried with backoff, and
// an ambiguous or incomplete one fails the create.
func (p *Provider) Create(ctx context.Context, in provider.Intent, mayExist bool) (store.Batch, bool, error) {
	unlock, err := p.lock(ctx)
	if err != nil {
		return store.Batch{}, false, err
	}
	defer unlock()
	var (
		batch    store.Batch
		existing bool
		lostAt   = in.LastAttempt
	)
	err = p.Retry.Do(ctx, "create message batch of "+in.Path, func() error {
		if mayExist {
			b, err := p.findSettled(ctx, in, lostAt)
			if err != nil {
				// Retried if transient (a list call that failed), as the search is repeated before any create;
				// a search that fails closed (ErrReconcileIncomplete) is permanent.
				return err
			}
			if b != nil {
				p.log().Info("found the batch of an interrupted create", "batch_id", b.BatchID, "spool_file", in.Path)
				batch, existing = *b, true
				return nil
			}
		}
		// The body's length, read before anything is sent: a spool file that cannot be read is a local problem,
		// not a create that may have happened, and retrying will not mend it.
		size, err := createBody(io.Discard, in.Path)
		if err != nil {
			return backoff.Permanent(err)
		}
		if in.BeforeCreate != nil {
			if err := in.BeforeCreate(time.Now()); err != nil {
				return backoff.Permanent(err)
			}
		}
		sent := time.Now()
		b, err := p.send(ctx, in.Path, size)
		if err != nil {
			if batchapi.Classify(err) == batchapi.Transient && !batchapi.IsStatus(err, http.StatusTooManyRequests) {
				mayExist, lostAt = true, sent
			}
			return err
		}
		batch = row(b)
		return nil
	})
	if err != nil {
		return store.Batch{}, false, fmt.Errorf("create message batch: %w", err)
	}
	return batch, existing, nil
}

// lock takes the create lock of this process and, with LockPath, of the processes sharing the spool directory.
func (p *Provider) lock(ctx context.Context) (func(), error) {
	p.mu.Lock()
	if p.LockPath == "" {
		return p.mu.Unlock, nil
	}
	fl := flock.New(p.LockPath)
	if _, err := fl.TryLockContext(ctx, 100*time.Millisecond); err != nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("lock %s: %w", p.LockPath, err)
	}
	return func() {
		_ = fl.Unlock()
		p.mu.Unlock()
	}, nil
}

// send posts the spool file as one create call, its body streamed from disk with its exact length (size, which
// createBody measured) announced.
func (p *Provider) send(ctx context.Context, path string, size int64) (*sdk.MessageBatch, error) {
	pr, pw := io.Pipe()
	go func() {
		_, err := createBody(pw, path)
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	var res sdk.MessageBatch
	err := p.API.Post(ctx, "v1/messages/batches", nil, &res,
		option.WithRequestBody("application/json", pr),
		option.WithMaxRetries(0), // Create retries, after looking for the batch
		option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			req.ContentLength = size
			return next(req)
		}),
	)
	if err != nil {
		return nil, err
	}
	if res.ID == "" {
		return nil, errors.New("create answered without a batch id")
	}
	return &res, nil
}

// FindIntent implements provider.Provider.
func (p *Provider) FindIntent(ctx context.Context, in provider.Intent) (*store.Batch, error) {
	return p.findSettled(ctx, in, in.LastAttempt)
}

// findSettled is Find, repeated while it finds nothing until ReconcileSettle has passed since lostAt: the list may
// not show a batch created a moment ago.
func (p *Provider) findSettled(ctx context.Context, in provider.Intent, lostAt time.Time) (*store.Batch, error) {
	settle := cmp.Or(p.ReconcileSettle, batchapi.DefaultReconcileSettle)
	for {
		b, err := p.Find(ctx, in, lostAt)
		if b != nil || err != nil {
			return b, err
		}
		wait := time.Until(lostAt.Add(settle))
		if lostAt.IsZero() || wait <= 0 {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(wait, 5*time.Second)):
		}
	}
}

// Find looks for the batch a create sent at sentAt made. Anthropic's batches carry no metadata, so it takes the
// batch that the API created within MatchWindow of sentAt, holding exactly in.Requests requests, that no other
// intent owns (in.Owned: the batch IDs other journals and the batch-ID table hold). The creates of one spool
// directory are serialised (LockPath), so two of ours never share that window; should two batches still fit, Find
// refuses to guess (batchapi.ErrReconcileIncomplete) and the intent waits for a person: batchctl intents. A create
// never sent (zero sentAt) made no batch.
func (p *Provider) Find(ctx context.Context, in provider.Intent, sentAt time.Time) (*store.Batch, error) {
	if sentAt.IsZero() {
		return nil, nil
	}
	window := cmp.Or(p.MatchWindow, DefaultMatchWindow)
	from, to := sentAt.Add(-window), sentAt.Add(window)
	var found []store.Batch
	cursor := ""
	for {
		page, err := p.List(ctx, cursor)
		if err != nil {
			return nil, fmt.Errorf("search the batch list: %w", err)
		}
		for _, b := range page.Batches {
			if b.CreatedAt.Before(from) {
				return pick(found, in)
			}
			if b.CreatedAt.After(to) || b.RequestTotal != in.Requests {
				continue
			}
			if in.Owned != nil {
				owned, err := in.Owned(ctx, b.BatchID)
				if err != nil {
					return nil, fmt.Errorf("%w: is batch %s another intent's? %w", batchapi.ErrReconcileIncomplete, b.BatchID, err)
				}
				if owned {
					continue
				}
			}
			found = append(found, b)
		}
		if !page.HasMore {
			return pick(found, in)
		}
		if page.Next == "" || page.Next == cursor {
			return nil, fmt.Errorf("%w: the batch list says it has more but its cursor does not advance", batchapi.ErrReconcileIncomplete)
		}
		cursor = page.Next
	}
}

func pick(found []store.Batch, in provider.Intent) (*store.Batch, error) {
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return &found[0], nil
	}
	ids := make([]string, len(found))
	for i, b := range found {
		ids[i] = b.BatchID
	}
	return nil, fmt.Errorf("%w: %d batches of %d requests were created when the lost create was sent (%v); "+
		"Anthropic batches carry no metadata to tell which is this intent's", batchapi.ErrReconcileIncomplete, len(found), in.Requests, ids)
}

// Get implements provider.Provider.
func (p *Provider) Get(ctx context.Context, id string) (store.Batch, error) {
	b, err := p.API.Messages.Batches.Get(ctx, id, sdk.MessageBatchGetParams{})
	if err != nil {
		return store.Batch{}, err
	}
	return row(b), nil
}

// List implements provider.Provider: newest first, listPageSize a page, the cursor being the last ID of a page.
func (p *Provider) List(ctx context.Context, cursor string) (provider.Page, error) {
	params := sdk.MessageBatchListParams{Limit: sdk.Int(listPageSize)}
	if cursor != "" {
		params.AfterID = sdk.String(cursor)
	}
	res, err := p.API.Messages.Batches.List(ctx, params)
	if err != nil {
		return provider.Page{}, err
	}
	page := provider.Page{Batches: make([]store.Batch, len(res.Data)), HasMore: res.HasMore, Next: res.LastID}
	for i := range res.Data {
		page.Batches[i] = row(&res.Data[i])
	}
	if page.Next == "" && len(res.Data) > 0 {
		page.Next = res.Data[len(res.Data)-1].ID
	}
	return page, nil
}

// Cancel implements provider.Provider.
func (p *Provider) Cancel(ctx context.Context, id string) (store.Batch, error) {
	b, err := p.API.Messages.Batches.Cancel(ctx, id, sdk.MessageBatchCancelParams{})
	if err != nil {
		return store.Batch{}, err
	}
	return row(b), nil
}

// Open implements provider.Provider for a batch's results (fileID is its results_url), converted line by line to
// OpenAI output lines. The converted stream has other offsets than the API's, so a resume (from > 0) reads the
// results again from the start and reports so (Partial false): the caller skips what it has read.
func (p *Provider) Open(ctx context.Context, fileID string, from int64) (provider.Body, error) {
	if fileID == "" {
		return provider.Body{}, errors.New("a message batch has no input file at the API")
	}
	var resp *http.Response
	err := p.API.Get(ctx, fileID, nil, &resp)
	if err != nil {
		return provider.Body{}, err
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(convertResults(pw, resp.Body, fileID))
		resp.Body.Close()
	}()
	return provider.Body{ReadCloser: pr, Size: -1}, nil
}

// FileExists implements provider.Provider: a message batch has no file at the API to lose; its requests are in
// the spool file until the batch exists.
func (p *Provider) FileExists(ctx context.Context, id string) (bool, error) { return true, nil }

// BatchExists implements provider.Provider.
func (p *Provider) BatchExists(ctx context.Context, id string) (bool, error) {
	_, err := p.API.Messages.Batches.Get(ctx, id, sdk.MessageBatchGetParams{})
	switch {
	case err == nil:
		return true, nil
	case batchapi.Classify(err) == batchapi.NotFound:
		return false, nil
	}
	return false, fmt.Errorf("get message batch %s: %w", id, err)
}

// row maps a message batch onto the batch-ID table's row. processing_status in_progress and canceling are
// in_progress and cancelling; ended is cancelled when a cancel was initiated, expired when every request expired,
// completed otherwise. Succeeded requests count as completed; errored, canceled and expired ones as failed.
// output_file_id holds the results_url once the batch has ended.
func row(b *sdk.MessageBatch) store.Batch {
	c := b.RequestCounts
	r := store.Batch{
		BatchID:          b.ID,
		Provider:         provider.Anthropic,
		Endpoint:         provider.EndpointMessages,
		RequestTotal:     int(c.Processing + c.Succeeded + c.Errored + c.Canceled + c.Expired),
		RequestCompleted: int(c.Succeeded),
		RequestFailed:    int(c.Errored + c.Canceled + c.Expired),
		Metadata:         map[string]string{},
		CreatedAt:        b.CreatedAt,
		OutputFileID:     b.ResultsURL,
	}
	switch b.ProcessingStatus {
	case sdk.MessageBatchProcessingStatusInProgress:
		r.Status = store.StatusInProgress
	case sdk.MessageBatchProcessingStatusCanceling:
		r.Status = store.StatusCancelling
	default:
		switch {
		case !b.CancelInitiatedAt.IsZero():
			r.Status = store.StatusCancelled
		case c.Expired > 0 && c.Expired == int64(r.RequestTotal):
			r.Status = store.StatusExpired
		default:
			r.Status = store.StatusCompleted
		}
		if !b.EndedAt.IsZero() {
			ended := b.EndedAt
			r.EndedAt = &ended
		}
	}
	return r
}

// idPattern is what Anthropic accepts as a custom_id.
var idPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// RequestIDs implements provider.Renamer.
func (p *Provider) RequestIDs(path string) iter.Seq2[store.RequestID, error] {
	return func(yield func(store.RequestID, error) bool) {
		keep, err := keepsIDs(path)
		if err != nil {
			yield(store.RequestID{}, err)
			return
		}
		err = eachRequest(path, func(line int, id string, _ []byte) error {
			id = strings.Clone(id) // id is a view of the reader's buffer; r outlives the line
			r := store.RequestID{Line: line, CustomID: id, APICustomID: apiID(keep, id, line)}
			if !yield(r, nil) {
				return errStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			yield(store.RequestID{}, err)
		}
	}
}

var errStop = errors.New("stop")

// keepsIDs reports whether every request of the file may be sent under its own custom_id: each matches idPattern
// and appears once.
//
// The IDs seen are kept as 64-bit FNV-1a hashes, not strings: an ID is a view of the reader's buffer, which the
// next lines overwrite, and hashes keep 100 000 IDs small. Two IDs that collide only send the file as r<line>,
// which is always right, and the hash is the same in every process, so RequestIDs and Create always agree.
func keepsIDs(path string) (bool, error) {
	seen := map[uint64]struct{}{}
	keep := true
	err := eachRequest(path, func(_ int, id string, _ []byte) error {
		if !idPattern.MatchString(id) {
			keep = false
			return errStop
		}
		sum := fnv1a(id)
		if _, dup := seen[sum]; dup {
			keep = false
			return errStop
		}
		seen[sum] = struct{}{}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return false, err
	}
	return keep, nil
}

// fnv1a is the 64-bit FNV-1a hash of s.
func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func apiID(keep bool, id string, line int) string {
	if keep {
		return id
	}
	return "r" + strconv.Itoa(line)
}

// eachRequest calls fn with the line number, custom_id and body of every request line of a spool file. id and body
// are views of the reader's buffer, valid until fn returns: copy what must outlive the line.
func eachRequest(path string, fn func(line int, id string, body []byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rd := jsonl.NewReader(f, path, 0)
	for {
		line, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		id := jsonl.Peek(line, "custom_id")
		body := jsonl.Peek(line, "body")
		if id.Type != gjson.String || !body.IsObject() {
			return fmt.Errorf("%s:%d: not a request line (custom_id and body)", path, rd.Line())
		}
		if err := fn(rd.Line(), id.Str, rawBytes(line, body)); err != nil {
			return err
		}
	}
}

// rawBytes is v's JSON text as a view of line, which v was read from, so that no request's body is copied.
func rawBytes(line []byte, v gjson.Result) []byte {
	if v.Index > 0 && v.Index+len(v.Raw) <= len(line) {
		return line[v.Index : v.Index+len(v.Raw)]
	}
	return []byte(v.Raw) // gjson did not say where v is
}

// createBody writes the create call's body for a spool file: {"requests":[{"custom_id","params"},…]}. It returns
// the bytes written.
func createBody(w io.Writer, path string) (int64, error) {
	keep, err := keepsIDs(path)
	if err != nil {
		return 0, err
	}
	cw := &countWriter{w: bufio.NewWriterSize(w, 1<<20)}
	var buf []byte
	_, _ = cw.Write([]byte(`{"requests":[`))
	first := true
	err = eachRequest(path, func(line int, id string, body []byte) error {
		buf = buf[:0]
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = append(buf, `{"custom_id":`...)
		if keep {
			buf = jsonl.AppendString(buf, id)
		} else { // apiID's r<line>, without a string per request
			buf = append(buf, `"r`...)
			buf = strconv.AppendInt(buf, int64(line), 10)
			buf = append(buf, '"')
		}
		buf = append(buf, `,"params":`...)
		buf = append(buf, body...)
		buf = append(buf, '}')
		_, err := cw.Write(buf)
		return err
	})
	if err != nil {
		return cw.n, err
	}
	if _, err := cw.Write([]byte("]}")); err != nil {
		return cw.n, err
	}
	return cw.n, cw.w.(*bufio.Writer).Flush()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
