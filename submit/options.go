package submit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/cost"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/pack"
	"github.com/batchctl/batchctl/provider"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
	"github.com/batchctl/batchctl/store"
)

// Limits of the Batch API. The byte ceiling is 200 MB in decimal units, the smaller reading of "200 MB", so a file
// is accepted whichever the service means.
const (
	MaxRequestsCeiling = 50_000
	MaxBytesCeiling    = 200_000_000
	MaxEmbeddingInputs = 50_000
)

// Metadata limits of the Batch API, and the keys batchctl adds to every batch it creates.
const (
	MaxMetadataPairs    = 16
	MaxMetadataKeyLen   = 64
	MaxMetadataValueLen = batchapi.MaxMetadataValueLen

	MetaSpoolSHA256 = batchapi.MetaSpoolSHA256
	MetaIntent      = batchapi.MetaIntent
	MetaSource      = batchapi.MetaSource
	MetaPart        = "batchctl_part"
	MetaRun         = batchapi.MetaRun
	// MetaPack is the pack size of a batch of packed requests (Options.Pack).
	MetaPack = batchapi.MetaPack

	// batchctlPairs is how many metadata pairs batchctl adds to a batch: the five keys above.
	batchctlPairs = 5
)

// Input formats.
const (
	FormatJSONL = "jsonl" // one JSON object a line: request lines or data records
	FormatText  = "text"  // each non-empty line is the user message of one request
)

// Input is one source of records.
type Input struct {
	// Name names the input in errors, generated custom_ids and batch metadata: a file's base name or "stdin".
	Name string
	// Path is the file to read. A regular file is a bounded input, validated whole before anything is uploaded.
	Path string
	// Reader is read instead of Path when set: a stream (stdin, a pipe), cut by size and by FlushInterval.
	Reader io.Reader
}

// Created describes one batch, as the JSON line written to Options.Out as soon as the batch exists.
type Created struct {
	BatchID string `json:"batch_id,omitempty"`
	// Provider is the batch API the batch was created at (openai, azure, anthropic).
	Provider    string `json:"provider"`
	InputFileID string `json:"input_file_id,omitempty"`
	Requests    int    `json:"requests"`
	Bytes       int64  `json:"bytes"`
	SpoolSHA256 string `json:"spool_sha256"`
	Source      string `json:"source"`
	Endpoint    string `json:"endpoint"`
	Model       string `json:"model"`
	Part        int    `json:"part"`
	// OutputExpiresAfter is the batch's output_expires_after in seconds, when one was asked for (0: the API's
	// default). The API does not report it back; the poller orders and checks loads by it.
	OutputExpiresAfter int64 `json:"output_expires_after,omitempty"`
	// EstimatedTokens is the batch's estimated prompt tokens (EstimateTokens summed), when estimated.
	EstimatedTokens int64 `json:"estimated_tokens,omitempty"`
	// EstimatedCostUSD is the batch's estimated cost at Batch API prices (Options.Prices): its estimated prompt tokens
	// and the bound of its output tokens; null when the model has no price, absent without a price table.
	EstimatedCostUSD *Estimate `json:"estimated_cost_usd,omitempty"`
	// Queued is true for a batch handed to the admission queue and not created yet: it has no batch_id, and the
	// poller creates it when its model's token quota has room (batchctl quota).
	Queued bool `json:"queued,omitempty"`
	// Existing is true when an earlier run created the batch; this run found it in its journal or by reconciling.
	Existing bool `json:"existing,omitempty"`
	// DryRun is true for the lines of a dry run, which has no batch_id; SpoolFile then names the file it wrote.
	DryRun    bool   `json:"dry_run,omitempty"`
	SpoolFile string `json:"spool_file,omitempty"`
}

// Queued is an uploaded batch file offered to Options.Admit.
type Queued struct {
	Intent          string
	Provider        string
	Model           string
	Endpoint        string
	InputFileID     string
	Source          string
	SpoolSHA256     string
	Part            int
	Requests        int
	Bytes           int64
	EstimatedTokens int64
	Metadata        map[string]string
}

// Estimate is an estimated amount of money, or unknown (JSON null) when the model has no price.
type Estimate struct {
	Pico  cost.Pico
	Known bool
}

