// Package files cleans up the API files of tracked batches. It lists the input, output and error files the batch-ID
// table names, with what the API says of each (size, age, expiry), and deletes those no batch needs any more,
// recording each deletion so that a re-run does not send it again.
//
// What a batch needs is decided in store (store.FileQuery); the calls to a provider's Files API go through the small
// API interface, so a provider without files (Anthropic's batches take their requests inline) has nothing to clean.
package files

import (
	"context"
	"errors"
	"time"
)

// ErrGone: the API has no such file (it expired, or it was deleted).
var ErrGone = errors.New("the API has no such file")

// Object is what the API says of one file.
type Object struct {
	ID        string
	Bytes     int64
	CreatedAt time.Time
	ExpiresAt *time.Time // nil: the file does not expire
	Purpose   string
}

// API is the part of a provider's Files API that clean-up calls.
type API interface {
	// Get returns what the API says of one file; an error wrapping ErrGone when it has no such file.
	Get(ctx context.Context, fileID string) (Object, error)
	// List calls fn with each file the API holds, page by page, until fn returns false or the files run out.
	List(ctx context.Context, fn func(Object) bool) error
	// Delete deletes one file; an error wrapping ErrGone when the API had no such file.
	Delete(ctx context.Context, fileID string) error
}
