package emulator

// Anthropic Message Batches, served on the same port as the OpenAI API: POST /v1/messages/batches takes the
// requests inline, the batch runs in_progress → (canceling) → ended, and the results are JSONL at results_url.
// Calls authenticate with x-api-key (or a bearer token) and must name an anthropic-version; errors use Anthropic's
// shape.

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Limits of the real Message Batches API.
const (
	// DefaultMaxMessageBatchRequests caps the requests of one message batch when
	// Options.MaxMessageBatchRequests is zero.
	DefaultMaxMessageBatchRequests = 100_000
	// DefaultMaxMessageBatchBytes caps the body of a message batch creation (256 MB) when
	// Options.MaxMessageBatchBytes is zero.
	DefaultMaxMessageBatchBytes = 256 << 20
	// MessageBatchLifetime is how long a message batch may process before its unfinished requests expire.
	MessageBatchLifetime = 24 * time.Hour
)

// Processing statuses of a message batch, those of the real service.
const (
	ProcessingInProgress = "in_progress"
	ProcessingCanceling  = "canceling"
	ProcessingEnded      = "ended"
)

// Result types of a message batch's results lines.
const (
	ResultSucceeded = "succeeded"
	ResultErrored   = "errored"
	ResultCanceled  = "canceled"
	ResultExpired   = "expired"
)

// Anthropic's error types (error.type of the error shape).
const (
	anthropicInvalidRequest   = "invalid_request_error"
	anthropicAuthentication   = "authentication_error"
	anthropicNotFound         = "not_found_error"
	anthropicRequestTooLarge  = "request_too_large"
	anthropicRateLimit        = "rate_limit_error"
	anthropicAPIError         = "api_error"
	anthropicOverloaded       = "overloaded_error"
	statusAnthropicOverloaded = 529
)

// Routes of the Message Batches API. They start far from the OpenAI routes so that other providers can add theirs.
const (
	routeMsgBatchCreate route = 100 + iota
	routeMsgBatchList
	routeMsgBatchGet
	routeMsgBatchCancel
	routeMsgBatchDelete
	routeMsgBatchResults
)

// anthropic reports whether the route is one of the Message Batches API, whose errors take Anthropic's shape.
func (rt route) anthropic() bool { return rt >= routeMsgBatchCreate && rt <= routeMsgBatchResults }

// AnthropicStats counts the Message Batches calls and what came of them. Call counters include calls answered by
// an injected fault or a 401, as the OpenAI counters do; the HTTP fault counters (Injected429, RangeDownloads...)
// and Unauthorized of [Stats] are shared by both APIs.
type AnthropicStats struct {
	BatchCreates    int // POST /v1/messages/batches
	BatchLists      int // GET /v1/messages/batches
	BatchGets       int // GET /v1/messages/batches/{id}
	BatchCancels    int // POST /v1/messages/batches/{id}/cancel
	BatchDeletes    int // DELETE /v1/messages/batches/{id}
	ResultDownloads int // GET /v1/messages/batches/{id}/results

	// BatchesCreated counts the message batches that came to exist, deleted ones included: a create whose answer
	// was cut still counts, a refused one does not. A client that never submits twice keeps it at one per batch.
	BatchesCreated  int
	RefusedCreates  int // creations answered 400 or 413: nothing was created
	ErroredRequests int // requests answered errored by RequestFailRate
	ExpiredBatches  int // batches that ended with expired requests
}

func (st *AnthropicStats) addCall(rt route) {
	switch rt {
	case routeMsgBatchCreate:
		st.BatchCreates++
	case routeMsgBatchList:
		st.BatchLists++
	case routeMsgBatchGet:
		st.BatchGets++
	case routeMsgBatchCancel:
		st.BatchCancels++
	case routeMsgBatchDelete:
		st.BatchDeletes++
	case routeMsgBatchResults:
		st.ResultDownloads++
	}
}

// anthropicState holds the message batches; guarded by Server.mu.
type anthropicState struct {
	batches map[string]*msgBatch
	seq     []*msgBatch // creation order; deleted batches leave it
	created int64       // batches ever created: seeds the per-request fault choices
}