// MarshalJSON writes the amount in dollars as a JSON number, exactly, or null.
func (e Estimate) MarshalJSON() ([]byte, error) {
	if !e.Known {
		return []byte("null"), nil
	}
	return []byte(e.Pico.USD()), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Estimate) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*e = Estimate{}
		return nil
	}
	p, err := cost.ParseUSD(string(b))
	if err != nil {
		return err
	}
	*e = Estimate{Pico: p, Known: true}
	return nil
}

// ErrOverQuota is a batch file refused because its estimated tokens pass its model's quota (Options.Quota).
var ErrOverQuota = errors.New("batch over its model's token quota")

// ErrOverBudget is a run refused because its estimated cost passes Options.MaxCost.
var ErrOverBudget = errors.New("estimated cost over --max-cost")

// ErrFileGone is what Options.Admit returns when the API no longer knows a queued batch's input file.
var ErrFileGone = errors.New("the uploaded batch file is gone")

// Progress counts what a run did so far. Its fields are updated atomically while Run works, so another goroutine
// may read them to draw a progress line.
type Progress struct {
	Records       atomic.Int64 // records read
	Rejected      atomic.Int64 // records skipped as invalid (with SkipInvalid)
	Batches       atomic.Int64 // batches created (or planned, in a dry run)
	BytesUploaded atomic.Int64
}

