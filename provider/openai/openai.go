// Package openai is the Provider of the OpenAI Batch API protocol: OpenAI itself, and Azure OpenAI global batch,
// which speaks the same protocol at its own paths, with its own key header and limits. The calls that must never
// repeat or lose work are batchapi.Client's; this package puts them behind provider.Provider.
package openai

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// Limits of a batch file: OpenAI's, and Azure's (more requests, the same bytes).
var (
	OpenAILimits = provider.Limits{MaxRequests: 50_000, MaxBytes: 200_000_000}
	AzureLimits  = provider.Limits{MaxRequests: 100_000, MaxBytes: 200_000_000}
)

// DefaultOutputLifetime is how long OpenAI keeps a batch's output and error files when the batch was created without
// output_expires_after: 30 days after they are written, as for every file of purpose batch. Azure's have no default
// expiry.
const DefaultOutputLifetime = 30 * 24 * time.Hour

// Provider is the OpenAI protocol behind provider.Provider.
type Provider struct {
	C      *batchapi.Client
	name   string
	limits provider.Limits
}

// New is the OpenAI provider of a client.
func New(c *batchapi.Client) *Provider {
	return &Provider{C: c, name: provider.OpenAI, limits: OpenAILimits}
}

// NewAzure is the Azure OpenAI provider of a client built with AzureOptions.
func NewAzure(c *batchapi.Client) *Provider {
	return &Provider{C: c, name: provider.Azure, limits: AzureLimits}
}

var (
	_ provider.Provider = (*Provider)(nil)
	_ provider.Expirer  = (*Provider)(nil)
)

// Name implements provider.Provider.
func (p *Provider) Name() string { return p.name }

// Limits implements provider.Provider.
func (p *Provider) Limits() provider.Limits { return p.limits }

// Stage uploads the request file (streamed, retried from its start).
func (p *Provider) Stage(ctx context.Context, path string) (string, error) {
	return p.C.Upload(ctx, path)
}

// Create implements provider.Provider with batchapi.Client.Create.
func (p *Provider) Create(ctx context.Context, in provider.Intent, mayExist bool) (store.Batch, bool, error) {
	b, existing, err := p.C.Create(ctx, p.intent(in), mayExist)
	if err != nil {
		return store.Batch{}, false, err
	}
	return p.row(b), existing, nil
}

// FindIntent implements provider.Provider.
func (p *Provider) FindIntent(ctx context.Context, in provider.Intent) (*store.Batch, error) {
	b, err := p.C.FindIntent(ctx, p.intent(in))
	if b == nil || err != nil {
		return nil, err
	}
	row := p.row(b)
	return &row, nil
}

func (p *Provider) intent(in provider.Intent) batchapi.Intent {
	return batchapi.Intent{
		Endpoint: provider.WireURL(p.name, in.Endpoint), InputFileID: in.InputFileID, Metadata: in.Metadata,
		Match: func(b *sdk.Batch) bool {
			// The metadata match recognises the intent's batch; Owned is for providers without metadata.
			row := p.row(b)
			return in.Match(&row)
		},
		Since: in.Since, LastAttempt: in.LastAttempt, OutputExpiresAfter: in.OutputExpiresAfter, BeforeCreate: in.BeforeCreate,
	}
}

// row is the batch-ID table's row of a batch of this provider.
func (p *Provider) row(b *sdk.Batch) store.Batch {
	row := batchapi.Row(b)
	row.Provider = p.name
	return row
}

// Get implements provider.Provider.
func (p *Provider) Get(ctx context.Context, id string) (store.Batch, error) {
	b, err := p.C.API.Batches.Get(ctx, id)
	if err != nil {
		return store.Batch{}, err
	}
	return p.row(b), nil
}

