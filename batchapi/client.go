package batchapi

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
)

// Defaults of Client's settings.
const (
	DefaultRetryInitial    = 500 * time.Millisecond
	DefaultRetryMaxElapsed = 15 * time.Minute
	// DefaultReconcileSlack widens the window of batches listed when reconciling, for clock skew between this
	// machine and the API.
	DefaultReconcileSlack = 10 * time.Minute
	// DefaultReconcileSettle is how long after a create whose answer was lost a search that finds nothing is
	// trusted: a batch created a moment ago may not be in the list yet, so a search before then is repeated.
	DefaultReconcileSettle = time.Minute
)

// ErrReconcileIncomplete means the search for a batch that may have been created could not cover the whole window
// in which it could have been created. The create is not attempted: it could make a second batch.
var ErrReconcileIncomplete = errors.New("could not confirm that the batch does not exist already; not creating it")

// Metadata keys batchctl writes on every batch it creates, whichever path created it (a submit, a resubmission).
const (
	MetaSpoolSHA256 = "batchctl_spool_sha256" // sha256 of the request file
	MetaSource      = "batchctl_source"       // where the records came from
)

// MetaIntent is the metadata key of the submit intent a batch was cut for (submit.MetaIntent): with
// MetaSpoolSHA256, what recognises an intent's batch in the batch list, whoever creates it (a submit, the admitter).
const MetaIntent = "batchctl_intent"

// MetaRun is the metadata key of the run a submitted batch belongs to: one random ID for all the batches one
// `batchctl submit` process cuts from its inputs (kept in each intent's journal, so a resumed intent keeps its run).
// Two runs may share a source name ("stdin") and part numbers; the run keeps their results apart in input order.
// Resubmissions do not write it: their results are ordered by their root batch's.
const MetaRun = "batchctl_run"

// MetaPack is the metadata key of a batch of packed requests (submit --pack): the most records a request holds.
// The loader unpacks the answers of a batch that has it.
const MetaPack = "batchctl_pack"

// MaxMetadataValueLen is the Batch API's cap on a metadata value, in bytes.
const MaxMetadataValueLen = 512

// Truncate shortens s to at most n bytes (n > 3), never in the middle of a character, marking a cut with "...".
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-3], "") + "..."
}

// CompletionWindow is the only completion window the Batch API offers.
const CompletionWindow = openai.BatchNewParamsCompletionWindow24h

// Client makes the calls. Zero durations take the defaults above.
type Client struct {
	API    *openai.Client
	Logger *slog.Logger
	// RetryInitial and RetryMaxElapsed shape the exponential backoff of uploads and creates.
	RetryInitial    time.Duration
	RetryMaxElapsed time.Duration
	// ReconcileSlack widens the batch list walked before a create that may have happened; ReconcileSettle is how
	// long after a lost create answer a search that finds nothing is trusted. ReconcilePages, when positive, caps
	// the pages walked: a search that reaches the cap fails with ErrReconcileIncomplete, never "not found".
	ReconcileSlack  time.Duration
	ReconcileSettle time.Duration
	ReconcilePages  int
	// FileExpiresAfter, when positive, makes uploaded request files expire that long after their upload
	// (expires_after, 1 h to 30 days); zero keeps the API's default (30 days for purpose batch).
	FileExpiresAfter time.Duration
	// Uploaded, when set, counts the bytes of request files sent (for progress displays).
	Uploaded *atomic.Int64
}

func (c *Client) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Client) retry(ctx context.Context, what string, op func() error) error {
	return Retry{Initial: c.RetryInitial, MaxElapsed: c.RetryMaxElapsed, Logger: c.log()}.Do(ctx, what, op)
}

// Retry is the backoff of the calls that must not be lost, for every provider. Zero durations take the defaults.
type Retry struct {
	Initial, MaxElapsed time.Duration
	Logger              *slog.Logger
}

// Do runs op with exponential backoff while its error is transient, honouring the wait a 429 asked for. When it
// gives up, it returns op's last error: the API's own answer, not the backoff's wrapper of it. An op that must stop
// at once returns backoff.Permanent(err), or an error Classify does not call transient.
func (r Retry) Do(ctx context.Context, what string, op func() error) error {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = cmp.Or(r.Initial, DefaultRetryInitial)
	var last error
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := op()
		if err == nil {
			return struct{}{}, nil
		}
		last = err
		if ctx.Err() != nil {
			return struct{}{}, backoff.Permanent(ctx.Err())
		}
		if Classify(err) != Transient {
			return struct{}{}, backoff.Permanent(err)
		}
		log.Warn("transient API error, retrying", "op", what, "error", Message(err))
		if wait := RetryAfter(err); wait > 0 {
			return struct{}{}, backoff.RetryAfter(int((wait + time.Second - 1) / time.Second))
		}
		return struct{}{}, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(cmp.Or(r.MaxElapsed, DefaultRetryMaxElapsed)))
	if _, ok := errors.AsType[*backoff.RetryAfterError](err); ok {
		// The wait a 429 asked for passes the time left: RetryAfterError carries the wait, not the error.
		return last
	}
	return err
}