// Options configure Run.
type Options struct {
	// Provider is the batch API the batches are created at. When it is nil, Client is the API, spoken to as the
	// provider ProviderName (openai, or azure for a client built for Azure). Neither is used by a dry run.
	Provider provider.Provider
	Client   *openai.Client
	// ProviderName names the provider when Provider is nil: its limits, its request form (default provider.OpenAI).
	ProviderName string
	// MaxOutputTokens, when positive, caps the answer of every request of the built-in form: max_completion_tokens
	// (chat), max_output_tokens (responses), max_tokens (completions, Anthropic's messages, which require it).
	MaxOutputTokens int64
	// SaveRequestIDs, when set, records the requests of a batch file before its batch is created, for a provider
	// that sends them under other custom_ids than the user's (provider.Renamer): the loader puts the results back
	// under the user's IDs and input lines from them.
	SaveRequestIDs func(ctx context.Context, spoolSHA256 string, ids iter.Seq2[store.RequestID, error]) error
	// OwnedBatch, when set, reports a batch some intent owns already (the batch-ID table has it): never the batch
	// of a lost create that a provider without metadata looks for. The journals in SpoolDir are asked too.
	OwnedBatch func(ctx context.Context, batchID string) (bool, error)
	// APIBase and Account name where Client's calls go: the base URL, and batchapi.Account's fingerprint of it and
	// the key. Journals record them, so that an intent is never finished, nor its content taken for submitted,
	// at another endpoint or with another account's key.
	APIBase string
	Account string
	// Inputs are read in order; none means nothing but the unfinished intents in SpoolDir.
	Inputs []Input
	// Format is FormatJSONL (the default) or FormatText.
	Format string
	// Endpoint is the API endpoint of every request (default /v1/chat/completions).
	Endpoint string
	// Model, System, TextField build a request from a data record when Template is empty; see the package README.
	Model     string
	System    string
	TextField string // default "text"
	// ImageField names the field of a data record holding the pictures an /v1/images/edits request edits (default
	// "image"): a URL, a data: URL or a file ID, or an array of them (see AppendImageEditBody).
	ImageField string
	// IDField names the field of a data record holding its custom_id; empty generates "<input name>:<line>".
	IDField string
	// Template is the text of a Go text/template rendering the request body from a data record (with Pack, from
	// the records of a packed request: see packer.go).
	Template string
	// TemplateName names the template in errors.
	TemplateName string

	// Pack, when positive, puts up to Pack records in each request (prompt packing, chat completions and responses
	// only): the built-in form or the template gets the records under indexes 1..N, and the request asks for a
	// structured answer, an object holding an array of {index, answer} (package pack). The record-to-index map
	// goes beside each batch file in the spool (its .packmap), into its journal, and through SavePack into the
	// database before the batch is created; the cutting limits apply to the packed requests.
	Pack int
	// AnswerSchema is the JSON schema of one record's answer in a packed request (pack.DefaultAnswerSchema, a
	// string, when empty).
	AnswerSchema []byte
	// SavePack records a packed batch file's record-to-index map; required with Pack, unless DryRun.
	SavePack func(ctx context.Context, p store.Pack, recs iter.Seq2[store.PackedRecord, error]) error

	// MaxRequests and MaxBytes cap a batch file (defaults and ceilings MaxRequestsCeiling, MaxBytesCeiling).
	MaxRequests int
	MaxBytes    int64
	// MaxTokens, when positive, caps the estimated prompt tokens of a batch (EstimateTokens of each request body),
	// so that one batch fits the organisation's enqueued-token limit for its model.
	MaxTokens int64
	// EstimateTokens estimates every batch's prompt tokens even without MaxTokens, for Created and Admit.
	EstimateTokens bool
	// Quota, when set, is a model's enqueued-token quota (0: none): a batch file whose estimated tokens pass it could
	// never be admitted, and is refused before upload (ErrOverQuota). Called from the run's goroutine only.
	Quota func(ctx context.Context, model string) (int64, error)
	// Prices, when set, prices every batch before it is sent (Created.EstimatedCostUSD). MaxCost, when positive,
	// refuses a run whose estimate passes it: a bounded input before anything is uploaded, a stream at the batch
	// that would pass it (ErrOverBudget).
	Prices  *cost.Table
	MaxCost cost.Pico
	// FlushInterval, when positive, submits a non-empty partial batch of a stream that has waited that long.
	FlushInterval time.Duration
	// FileExpiresAfter and OutputExpiresAfter, when positive, set expires_after on the uploaded batch files and
	// output_expires_after on the batches (from MinExpiresAfter to MaxExpiresAfter); zero keeps the API's default.
	FileExpiresAfter   time.Duration
	OutputExpiresAfter time.Duration
	// ShutdownTimeout is how long a stream's run, once ctx is cancelled, goes on creating the batches of the records
	// it read, before it leaves the rest for Resume (default DefaultShutdownTimeout).
	ShutdownTimeout time.Duration

	// SpoolDir holds the spool files and their journals.
	SpoolDir string
	// Metadata is added to every batch, beside batchctl's own keys.
	Metadata map[string]string

	// DryRun validates and spools, uploads nothing, and writes what it would submit.
	DryRun bool
	// Resume only finishes the unfinished intents in SpoolDir; Inputs must be empty.
	Resume bool
	// Force creates a batch even when an earlier run created one for the same spool file.
	Force bool
	// SkipInvalid writes bad records to Rejects instead of failing the run.
	SkipInvalid bool
	Rejects     io.Writer

	// Out receives one JSON line per batch; Logger receives logs. Neither may be nil.
	Out    io.Writer
	Logger *slog.Logger
	// OnCreated, when set, is called after each batch's JSON line is written (also for batches an earlier run
	// created, with Existing set; it must be idempotent). An error stops the run.
	OnCreated func(ctx context.Context, c Created) error
	// Admit, when set, is offered each uploaded batch file before it is created: it returns the batch's ID when
	// it created the batch (or found it created), queued true when it took the batch into a queue that creates it
	// later, and neither when the batch is not its to handle (then Run creates it). ErrFileGone makes Run upload
	// the file again and offer it anew. It must be idempotent per Queued.Intent.
	Admit func(ctx context.Context, q Queued) (batchID string, queued bool, err error)
	// Progress, when set, is updated as the run goes.
	Progress *Progress

	// RetryInitial and RetryMaxElapsed shape the exponential backoff of uploads and creates; zero means batchapi's
	// defaults, as for ReconcileSlack and ReconcilePages.
	RetryInitial    time.Duration
	RetryMaxElapsed time.Duration
	// ReconcileSlack, ReconcileSettle and ReconcilePages shape the search for a batch whose create may have
	// happened; see batchapi.Client.
	ReconcileSlack  time.Duration
	ReconcileSettle time.Duration
	ReconcilePages  int
	// Now replaces time.Now, for tests.
	Now func() time.Time

	afterUpload func() error // test hook, see export_test.go
}

// The range of expires_after and output_expires_after the API takes.
const (
	MinExpiresAfter = time.Hour
	MaxExpiresAfter = 30 * 24 * time.Hour
	// AzureMinFileExpiresAfter is the shortest expires_after Azure takes on an upload (14 days).
	AzureMinFileExpiresAfter = 14 * 24 * time.Hour
)

// ErrInvalidOptions wraps every problem with Options found before any work starts.
var ErrInvalidOptions = errors.New("invalid options")

