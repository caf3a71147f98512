package store

import (
	"encoding/json"
	"time"
)

// Batch statuses as the OpenAI Batch API reports them.
const (
	StatusValidating = "validating"
	StatusInProgress = "in_progress"
	StatusFinalizing = "finalizing"
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
	StatusExpired    = "expired"
	StatusCancelling = "cancelling"
	StatusCancelled  = "cancelled"
)

// IsTerminal reports whether a batch in status s will never change again.
func IsTerminal(s string) bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

// Batch is one row of the batch-ID table (<schema>.batches), the contract downstream consumers read.
// Empty strings and nil pointers are stored as NULL.
type Batch struct {
	BatchID string
	// Provider is the batch API the batch lives at (provider.OpenAI when empty).
	Provider         string
	Status           string
	Endpoint         string
	Model            string
	InputFileID      string
	OutputFileID     string
	ErrorFileID      string
	RequestTotal     int
	RequestCompleted int
	RequestFailed    int
	Metadata         map[string]string
	Source           string
	SpoolSHA256      string
	Errors           json.RawMessage // the API's errors object, as returned
	CreatedAt        time.Time
	UpdatedAt        time.Time
	EndedAt          *time.Time
	ResultsLoadedAt  *time.Time
	ResultsCount     *int // rows written by the last load; compare with ExpectedRows
	Usage            Usage
	// OutputExpiresAfter is the output_expires_after the batch was created with (whole seconds); 0 for the API's
	// default. Written by TrackBatch, kept by later upserts: the batch object does not echo it.
	OutputExpiresAfter time.Duration
	// OutputExpiresAt is when the batch's output and error files expire (the earlier of the two), as the load
	// found out (SetOutputExpiry); nil while unknown and for files that never expire.
	OutputExpiresAt *time.Time
	// ResultsLostAt is when a load found the output files expired before it had loaded them (MarkResultsLost): the
	// results are lost, and ResultsLoadedAt stays nil.
	ResultsLostAt *time.Time
	// EstimatedTokens is batchctl's conservative estimate of the batch's prompt tokens, which quota admission
	// counts while the batch is in flight; nil when unknown (a batch created outside admission).
	EstimatedTokens *int64
	// EstimatedCostUSD is the cost submit estimated before sending the batch, in dollars as exact decimal text;
	// nil when unknown. Written by TrackBatch, kept by later upserts.
	EstimatedCostUSD *string

	// Lineage of resubmissions. An original batch is its own root, attempt 1, with no parents.
	RootBatchID      string
	ParentBatchIDs   []string
	Attempt          int
	ResubmittedAs    string     // the child batch carrying this batch's retryable requests
	ResubmittedAt    *time.Time // when resubmission was decided (also when nothing needed resending)
	ResubmitRequests *int       // requests handed to the child
}

// ExpectedRows is how many result rows the batch's output and error files hold by the API's request counts: a line
// for every request it answered (completed and failed), and for a completed or expired batch a line for every request
// (an expired batch's unanswered requests come as batch_expired lines in its error file). A load that copies fewer
// rows than this read files that were cut short.
func (b Batch) ExpectedRows() int {
	n := b.RequestCompleted + b.RequestFailed
	if b.Status == StatusCompleted || b.Status == StatusExpired {
		n = max(n, b.RequestTotal)
	}
	return n
}

// Usage is the token usage summed over a batch's loaded results; nil until they are loaded.
type Usage struct {
	PromptTokens     *int64
	CompletionTokens *int64
	TotalTokens      *int64
	CachedTokens     *int64 // part of PromptTokens: served from the prompt cache
	ReasoningTokens  *int64 // part of CompletionTokens
	// CostUSD is what the batch cost, in USD as exact decimal text (numeric in Postgres); nil when unknown (no
	// price for the model, or no usage loaded).
	CostUSD *string
}

// Result is one row of <schema>.results: the answer (or error) to one request of one batch.
type Result struct {
	BatchID  string
	CustomID string
	// APICustomID is the custom_id the API was sent, when it differs from the user's CustomID (a provider that
	// allows fewer characters); "" otherwise.
	APICustomID string
	InputLine   *int // 1-based line of the request in its input file; nil when unknown
	StatusCode  *int
	Response    json.RawMessage // the response body; nil for error-file lines
	Error       json.RawMessage // the error object; nil on success
	// PackedCustomID is the custom_id of the packed request this record's row was unpacked from; "" for a row of
	// an unpacked request.
	PackedCustomID string
}