// Upload sends the request file at path to POST /v1/files (purpose batch), streamed from disk: the multipart body
// is a head, the file, and a tail, read in turn, with its exact length announced. Each attempt reads the file again
// from the start, since a failed attempt consumed the body. It returns the file ID.
func (c *Client) Upload(ctx context.Context, path string) (string, error) {
	var fileID string
	err := c.retry(ctx, "upload "+filepath.Base(path), func() error {
		id, err := c.uploadOnce(ctx, path)
		fileID = id
		return err
	})
	if err != nil {
		return "", fmt.Errorf("upload batch file %s: %w", path, err)
	}
	return fileID, nil
}

func (c *Client) uploadOnce(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	var head bytes.Buffer
	mw := multipart.NewWriter(&head)
	if err := mw.WriteField("purpose", "batch"); err != nil {
		return "", err
	}
	if c.FileExpiresAfter > 0 {
		if err := mw.WriteField("expires_after[anchor]", "created_at"); err != nil {
			return "", err
		}
		if err := mw.WriteField("expires_after[seconds]", strconv.FormatInt(int64(c.FileExpiresAfter/time.Second), 10)); err != nil {
			return "", err
		}
	}
	if _, err := mw.CreateFormFile("file", filepath.Base(path)); err != nil {
		return "", err
	}
	headLen := head.Len()
	if err := mw.Close(); err != nil { // writes the closing boundary after the head
		return "", err
	}
	tail := bytes.Clone(head.Bytes()[headLen:])
	head.Truncate(headLen)
	size := int64(headLen) + st.Size() + int64(len(tail))
	var file io.Reader = f
	if c.Uploaded != nil {
		file = &countingReader{r: f, n: c.Uploaded}
	}
	body := io.MultiReader(&head, file, bytes.NewReader(tail))

	var obj openai.FileObject
	err = c.API.Post(ctx, "files", nil, &obj,
		option.WithRequestBody(mw.FormDataContentType(), body),
		option.WithMaxRetries(0), // our loop retries, from the start of the file
		option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			req.ContentLength = size
			return next(req)
		}),
	)
	if err != nil {
		return "", err
	}
	if obj.ID == "" {
		return "", errors.New("upload answered without a file id")
	}
	return obj.ID, nil
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Intent is a batch to create, and how to recognise it if an earlier attempt created it already.
type Intent struct {
	Endpoint    string
	InputFileID string
	Metadata    map[string]string
	// Match recognises the intent's batch in the batch list, by metadata only this intent carries.
	Match func(*openai.Batch) bool
	// Since: the batch cannot have been created before this (minus ReconcileSlack); the list walk stops there.
	Since time.Time
	// LastAttempt, when set, is when an earlier run last sent this intent's create: a search that finds nothing is
	// trusted only ReconcileSettle after it.
	LastAttempt time.Time
	// OutputExpiresAfter, when positive, makes the batch's output and error files expire that long after they are
	// created (output_expires_after, 1 h to 30 days); zero keeps the API's default.
	OutputExpiresAfter time.Duration
	// BeforeCreate, when set, is called before each create call, so the caller can record the attempt durably.
	BeforeCreate func(at time.Time) error
}