func (o *Options) setDefaults() {
	if o.Format == "" {
		o.Format = FormatJSONL
	}
	if o.Provider != nil {
		o.ProviderName = o.Provider.Name()
	}
	o.ProviderName = cmp.Or(o.ProviderName, provider.OpenAI)
	if o.Endpoint == "" {
		o.Endpoint = jsonl.EndpointChatCompletions
		if o.ProviderName == provider.Anthropic {
			o.Endpoint = provider.EndpointMessages
		}
	}
	if o.TextField == "" {
		o.TextField = "text"
	}
	if o.ImageField == "" {
		o.ImageField = "image"
	}
	if o.MaxRequests == 0 {
		o.MaxRequests = o.limits().MaxRequests
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = o.limits().MaxBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Progress == nil {
		o.Progress = new(Progress)
	}
	if o.TemplateName == "" {
		o.TemplateName = "template"
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
}

func (o *Options) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	switch {
	case o.Format != FormatJSONL && o.Format != FormatText:
		return bad("format %q: want %s or %s", o.Format, FormatJSONL, FormatText)
	case provider.Check(o.ProviderName) != nil:
		return bad("%v", provider.Check(o.ProviderName))
	case o.ProviderName == provider.Anthropic && o.Endpoint != provider.EndpointMessages:
		return bad("endpoint %q: Anthropic's batches take only %s", o.Endpoint, provider.EndpointMessages)
	case o.ProviderName != provider.Anthropic && !jsonl.ValidEndpoint(o.Endpoint):
		return bad("endpoint %q: want one of %s", o.Endpoint, strings.Join(jsonl.Endpoints, ", "))
	case o.MaxRequests < 1 || o.MaxRequests > o.limits().MaxRequests:
		return bad("max requests %d: want 1 to %d (%s's limit)", o.MaxRequests, o.limits().MaxRequests, o.ProviderName)
	case o.MaxBytes < 2 || o.MaxBytes > o.limits().MaxBytes:
		return bad("max bytes %d: want up to %d (%s's limit)", o.MaxBytes, o.limits().MaxBytes, o.ProviderName)
	case o.MaxOutputTokens < 0:
		return bad("max output tokens %d is negative", o.MaxOutputTokens)
	case o.ProviderName == provider.Anthropic && o.Template == "" && o.MaxOutputTokens == 0 && o.Model != "":
		return bad("Anthropic requires max_tokens on every request: set --max-output-tokens")
	case o.MaxTokens < 0:
		return bad("max tokens %d is negative", o.MaxTokens)
	case o.FlushInterval < 0:
		return bad("flush interval %s is negative", o.FlushInterval)
	case o.ReconcileSettle < 0:
		return bad("reconcile settle %s is negative", o.ReconcileSettle)
	case o.ProviderName == provider.Anthropic && (o.FileExpiresAfter > 0 || o.OutputExpiresAfter > 0):
		return bad("Anthropic's batches have no files to expire: drop --file-expires-after and --output-expires-after")
	case o.ProviderName == provider.Azure && o.FileExpiresAfter > 0 && (o.FileExpiresAfter < AzureMinFileExpiresAfter || o.FileExpiresAfter > MaxExpiresAfter):
		return bad("file expiry %s: Azure takes %s to %s", o.FileExpiresAfter, AzureMinFileExpiresAfter, MaxExpiresAfter)
	case !validExpiry(o.FileExpiresAfter):
		return bad("file expiry %s: want %s to %s (0 for the API's default)", o.FileExpiresAfter, MinExpiresAfter, MaxExpiresAfter)
	case !validExpiry(o.OutputExpiresAfter):
		return bad("output expiry %s: want %s to %s (0 for the API's default)", o.OutputExpiresAfter, MinExpiresAfter, MaxExpiresAfter)
	case o.MaxCost < 0:
		return bad("max cost is negative")
	case o.MaxCost > 0 && o.Prices == nil:
		return bad("a cost cap needs a price table")
	case o.ShutdownTimeout < 0:
		return bad("shutdown timeout %s is negative", o.ShutdownTimeout)
	case o.SpoolDir == "":
		return bad("no spool directory")
	case o.Out == nil || o.Logger == nil:
		return bad("Out and Logger are required")
	case o.Resume && len(o.Inputs) > 0:
		return bad("resume reads no input: drop the files or --resume")
	case o.Resume && o.DryRun:
		return bad("resume and dry run exclude each other")
	case !o.DryRun && o.Client == nil && o.Provider == nil:
		return bad("no API client")
	case o.SkipInvalid && o.Rejects == nil:
		return bad("skipping invalid records needs a rejects file")
	case o.Format == FormatText && o.IDField != "":
		return bad("text input has no fields: drop the id field")
	case o.Format == FormatText && o.Template == "" && o.Endpoint == jsonl.EndpointImageEdits:
		return bad("text input has no image field: an edit of the built-in form needs JSON records with the pictures in --image-field")
	case o.System != "" && o.Template == "" && !takesSystem(o.Endpoint):
		return bad("the built-in form of %s has no system prompt (chat completions, responses and Anthropic's messages have one): drop --system or write a --template", o.Endpoint)
	}
	if err := o.validatePack(); err != nil {
		return err
	}
	if pairs := o.batchctlPairs(); len(o.Metadata) > MaxMetadataPairs-pairs {
		return bad("%d metadata pairs: at most %d, since batchctl adds %d of the API's %d", len(o.Metadata), MaxMetadataPairs-pairs, pairs, MaxMetadataPairs)
	}
	for k, v := range o.Metadata {
		switch {
		case k == "" || len(k) > MaxMetadataKeyLen:
			return bad("metadata key %q: want 1 to %d characters", k, MaxMetadataKeyLen)
		case len(v) > MaxMetadataValueLen:
			return bad("metadata value of %q is %d characters, over %d", k, len(v), MaxMetadataValueLen)
		case strings.HasPrefix(k, "batchctl_"):
			return bad("metadata key %q: the batchctl_ prefix is batchctl's own", k)
		}
	}
	return nil
}

// batchctlPairs is how many metadata pairs batchctl adds to each batch of the run.
func (o *Options) batchctlPairs() int {
	if o.Pack > 0 {
		return batchctlPairs + 1 // MetaPack
	}
	return batchctlPairs
}

// validatePack checks the packing options, and compacts the answer schema.
func (o *Options) validatePack() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	switch {
	case o.Pack == 0 && len(o.AnswerSchema) > 0:
		return bad("an answer schema is for packed requests: add --pack")
	case o.Pack == 0:
		return nil
	case o.Pack < 0 || o.Pack > pack.MaxSize:
		return bad("pack %d: want 1 to %d records a request", o.Pack, pack.MaxSize)
	case o.ProviderName == provider.Anthropic || !pack.Supported(o.Endpoint):
		return bad("--pack packs chat completions and responses (structured outputs), not %s at %s", o.Endpoint, o.ProviderName)
	case !o.DryRun && o.SavePack == nil:
		return bad("--pack records which record each packed answer belongs to in the database: set DATABASE_URL")
	}
	if len(o.AnswerSchema) == 0 {
		o.AnswerSchema = pack.DefaultAnswerSchema
	}
	s, err := pack.CheckAnswerSchema(o.AnswerSchema)
	if err != nil {
		return bad("%v", err)
	}
	o.AnswerSchema = s
	return nil
}