// msgBatch is the emulator's state of one message batch. Its requests and results live on disk. Fields are
// guarded by Server.mu; the atomics are read by the batch's lifecycle steps without the lock.
type msgBatch struct {
	ID           string
	seq          int64
	requestsPath string // one {"custom_id","params"} line per request, in input order
	resultsPath  string // written when processing ends

	Status                    string
	Requests                  int64
	CreatedAt, ExpiresAt      time.Time
	EndedAt, CancelInitiated  time.Time
	Succeeded, Errored        int64
	Canceled, Expired         int64
	InputTokens, OutputTokens int64

	cancelReq atomic.Bool
	expireReq atomic.Bool
	timer     *lifeTimer // the batch's place in the scheduler: nudged out of a pause by a cancel or an expiry
}

// messageBatchObject is the MessageBatch schema. Pointers are null until the state they describe is reached.
type messageBatchObject struct {
	ID                string         `json:"id"`
	Type              string         `json:"type"`
	ProcessingStatus  string         `json:"processing_status"`
	RequestCounts     msgBatchCounts `json:"request_counts"`
	EndedAt           *time.Time     `json:"ended_at"`
	CreatedAt         time.Time      `json:"created_at"`
	ExpiresAt         time.Time      `json:"expires_at"`
	ArchivedAt        *time.Time     `json:"archived_at"`
	CancelInitiatedAt *time.Time     `json:"cancel_initiated_at"`
	ResultsURL        *string        `json:"results_url"`
}

type msgBatchCounts struct {
	Processing int64 `json:"processing"`
	Succeeded  int64 `json:"succeeded"`
	Errored    int64 `json:"errored"`
	Canceled   int64 `json:"canceled"`
	Expired    int64 `json:"expired"`
}

func timeOrNull(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// object renders the batch; base is the scheme and host the client called, for results_url. The caller holds
// s.mu.
func (b *msgBatch) object(base string) messageBatchObject {
	o := messageBatchObject{
		ID: b.ID, Type: "message_batch", ProcessingStatus: b.Status,
		EndedAt: timeOrNull(b.EndedAt), CreatedAt: b.CreatedAt.UTC(), ExpiresAt: b.ExpiresAt.UTC(),
		CancelInitiatedAt: timeOrNull(b.CancelInitiated),
	}
	if b.Status == ProcessingEnded {
		o.RequestCounts = msgBatchCounts{Succeeded: b.Succeeded, Errored: b.Errored, Canceled: b.Canceled, Expired: b.Expired}
		u := base + "/v1/messages/batches/" + b.ID + "/results"
		o.ResultsURL = &u
	} else {
		// Requests count as processing until the whole batch ends, as the real service reports them.
		o.RequestCounts.Processing = b.Requests
	}
	return o
}

// baseURL is the scheme and host the client reached the emulator at.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Server) anthropicRoutes(m *http.ServeMux) {
	m.Handle("POST /v1/messages/batches", s.anthropicRoute(routeMsgBatchCreate, s.handleMsgBatchCreate))
	m.Handle("GET /v1/messages/batches", s.anthropicRoute(routeMsgBatchList, s.handleMsgBatchList))
	m.Handle("GET /v1/messages/batches/{id}", s.anthropicRoute(routeMsgBatchGet, s.handleMsgBatchGet))
	m.Handle("POST /v1/messages/batches/{id}/cancel", s.anthropicRoute(routeMsgBatchCancel, s.handleMsgBatchCancel))
	m.Handle("DELETE /v1/messages/batches/{id}", s.anthropicRoute(routeMsgBatchDelete, s.handleMsgBatchDelete))
	m.Handle("GET /v1/messages/batches/{id}/results", s.anthropicRoute(routeMsgBatchResults, s.handleMsgBatchResults))
}

// anthropicRoute wraps a Message Batches handler with counting, a request-id, authentication and injected faults.
func (s *Server) anthropicRoute(rt route, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.count(func(st *Stats) { st.addCall(rt) })
		w.Header().Set("request-id", newID("req_"))
		if !s.authorizeAnthropic(w, r) {
			return
		}
		s.serveWithFaults(rt, w, r, h)
	})
}

