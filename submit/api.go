package submit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
)

// retry runs op with exponential backoff while its error is transient.
func (r *run) retry(ctx context.Context, what string, op func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = r.opts.RetryInitial
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := op()
		if err == nil {
			return struct{}{}, nil
		}
		if ctx.Err() != nil {
			return struct{}{}, backoff.Permanent(ctx.Err())
		}
		wait, transient := transientError(err)
		if !transient {
			return struct{}{}, backoff.Permanent(err)
		}
		r.log.Warn("transient API error, retrying", "op", what, "err", err)
		if wait > 0 {
			return struct{}{}, backoff.RetryAfter(int((wait + time.Second - 1) / time.Second))
		}
		return struct{}{}, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(r.opts.RetryMaxElapsed))
	return err
}

// transientError tells an error worth retrying (429, 408, 409, 5xx, a failed connection) from one that is not (any
// other API answer), and how long the API asked to wait.
func transientError(err error) (wait time.Duration, transient bool) {
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		return 0, !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
	}
	switch code := apiErr.StatusCode; {
	case code == http.StatusTooManyRequests:
		return retryAfter(apiErr.Response), true
	case code == http.StatusRequestTimeout, code == http.StatusConflict, code >= 500:
		return 0, true
	default:
		return 0, false
	}
}

func retryAfter(res *http.Response) time.Duration {
	if res == nil {
		return 0
	}
	if ms, err := strconv.ParseFloat(res.Header.Get("Retry-After-Ms"), 64); err == nil && ms > 0 {
		return time.Duration(ms * float64(time.Millisecond))
	}
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// upload sends a spool file to POST /v1/files, streamed from disk: the multipart body is a head, the file, and a
// tail, read in turn, with its exact length announced. openai-go's Files.New would build the whole body in memory
// first. Each attempt reads the file again from the start, since a failed attempt consumed the body.
func (r *run) upload(ctx context.Context, path string) (string, error) {
	var fileID string
	err := r.retry(ctx, "upload "+filepath.Base(path), func() error {
		id, err := r.uploadOnce(ctx, path)
		fileID = id
		return err
	})
	if err != nil {
		return "", fmt.Errorf("upload batch file %s: %w", path, err)
	}
	return fileID, nil
}

func (r *run) uploadOnce(ctx context.Context, path string) (string, error) {
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
	body := io.MultiReader(&head, &countingReader{r: f, n: &r.opts.Progress.BytesUploaded}, bytes.NewReader(tail))

	var file openai.FileObject
	err = r.opts.Client.Post(ctx, "files", nil, &file,
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
	if file.ID == "" {
		return "", errors.New("upload answered without a file id")
	}
	return file.ID, nil
}

type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n interface{ Add(int64) int64 }
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// create creates the batch of an uploaded intent. A create whose answer was lost may have happened, so before every
// attempt after such a failure, and before the first one when mayExist (an earlier run got this far), it looks for
// the batch by the intent's metadata. SDK retries are off for the same reason: they would create blindly.
func (r *run) create(ctx context.Context, j *journal, mayExist bool) (*openai.Batch, bool, error) {
	var (
		batch    *openai.Batch
		existing bool
	)
	err := r.retry(ctx, "create batch for "+j.SpoolFile, func() error {
		if mayExist {
			b, err := r.reconcile(ctx, j)
			if err != nil {
				return err
			}
			if b != nil {
				batch, existing = b, true
				return nil
			}
		}
		b, err := r.opts.Client.Batches.New(ctx, openai.BatchNewParams{
			CompletionWindow: CompletionWindow,
			Endpoint:         openai.BatchNewParamsEndpoint(j.Endpoint),
			InputFileID:      j.FileID,
			Metadata:         shared.Metadata(j.Metadata),
		}, option.WithMaxRetries(0))
		if err != nil {
			if _, transient := transientError(err); transient {
				mayExist = true
			}
			return err
		}
		batch = b
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("create batch for %s: %w", j.spoolPath(), err)
	}
	return batch, existing, nil
}

// reconcile lists recent batches, newest first, back to shortly before the intent's upload, and returns the one
// carrying the intent's metadata, or nil.
func (r *run) reconcile(ctx context.Context, j *journal) (*openai.Batch, error) {
	since := j.UploadedAt.Add(-r.opts.ReconcileSlack).Unix()
	params := openai.BatchListParams{Limit: openai.Int(100)}
	for page := 0; page < r.opts.ReconcilePages; page++ {
		res, err := r.opts.Client.Batches.List(ctx, params, option.WithMaxRetries(0))
		if err != nil {
			return nil, err
		}
		for i := range res.Data {
			b := &res.Data[i]
			if b.Metadata[MetaIntent] == j.Intent && b.Metadata[MetaSpoolSHA256] == j.SpoolSHA256 {
				r.log.Info("found the batch of an interrupted create", "batch_id", b.ID, "spool_file", j.SpoolFile)
				return b, nil
			}
			if b.CreatedAt < since {
				return nil, nil
			}
		}
		if !res.HasMore || len(res.Data) == 0 {
			return nil, nil
		}
		params.After = openai.String(res.Data[len(res.Data)-1].ID)
	}
	return nil, nil
}
