// Package provider is where batchctl meets a batch API. submit, poll, admission and resubmission speak to a
// Provider; the journal, the spool, the store and the River jobs know nothing of which API is behind it.
//
// Three providers implement it, one package each: provider/openai (the OpenAI Batch API), the same package for
// Azure OpenAI global batch (the same protocol at other paths, with other limits), and provider/anthropic (Message
// Batches, whose requests go inline in the create call).
package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/batchctl/batchctl/store"
)

// Names of the providers, as stored in the batch-ID table's provider column.
const (
	OpenAI    = "openai"
	Azure     = "azure"
	Anthropic = "anthropic"
)

// Names lists every provider, the default first.
var Names = []string{OpenAI, Azure, Anthropic}

// Check reports an unknown provider name.
func Check(name string) error {
	for _, n := range Names {
		if n == name {
			return nil
		}
	}
	return fmt.Errorf("unknown provider %q (want openai, azure or anthropic)", name)
}

// Limits are what one batch may hold.
type Limits struct {
	MaxRequests int
	MaxBytes    int64
}

// Intent is a batch to create, and how to recognise it if an earlier attempt created it already.
type Intent struct {
	// Endpoint is the request lines' url (/v1/chat/completions); InputFileID the staged request file (empty for a
	// provider that takes the requests inline); Path the local request file, in batchctl's spool format.
	Endpoint    string
	InputFileID string
	Path        string
	// Requests is how many requests the file holds.
	Requests int
	Metadata map[string]string
	// Match recognises the intent's batch in the batch list by the metadata only this intent carries. A provider
	// whose batches carry no metadata recognises them its own way (see provider/anthropic).
	Match func(*store.Batch) bool
	// Owned, when set, reports a batch ID some other intent already owns: never this intent's batch. A search that
	// cannot tell fails.
	Owned func(ctx context.Context, batchID string) (bool, error)
	// Since: the batch cannot have been created before this (minus the reconcile slack).
	Since time.Time
	// LastAttempt, when set, is when an earlier run last sent this intent's create: a search that finds nothing is
	// trusted only once the reconcile settle time has passed since.
	LastAttempt time.Time
	// OutputExpiresAfter, when positive, sets the batch's output_expires_after where the provider has it.
	OutputExpiresAfter time.Duration
	// BeforeCreate, when set, is called before each create call, so the caller can record the attempt durably.
	BeforeCreate func(at time.Time) error
}

// Page is one page of the batch list, newest first.
type Page struct {
	Batches []store.Batch
	// Next is the cursor of the following page; HasMore says there is one.
	Next    string
	HasMore bool
}

// Body is an open result or input file: its bytes from the offset asked for.
type Body struct {
	io.ReadCloser
	// Size is the length of the whole file, or -1 when unknown.
	Size int64
	// Partial is true when the body starts at the offset asked for, false when it is the whole file again (a server
	// that ignores Range).
	Partial bool
}

// Provider is one batch API, with one set of credentials.
type Provider interface {
	// Name is the provider's name (OpenAI, Azure, Anthropic).
	Name() string
	// Limits are its per-batch limits.
	Limits() Limits
	// Stage makes a request file available to Create: an upload, or nothing for a provider that takes requests
	// inline (then it returns "").
	Stage(ctx context.Context, path string) (fileID string, err error)
	// Create creates the batch of an intent, or finds the one an earlier attempt created (existing). It never
	// creates twice: a create whose answer was lost is looked for before it is repeated, and a search that cannot
	// finish is an error.
	Create(ctx context.Context, in Intent, mayExist bool) (b store.Batch, existing bool, err error)
	// FindIntent looks for the batch of an intent whose create may have happened; nil when there is none.
	FindIntent(ctx context.Context, in Intent) (*store.Batch, error)
	// Get, List and Cancel read and cancel batches.
	Get(ctx context.Context, id string) (store.Batch, error)
	List(ctx context.Context, cursor string) (Page, error)
	Cancel(ctx context.Context, id string) (store.Batch, error)
	// Open streams a file a batch row names (InputFileID, OutputFileID, ErrorFileID) from byte offset from, in
	// batchctl's line formats: request lines for an input file, OpenAI's output lines for results.
	Open(ctx context.Context, fileID string, from int64) (Body, error)
	// FileExists and BatchExists tell whether the API knows an object: false on 404, an error when it cannot tell.
	FileExists(ctx context.Context, id string) (bool, error)
	BatchExists(ctx context.Context, id string) (bool, error)
}

// Expirer is a provider whose batches' output and error files expire, and can say when.
type Expirer interface {
	// OutputExpiry says when the output and error files of the ended batch b expire, the earlier of the two. While
	// the API has a file, that is the file's own expires_at: exact (the anchor of output_expires_after is the file's
	// creation, which the batch does not report). For a file the API no longer has, it is the latest the file can
	// have expired: b.EndedAt plus b.OutputExpiresAfter, or plus the API's default lifetime. Zero when the files
	// never expire, or b names none.
	OutputExpiry(ctx context.Context, b store.Batch) (time.Time, error)
}

// Renamer is a provider that may send a request under another custom_id than the user's (Anthropic allows fewer
// characters). RequestIDs yields every request of a request file with its line, the user's custom_id and the one
// the API is sent, the same as Create sends them; the submitter records them so results come back under the user's
// IDs.
type Renamer interface {
	RequestIDs(path string) iter.Seq2[store.RequestID, error]
}

// EndpointMessages is the endpoint of Anthropic's Message Batches requests: each request is a Messages API call.
const EndpointMessages = "/v1/messages"

// WireURL is how a provider writes the endpoint in request lines and in the create call: Azure drops the /v1
// prefix ("/chat/completions"); the others keep it.
func WireURL(name, endpoint string) string {
	if name == Azure {
		return strings.TrimPrefix(endpoint, "/v1")
	}
	return endpoint
}

// ErrNoCredentials is the error of a provider whose credentials are not configured.
var ErrNoCredentials = errors.New("no credentials configured")

// Set holds the providers a process has credentials for.
type Set map[string]Provider

// Get returns the named provider, or an error that names the missing credentials.
func (s Set) Get(name string) (Provider, error) {
	if name == "" {
		name = OpenAI
	}
	if p := s[name]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("provider %s: %w (set %s)", name, ErrNoCredentials, CredentialEnv(name))
}

// CredentialEnv names the environment variables a provider's credentials come from.
func CredentialEnv(name string) string {
	switch name {
	case Azure:
		return "AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY"
	case Anthropic:
		return "ANTHROPIC_API_KEY"
	}
	return "OPENAI_API_KEY"
}

// RangeError is an answer to a Range request that is neither the bytes asked for nor the whole file.
type RangeError struct {
	Status       string
	ContentRange string
}

func (e *RangeError) Error() string {
	return "unexpected answer to a Range request: " + e.Status + ", Content-Range " + strconv.Quote(e.ContentRange)
}