// authorizeAnthropic checks the API key (never logged) and that an anthropic-version is named. The key comes in
// x-api-key, or as a bearer token, which is how anthropic-sdk-go v2 sends it.
func (s *Server) authorizeAnthropic(w http.ResponseWriter, r *http.Request) bool {
	key := strings.TrimSpace(r.Header.Get("x-api-key"))
	if key == "" {
		if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			key = strings.TrimSpace(bearer)
		}
	}
	switch {
	case key == "":
		s.count(func(st *Stats) { st.Unauthorized++ })
		writeAnthropicError(w, http.StatusUnauthorized, anthropicAuthentication, "x-api-key header is required")
		return false
	case s.opts.APIKey != "" && key != s.opts.APIKey:
		s.count(func(st *Stats) { st.Unauthorized++ })
		writeAnthropicError(w, http.StatusUnauthorized, anthropicAuthentication, "invalid x-api-key")
		return false
	case strings.TrimSpace(r.Header.Get("anthropic-version")) == "":
		writeAnthropicError(w, http.StatusBadRequest, anthropicInvalidRequest, "anthropic-version: header is required")
		return false
	}
	return true
}

// anthropicError is Anthropic's error shape: {"type":"error","error":{"type","message"},"request_id"}.
type anthropicError struct {
	Type      string               `json:"type"`
	Error     anthropicErrorDetail `json:"error"`
	RequestID string               `json:"request_id"`
}

type anthropicErrorDetail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// writeAnthropicError writes Anthropic's error shape, with the request-id of the response.
func writeAnthropicError(w http.ResponseWriter, status int, typ, msg string) {
	id := w.Header().Get("request-id")
	if id == "" {
		id = newID("req_")
		w.Header().Set("request-id", id)
	}
	writeJSON(w, status, anthropicError{Type: "error", Error: anthropicErrorDetail{Type: typ, Message: msg}, RequestID: id})
}

// writeAnthropicInjected answers an Anthropic call with an injected fault: 429 rate_limit_error, or for a server
// error either 500 api_error or 529 overloaded_error, the two the real service sends.
func (s *Server) writeAnthropicInjected(w http.ResponseWriter, status int) {
	switch {
	case status == http.StatusTooManyRequests:
		writeAnthropicError(w, status, anthropicRateLimit,
			"Number of requests has exceeded your rate limit. Please try again later. (injected by the emulator)")
	case s.float64() < 0.5:
		writeAnthropicError(w, statusAnthropicOverloaded, anthropicOverloaded, "Overloaded (injected by the emulator)")
	default:
		writeAnthropicError(w, http.StatusInternalServerError, anthropicAPIError, "Internal server error (injected by the emulator)")
	}
}

func writeMsgBatchNotFound(w http.ResponseWriter, id string) {
	writeAnthropicError(w, http.StatusNotFound, anthropicNotFound, fmt.Sprintf("Message batch %s not found.", id))
}