// List implements provider.Provider: GET /v1/batches, 100 a page.
func (p *Provider) List(ctx context.Context, cursor string) (provider.Page, error) {
	params := sdk.BatchListParams{Limit: sdk.Int(100)}
	if cursor != "" {
		params.After = sdk.String(cursor)
	}
	res, err := p.C.API.Batches.List(ctx, params)
	if err != nil {
		return provider.Page{}, err
	}
	page := provider.Page{Batches: make([]store.Batch, len(res.Data)), HasMore: res.HasMore}
	for i := range res.Data {
		page.Batches[i] = p.row(&res.Data[i])
	}
	if n := len(res.Data); n > 0 {
		page.Next = res.Data[n-1].ID
	}
	return page, nil
}

// Cancel implements provider.Provider.
func (p *Provider) Cancel(ctx context.Context, id string) (store.Batch, error) {
	b, err := p.C.API.Batches.Cancel(ctx, id)
	if err != nil {
		return store.Batch{}, err
	}
	return p.row(b), nil
}

// Open implements provider.Provider with GET /v1/files/{id}/content, asking for the bytes from from on with a Range
// request.
func (p *Provider) Open(ctx context.Context, fileID string, from int64) (provider.Body, error) {
	var opts []option.RequestOption
	if from > 0 {
		opts = append(opts, option.WithHeader("Range", "bytes="+strconv.FormatInt(from, 10)+"-"))
	}
	resp, err := p.C.API.Files.Content(ctx, fileID, opts...)
	if err != nil {
		return provider.Body{}, err
	}
	body := provider.Body{ReadCloser: resp.Body, Size: resp.ContentLength}
	if resp.StatusCode == http.StatusPartialContent {
		cr := resp.Header.Get("Content-Range") // bytes START-END/TOTAL
		if !strings.HasPrefix(cr, "bytes "+strconv.FormatInt(from, 10)+"-") {
			resp.Body.Close()
			return provider.Body{}, &provider.RangeError{Status: resp.Status, ContentRange: cr}
		}
		body.Partial = true
		body.Size = -1
		if _, total, ok := strings.Cut(cr, "/"); ok {
			if n, err := strconv.ParseInt(total, 10, 64); err == nil {
				body.Size = n
			}
		}
	}
	return body, nil
}

// OutputExpiry implements provider.Expirer with GET /v1/files/{id} of the output and error files.
func (p *Provider) OutputExpiry(ctx context.Context, b store.Batch) (time.Time, error) {
	var first time.Time
	for _, id := range []string{b.OutputFileID, b.ErrorFileID} {
		if id == "" {
			continue
		}
		at, err := p.fileExpiry(ctx, b, id)
		if err != nil {
			return time.Time{}, err
		}
		if !at.IsZero() && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first, nil
}

// fileExpiry is when one of b's result files expires; see OutputExpiry.
func (p *Provider) fileExpiry(ctx context.Context, b store.Batch, id string) (time.Time, error) {
	f, err := p.C.API.Files.Get(ctx, id)
	switch {
	case err == nil && f.ExpiresAt > 0:
		return time.Unix(f.ExpiresAt, 0), nil
	case err == nil:
		return time.Time{}, nil // it never expires
	case batchapi.Classify(err) != batchapi.NotFound:
		return time.Time{}, fmt.Errorf("get file %s: %w", id, err)
	}
	// Gone already. The file was written by the time the batch ended, so it expired no later than its lifetime after.
	life := b.OutputExpiresAfter
	if life <= 0 && p.name == provider.OpenAI {
		life = DefaultOutputLifetime
	}
	if life <= 0 || b.EndedAt == nil {
		return time.Time{}, nil // no lifetime to go by: deleted, not expired
	}
	return b.EndedAt.Add(life), nil
}

// FileExists implements provider.Provider.
func (p *Provider) FileExists(ctx context.Context, id string) (bool, error) {
	return p.C.FileExists(ctx, id)
}

// BatchExists implements provider.Provider.
func (p *Provider) BatchExists(ctx context.Context, id string) (bool, error) {
	return p.C.BatchExists(ctx, id)
}

// Set is the provider set of one OpenAI client: what a process that speaks only to OpenAI passes as Providers.
func Set(c *batchapi.Client) provider.Set { return provider.Set{provider.OpenAI: New(c)} }