// Create creates the batch of an intent. A create whose answer was lost may have happened, so before every attempt
// after such a failure, and before the first one when mayExist (an earlier run got this far), it looks for the
// batch with Find; a search that finds nothing is trusted only ReconcileSettle after the lost attempt, and one that
// cannot finish fails the create rather than risk a second batch. existing reports that the batch was found rather
// than created.
func (c *Client) Create(ctx context.Context, in Intent, mayExist bool) (batch *openai.Batch, existing bool, err error) {
	lostAt := in.LastAttempt
	err = c.retry(ctx, "create batch for "+in.InputFileID, func() error {
		if mayExist {
			b, err := c.findSettled(ctx, in, lostAt)
			if err != nil {
				return err
			}
			if b != nil {
				c.log().Info("found the batch of an interrupted create", "batch_id", b.ID, "input_file_id", in.InputFileID)
				batch, existing = b, true
				return nil
			}
		}
		if in.BeforeCreate != nil {
			if err := in.BeforeCreate(time.Now()); err != nil {
				return backoff.Permanent(err)
			}
		}
		params := openai.BatchNewParams{
			CompletionWindow: CompletionWindow,
			Endpoint:         openai.BatchNewParamsEndpoint(in.Endpoint),
			InputFileID:      in.InputFileID,
			Metadata:         shared.Metadata(in.Metadata),
		}
		if in.OutputExpiresAfter > 0 {
			params.OutputExpiresAfter = openai.BatchNewParamsOutputExpiresAfter{Seconds: int64(in.OutputExpiresAfter / time.Second)}
		}
		b, err := c.API.Batches.New(ctx, params, option.WithMaxRetries(0))
		if err != nil {
			// A 429 is refused before anything is created; any other transient failure may hide a create.
			if Classify(err) == Transient && !isStatus(err, http.StatusTooManyRequests) {
				mayExist, lostAt = true, time.Now()
			}
			return err
		}
		batch = b
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("create batch for file %s: %w", in.InputFileID, err)
	}
	return batch, existing, nil
}

// FindIntent looks for the batch of an intent whose create may have happened (its LastAttempt): Find, trusted
// only once ReconcileSettle has passed since that attempt. nil when there is none.
func (c *Client) FindIntent(ctx context.Context, in Intent) (*openai.Batch, error) {
	return c.findSettled(ctx, in, in.LastAttempt)
}

// findSettled is Find, repeated until ReconcileSettle has passed since lostAt while it finds nothing: the list may
// not show a batch created a moment ago.
func (c *Client) findSettled(ctx context.Context, in Intent, lostAt time.Time) (*openai.Batch, error) {
	settle := cmp.Or(c.ReconcileSettle, DefaultReconcileSettle)
	for {
		b, err := c.Find(ctx, in.Since, in.Match)
		if b != nil || err != nil {
			return b, err
		}
		wait := time.Until(lostAt.Add(settle))
		if lostAt.IsZero() || wait <= 0 {
			return nil, nil
		}
		c.log().Info("a lost create may not be listed yet; searching again", "input_file_id", in.InputFileID, "in", wait.Round(time.Second))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(wait, 5*time.Second)):
		}
	}
}

// Find lists batches, newest first, back to since minus ReconcileSlack, and returns the first that match accepts,
// or nil when none does. It fails closed: a search it cannot finish (a page cap reached, a cursor that does not
// advance, a failed call) is an error, never "not found".
func (c *Client) Find(ctx context.Context, since time.Time, match func(*openai.Batch) bool) (*openai.Batch, error) {
	horizon := since.Add(-cmp.Or(c.ReconcileSlack, DefaultReconcileSlack)).Unix()
	params := openai.BatchListParams{Limit: openai.Int(100)}
	for page := 1; ; page++ {
		if c.ReconcilePages > 0 && page > c.ReconcilePages {
			return nil, fmt.Errorf("%w: %d pages of the batch list searched, not yet back to %s",
				ErrReconcileIncomplete, c.ReconcilePages, time.Unix(horizon, 0).UTC().Format(time.RFC3339))
		}
		res, err := c.API.Batches.List(ctx, params, option.WithMaxRetries(0))
		if err != nil {
			return nil, fmt.Errorf("search the batch list: %w", err)
		}
		for i := range res.Data {
			b := &res.Data[i]
			if match(b) {
				return b, nil
			}
			if b.CreatedAt < horizon {
				return nil, nil
			}
		}
		if !res.HasMore {
			return nil, nil
		}
		if len(res.Data) == 0 || params.After.Value == res.Data[len(res.Data)-1].ID {
			return nil, fmt.Errorf("%w: the batch list says it has more but its cursor does not advance", ErrReconcileIncomplete)
		}
		params.After = openai.String(res.Data[len(res.Data)-1].ID)
	}
}

// BatchExists reports whether the API knows the batch: false on 404, an error when it cannot tell.
func (c *Client) BatchExists(ctx context.Context, id string) (bool, error) {
	return c.exists(ctx, "get batch "+id, func() error {
		_, err := c.API.Batches.Get(ctx, id, option.WithMaxRetries(0))
		return err
	})
}

// FileExists reports whether the API knows the file: false on 404, an error when it cannot tell.
func (c *Client) FileExists(ctx context.Context, id string) (bool, error) {
	return c.exists(ctx, "get file "+id, func() error {
		_, err := c.API.Files.Get(ctx, id, option.WithMaxRetries(0))
		return err
	})
}

func (c *Client) exists(ctx context.Context, what string, get func() error) (bool, error) {
	found := true
	err := c.retry(ctx, what, func() error {
		err := get()
		if Classify(err) == NotFound {
			found = false
			return nil
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	return found, nil
}
