package files

import (
	"context"
	"fmt"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/batchctl/batchctl/batchapi"
)

// listPageSize is the largest page GET /v1/files serves.
const listPageSize = 10_000

// OpenAI is API over openai-go's Files service. The SDK retries 408, 409, 429 and 5xx answers itself.
type OpenAI struct {
	Client *openai.Client
}

// Get implements API (GET /v1/files/{id}).
func (o OpenAI) Get(ctx context.Context, fileID string) (Object, error) {
	f, err := o.Client.Files.Get(ctx, fileID)
	if err != nil {
		return Object{}, callError("read", fileID, err)
	}
	return object(f), nil
}

// List implements API (GET /v1/files, every purpose, newest first).
func (o OpenAI) List(ctx context.Context, fn func(Object) bool) error {
	pages := o.Client.Files.ListAutoPaging(ctx, openai.FileListParams{Limit: openai.Int(listPageSize)})
	for pages.Next() {
		f := pages.Current()
		if !fn(object(&f)) {
			return nil
		}
	}
	if err := pages.Err(); err != nil {
		return fmt.Errorf("list files: %w", err)
	}
	return nil
}

// Delete implements API (DELETE /v1/files/{id}).
func (o OpenAI) Delete(ctx context.Context, fileID string) error {
	res, err := o.Client.Files.Delete(ctx, fileID)
	if err != nil {
		return callError("delete", fileID, err)
	}
	if !res.Deleted {
		return fmt.Errorf("delete file %s: the API answered deleted: false", fileID)
	}
	return nil
}

// callError wraps the error of a call on one file, adding ErrGone to a 404.
func callError(op, fileID string, err error) error {
	if batchapi.Classify(err) == batchapi.NotFound {
		return fmt.Errorf("%s file %s: %w: %w", op, fileID, ErrGone, err)
	}
	return fmt.Errorf("%s file %s: %w", op, fileID, err)
}

func object(f *openai.FileObject) Object {
	o := Object{ID: f.ID, Bytes: f.Bytes, CreatedAt: time.Unix(f.CreatedAt, 0), Purpose: string(f.Purpose)}
	if f.ExpiresAt != 0 {
		exp := time.Unix(f.ExpiresAt, 0)
		o.ExpiresAt = &exp
	}
	return o
}
