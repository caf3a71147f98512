package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Batch statuses, those of the real service.
const (
	StatusValidating = "validating"
	StatusFailed     = "failed"
	StatusInProgress = "in_progress"
	StatusFinalizing = "finalizing"
	StatusCompleted  = "completed"
	StatusExpired    = "expired"
	StatusCancelling = "cancelling"
	StatusCancelled  = "cancelled"
)

// completionWindow is the only window the real service accepts.
const completionWindow = "24h"

// supportedEndpoints are the batch endpoints the emulator answers: all those of the Batch API but /v1/videos.
var supportedEndpoints = map[string]bool{
	"/v1/responses": true, "/v1/chat/completions": true, "/v1/embeddings": true,
	"/v1/completions": true, "/v1/moderations": true, endpointImages: true, endpointImageEdits: true,
}

// endpointVideos is the Batch API's deprecated video endpoint, which the emulator refuses. Its answer would be a
// video job (VideoResource) whose video is fetched from GET /v1/videos/{id}/content, outside the Batch API: an
// emulated answer would be a handle to nothing, for an endpoint the API reference marks deprecated.
const endpointVideos = "/v1/videos"

// Metadata limits of the real service.
const (
	maxMetadataPairs    = 16
	maxMetadataKeyLen   = 64
	maxMetadataValueLen = 512
)

// batch is the emulator's state of one batch. Exported-looking fields are guarded by Server.mu; the atomics are
// read by the batch's lifecycle steps without the lock.
type batch struct {
	ID               string
	Endpoint         string
	InputFileID      string
	CompletionWindow string
	Metadata         map[string]string
	outputTTL        time.Duration
	seq              int64 // creation ordinal: seeds the per-request fault choices
	idsPath          string
	// azure marks a batch created through an Azure path: Azure's endpoints and input rules, no 24-hour expiry,
	// and both result files always (empty ones too), without a default expiry.
	azure bool

	Status                    string
	Model                     string
	Errors                    []batchError
	OutputFileID, ErrorFileID string
	CreatedAt, InProgressAt, ExpiresAt, FinalizingAt, CompletedAt,
	FailedAt, ExpiredAt, CancellingAt, CancelledAt int64
	Total, Completed, Failed  int64
	InputTokens, OutputTokens int64
	CachedTokens              int64 // part of InputTokens
	enqueuedTokens            int64
	outputHiddenUntil         time.Time // LateOutputFile: output_file_id reads null before this

	cancelReq atomic.Bool
	expireReq atomic.Bool
	timer     *lifeTimer // the batch's place in the scheduler: nudged out of a pause by a cancel or an expiry
}