func (s *Server) handleMsgBatchGet(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	b, ok := s.anthropic.batches[id]
	var obj messageBatchObject
	if ok {
		obj = b.object(baseURL(r))
	}
	s.mu.Unlock()
	if !ok {
		writeMsgBatchNotFound(w, id)
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

// messageBatchPage is the list answer: one page of batches, newest first.
type messageBatchPage struct {
	Data    []messageBatchObject `json:"data"`
	HasMore bool                 `json:"has_more"`
	FirstID *string              `json:"first_id"`
	LastID  *string              `json:"last_id"`
}

// handleMsgBatchList lists batches newest first. after_id pages toward older batches, before_id toward newer ones
// (the page closest to the cursor, still newest first), which is how the SDK's pager follows first_id and last_id.
func (s *Server) handleMsgBatchList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 20
	if raw := q.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > 1000 {
			writeAnthropicError(w, http.StatusBadRequest, anthropicInvalidRequest,
				fmt.Sprintf("limit: Input should be an integer between 1 and 1000, got '%s'", raw))
			return
		}
		limit = n
	}
	before, after := q.Get("before_id"), q.Get("after_id")
	if before != "" && after != "" {
		writeAnthropicError(w, http.StatusBadRequest, anthropicInvalidRequest, "Only one of before_id and after_id may be given.")
		return
	}
	base := baseURL(r)
	page := messageBatchPage{Data: make([]messageBatchObject, 0, limit)}
	s.mu.Lock()
	seq := s.anthropic.seq
	index := func(id string) int {
		return slices.IndexFunc(seq, func(b *msgBatch) bool { return b.ID == id })
	}
	switch {
	case before != "":
		// Newer than the cursor: indexes j+1.., the limit closest to it, listed newest first.
		if j := index(before); j >= 0 {
			hi := min(j+limit, len(seq)-1)
			for i := hi; i > j; i-- {
				page.Data = append(page.Data, seq[i].object(base))
			}
			page.HasMore = hi < len(seq)-1
		}
	default:
		i := len(seq) - 1
		if after != "" {
			i = index(after) - 1 // an unknown cursor yields an empty page
			if i < -1 {
				i = -1
			}
		}
		for ; i >= 0 && len(page.Data) < limit; i-- {
			page.Data = append(page.Data, seq[i].object(base))
		}
		page.HasMore = i >= 0
	}
	s.mu.Unlock()
	if n := len(page.Data); n > 0 {
		page.FirstID, page.LastID = &page.Data[0].ID, &page.Data[n-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) handleMsgBatchCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	b, ok := s.anthropic.batches[id]
	if !ok {
		s.mu.Unlock()
		writeMsgBatchNotFound(w, id)
		return
	}
	switch b.Status {
	case ProcessingInProgress:
		b.Status, b.CancelInitiated = ProcessingCanceling, s.now()
		b.cancelReq.Store(true)
		s.sched.nudge(b.timer)
	case ProcessingCanceling:
	default:
		s.mu.Unlock()
		writeAnthropicError(w, http.StatusBadRequest, anthropicInvalidRequest,
			fmt.Sprintf("Message batch %s has already ended and cannot be canceled.", id))
		return
	}
	obj := b.object(baseURL(r))
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, obj)
}

// deletedMessageBatch is the DeletedMessageBatch schema.
type deletedMessageBatch struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// handleMsgBatchDelete deletes an ended batch with its requests and results; a running one must be canceled first.
func (s *Server) handleMsgBatchDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	b, ok := s.anthropic.batches[id]
	if !ok {
		s.mu.Unlock()
		writeMsgBatchNotFound(w, id)
		return
	}
	if b.Status != ProcessingEnded {
		s.mu.Unlock()
		writeAnthropicError(w, http.StatusBadRequest, anthropicInvalidRequest,
			fmt.Sprintf("Message batch %s is still processing; cancel it and wait for it to end before deleting it.", id))
		return
	}
	delete(s.anthropic.batches, id)
	s.anthropic.seq = slices.DeleteFunc(s.anthropic.seq, func(o *msgBatch) bool { return o == b })
	s.mu.Unlock()
	// A download in flight keeps its open descriptor; the unlink does not disturb it.
	for _, p := range []string{b.requestsPath, b.resultsPath} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("delete message batch file", "batch", id, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, deletedMessageBatch{ID: id, Type: "message_batch_deleted"})
}

// ExpireMessageBatch makes a message batch that is still in_progress expire: it stops after answering
// Options.ExpireCompletedShare of its requests (or at once if it answered more already), and its other requests
// end with expired results.
func (s *Server) ExpireMessageBatch(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.anthropic.batches[id]
	if !ok {
		return fmt.Errorf("expire message batch %s: %w", id, errNotFound)
	}
	if b.Status != ProcessingInProgress {
		return fmt.Errorf("expire message batch %s: processing_status is %s", id, b.Status)
	}
	b.expireReq.Store(true)
	s.sched.nudge(b.timer)
	return nil
}