// Limits of the providers, for a run that names its provider without one (a dry run).
var providerLimits = map[string]provider.Limits{
	provider.OpenAI:    oaiprov.OpenAILimits,
	provider.Azure:     oaiprov.AzureLimits,
	provider.Anthropic: {MaxRequests: 100_000, MaxBytes: 256_000_000},
}

// limits are the per-batch limits of the run's provider.
func (o *Options) limits() provider.Limits {
	if o.Provider != nil {
		return o.Provider.Limits()
	}
	if l, ok := providerLimits[cmp.Or(o.ProviderName, provider.OpenAI)]; ok {
		return l
	}
	return oaiprov.OpenAILimits
}

// takesSystem reports whether the built-in form of endpoint has a place for a system prompt (Options.System).
func takesSystem(endpoint string) bool {
	switch endpoint {
	case jsonl.EndpointChatCompletions, jsonl.EndpointResponses, provider.EndpointMessages:
		return true
	}
	return false
}

// wireURL is the endpoint as the provider wants it written in request lines.
func (o *Options) wireURL() string { return provider.WireURL(o.ProviderName, o.Endpoint) }

// validExpiry reports whether d is 0 (the API's default) or a whole number of seconds the API takes.
func validExpiry(d time.Duration) bool {
	return d == 0 || d >= MinExpiresAfter && d <= MaxExpiresAfter && d%time.Second == 0
}