func (b *batch) terminal() bool {
	switch b.Status {
	case StatusCompleted, StatusFailed, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

// batchObject is the Batch schema. Pointers are null until the state they describe is reached, as the real
// service sends them. The model is left out until validation has read it from the input file: the schema types it
// a string, never null, and the API reference's example of a batch just created has none.
type batchObject struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	Model            string            `json:"model,omitempty"`
	Errors           *batchErrors      `json:"errors"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	InProgressAt     *int64            `json:"in_progress_at"`
	ExpiresAt        *int64            `json:"expires_at"`
	FinalizingAt     *int64            `json:"finalizing_at"`
	CompletedAt      *int64            `json:"completed_at"`
	FailedAt         *int64            `json:"failed_at"`
	ExpiredAt        *int64            `json:"expired_at"`
	CancellingAt     *int64            `json:"cancelling_at"`
	CancelledAt      *int64            `json:"cancelled_at"`
	RequestCounts    requestCounts     `json:"request_counts"`
	Usage            batchUsage        `json:"usage"`
	Metadata         map[string]string `json:"metadata"`
}

type batchErrors struct {
	Object string       `json:"object"`
	Data   []batchError `json:"data"`
}

type requestCounts struct {
	Total     int64 `json:"total"`
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
}

type batchUsage struct {
	InputTokens        int64 `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int64 `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int64 `json:"total_tokens"`
}

func unixOrNull(t int64) *int64 {
	if t == 0 {
		return nil
	}
	return &t
}

// object renders the batch as of now; the caller holds s.mu.
func (b *batch) object(now time.Time) batchObject {
	o := batchObject{
		ID: b.ID, Object: "batch", Endpoint: b.Endpoint, Model: b.Model, InputFileID: b.InputFileID,
		CompletionWindow: b.CompletionWindow, Status: b.Status,
		OutputFileID: nullable(b.OutputFileID), ErrorFileID: nullable(b.ErrorFileID),
		CreatedAt: b.CreatedAt, InProgressAt: unixOrNull(b.InProgressAt), ExpiresAt: unixOrNull(b.ExpiresAt),
		FinalizingAt: unixOrNull(b.FinalizingAt), CompletedAt: unixOrNull(b.CompletedAt),
		FailedAt: unixOrNull(b.FailedAt), ExpiredAt: unixOrNull(b.ExpiredAt),
		CancellingAt: unixOrNull(b.CancellingAt), CancelledAt: unixOrNull(b.CancelledAt),
		RequestCounts: requestCounts{Total: b.Total, Completed: b.Completed, Failed: b.Failed},
		Metadata:      b.Metadata,
	}
	if len(b.Errors) > 0 {
		o.Errors = &batchErrors{Object: "list", Data: b.Errors}
	}
	if now.Before(b.outputHiddenUntil) {
		o.OutputFileID = nil
	}
	o.Usage.InputTokens, o.Usage.OutputTokens = b.InputTokens, b.OutputTokens
	o.Usage.TotalTokens = b.InputTokens + b.OutputTokens
	o.Usage.InputTokensDetails.CachedTokens = b.CachedTokens
	return o
}

// createBatchRequest is the CreateBatchRequest schema.
type createBatchRequest struct {
	InputFileID        *string           `json:"input_file_id"`
	Endpoint           *string           `json:"endpoint"`
	CompletionWindow   *string           `json:"completion_window"`
	Metadata           map[string]string `json:"metadata"`
	OutputExpiresAfter *struct {
		Anchor  string `json:"anchor"`
		Seconds int64  `json:"seconds"`
	} `json:"output_expires_after"`
}

func (s *Server) handleBatchCreate(w http.ResponseWriter, r *http.Request) {
	var req createBatchRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "",
			"We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)", "")
		return
	}
	bad := func(param, msg string) {
		code := "invalid_value"
		if msg == "" {
			code, msg = "missing_required_parameter", fmt.Sprintf("Missing required parameter: '%s'.", param)
		}
		writeError(w, http.StatusBadRequest, "invalid_request_error", code, msg, param)
	}
	switch {
	case req.InputFileID == nil || *req.InputFileID == "":
		bad("input_file_id", "")
		return
	case req.Endpoint == nil:
		bad("endpoint", "")
		return
	case isAzure(r) && azureEndpointError(*req.Endpoint) != "":
		bad("endpoint", azureEndpointError(*req.Endpoint))
		return
	case !isAzure(r) && *req.Endpoint == endpointVideos:
		bad("endpoint", "Invalid value: '/v1/videos'. Video generation is deprecated (since 2026-08) and the emulator does not answer it; the other batch endpoints are emulated.")
		return
	case !isAzure(r) && !supportedEndpoints[*req.Endpoint]:
		bad("endpoint", fmt.Sprintf("Invalid value: '%s'. Supported values are: '/v1/responses', '/v1/chat/completions', '/v1/embeddings', '/v1/completions', '/v1/moderations', '/v1/images/generations', '/v1/images/edits' and '/v1/videos' (deprecated; not emulated).", *req.Endpoint))
		return
	case req.CompletionWindow == nil:
		bad("completion_window", "")
		return
	case *req.CompletionWindow != completionWindow:
		bad("completion_window", fmt.Sprintf("Invalid value: '%s'. Supported values are: '24h'.", *req.CompletionWindow))
		return
	}
	if msg := checkMetadata(req.Metadata); msg != "" {
		bad("metadata", msg)
		return
	}
	var ttl time.Duration
	if oe := req.OutputExpiresAfter; oe != nil {
		if oe.Anchor != "created_at" || oe.Seconds < minExpiresAfter || oe.Seconds > maxExpiresAfter {
			bad("output_expires_after", "Invalid 'output_expires_after': anchor must be 'created_at' and seconds between 3600 and 2592000.")
			return
		}
		ttl = time.Duration(oe.Seconds) * time.Second
	}
	input, err := s.lookupFile(*req.InputFileID)
	if err != nil {
		writeError(w, http.StatusNotFound, "invalid_request_error", "",
			fmt.Sprintf("No such File object: %s", *req.InputFileID), "input_file_id")
		return
	}
	if input.Purpose != "batch" {
		bad("input_file_id", fmt.Sprintf("File %s has purpose '%s'; a batch input file must have purpose 'batch'.", input.ID, input.Purpose))
		return
	}

	now := s.now()
	created := now.Unix()
	b := &batch{
		ID: newID("batch_"), Endpoint: *req.Endpoint, InputFileID: input.ID, CompletionWindow: completionWindow,
		Metadata: req.Metadata, outputTTL: ttl, Status: StatusValidating, CreatedAt: created,
		ExpiresAt: created + int64(24*time.Hour/time.Second), azure: isAzure(r),
	}
	b.idsPath = filepath.Join(s.dataDir, "batches", b.ID+".custom_ids")
	if s.chance(s.Faults().ExpireRate) {
		b.expireReq.Store(true)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "server_error", "", "The emulator is shutting down.", "")
		return
	}
	if wait, ok := s.admitCreate(now); !ok {
		s.stats.CreatesLimited++
		s.mu.Unlock()
		setRetryAfter(w, wait)
		writeError(w, http.StatusTooManyRequests, "requests", "rate_limit_exceeded", fmt.Sprintf(
			"Rate limit reached for batch creation: at most %d batches an hour. Please try again in %s.",
			s.opts.MaxBatchCreatesPerHour, wait.Round(time.Second)), "")
		return
	}
	b.seq = int64(len(s.batchSeq))
	s.batches[b.ID] = b
	s.batchSeq = append(s.batchSeq, b)
	obj := b.object(s.now())
	b.timer = s.sched.add(&batchRun{s: s, b: b, input: input}, s.opts.PhaseDelay)
	s.mu.Unlock()
	s.log.Debug("batch created", "batch", b.ID, "input_file", input.ID, "endpoint", b.Endpoint)
	writeJSON(w, http.StatusOK, obj)
}

// admitCreate counts a batch creation at now against the hourly cap, or returns how long until one more is
// allowed. The caller holds s.mu.
func (s *Server) admitCreate(now time.Time) (wait time.Duration, ok bool) {
	limit := s.opts.MaxBatchCreatesPerHour
	if limit < 0 {
		return 0, true
	}
	i := 0
	for i < len(s.creates) && !s.creates[i].After(now.Add(-time.Hour)) {
		i++
	}
	s.creates = s.creates[i:]
	if len(s.creates) >= limit {
		return max(s.creates[0].Add(time.Hour).Sub(now), time.Millisecond), false
	}
	s.creates = append(s.creates, now)
	return 0, true
}

// checkMetadata applies the real service's limits; it returns the error message or "".
func checkMetadata(m map[string]string) string {
	if len(m) > maxMetadataPairs {
		return fmt.Sprintf("Invalid 'metadata': too many properties. Expected an object with at most %d properties, but got an object with %d properties instead.", maxMetadataPairs, len(m))
	}
	for k, v := range m {
		if len(k) > maxMetadataKeyLen {
			return fmt.Sprintf("Invalid 'metadata': key '%s' is too long. Expected a key with maximum length %d, but got a key with length %d instead.", k, maxMetadataKeyLen, len(k))
		}
		if len(v) > maxMetadataValueLen {
			return fmt.Sprintf("Invalid 'metadata.%s': string too long. Expected a string with maximum length %d, but got a string with length %d instead.", k, maxMetadataValueLen, len(v))
		}
	}
	return ""
}

func writeBatchNotFound(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, "invalid_request_error", "", fmt.Sprintf("No batch found with id '%s'.", id), "")
}

func (s *Server) handleBatchGet(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	b, ok := s.batches[id]
	var obj batchObject
	if ok {
		obj = b.object(s.now())
	}
	s.mu.Unlock()
	if !ok {
		writeBatchNotFound(w, id)
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

// batchList is the ListBatchesResponse schema.
type batchList struct {
	Object  string        `json:"object"`
	Data    []batchObject `json:"data"`
	FirstID *string       `json:"first_id"`
	LastID  *string       `json:"last_id"`
	HasMore bool          `json:"has_more"`
}

// handleBatchList lists batches newest first: one call refreshes up to 100 batches.
func (s *Server) handleBatchList(w http.ResponseWriter, r *http.Request) {
	limit, ok := parseLimit(w, r.URL.Query().Get("limit"), 20, 100)
	if !ok {
		return
	}
	after := r.URL.Query().Get("after")
	resp := batchList{Object: "list", Data: make([]batchObject, 0, limit)}
	s.mu.Lock()
	i := len(s.batchSeq) - 1
	if after != "" {
		i = -1 // an unknown cursor yields an empty page
		for j := len(s.batchSeq) - 1; j >= 0; j-- {
			if s.batchSeq[j].ID == after {
				i = j - 1
				break
			}
		}
	}
	for ; i >= 0 && len(resp.Data) < limit; i-- {
		resp.Data = append(resp.Data, s.batchSeq[i].object(s.now()))
	}
	resp.HasMore = i >= 0
	s.mu.Unlock()
	if n := len(resp.Data); n > 0 {
		resp.FirstID, resp.LastID = &resp.Data[0].ID, &resp.Data[n-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleBatchCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	obj, err := s.cancelBatch(id)
	switch {
	case errors.Is(err, errNotFound):
		writeBatchNotFound(w, id)
	case err != nil:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", err.Error(), "")
	default:
		writeJSON(w, http.StatusOK, obj)
	}
}

// cancelBatch moves a running batch to cancelling; its lifecycle's next step finishes the job. Cancelling a batch
// already cancelling or cancelled returns it unchanged.
func (s *Server) cancelBatch(id string) (batchObject, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.batches[id]
	if !ok {
		return batchObject{}, errNotFound
	}
	switch b.Status {
	case StatusCancelling, StatusCancelled:
	case StatusValidating, StatusInProgress, StatusFinalizing:
		b.Status, b.CancellingAt = StatusCancelling, s.now().Unix()
		b.cancelReq.Store(true)
		s.sched.nudge(b.timer)
	default:
		return batchObject{}, fmt.Errorf("Cannot cancel a batch with status '%s'.", b.Status) //nolint:staticcheck // OpenAI's message
	}
	return b.object(s.now()), nil
}

// ExpireBatch makes a batch that has not reached finalizing expire: it stops after answering
// Options.ExpireCompletedShare of its requests (or at once if it answered more already), delivers the answers in
// its output file and the rest as batch_expired lines in its error file.
func (s *Server) ExpireBatch(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.batches[id]
	if !ok {
		return fmt.Errorf("expire batch %s: %w", id, errNotFound)
	}
	if b.Status != StatusValidating && b.Status != StatusInProgress {
		return fmt.Errorf("expire batch %s: status is %s", id, b.Status)
	}
	b.expireReq.Store(true)
	s.sched.nudge(b.timer)
	return nil
}
