// Package emulator is a local, stateful emulator of the OpenAI Files and Batches API.
//
// Everything batchctl does is tested and demonstrated against it: a [Server] is an [http.Handler] that accepts the
// calls of the official openai-go client (upload, create, poll, list, download, cancel), runs every batch through
// the real lifecycle (validating → in_progress → finalizing → completed, or failed, expired, cancelled) at a
// configurable pace, answers each request line with a deterministic fake answer, and can inject the faults a client
// must survive: 429 and 500 answers, connections cut mid-response, slow and truncated downloads, failed request
// lines, expired batches and enqueued-token limits.
//
// File bodies live on disk under [Options.DataDir] and are streamed in and out line by line, so a 500 MB file costs
// no 500 MB of memory. Tests read what the emulator received through [Server.Files], [Server.Batches] and
// [Server.Stats].
package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Default limits, those of the real service.
const (
	// DefaultPhaseDelay is how long each lifecycle phase lasts when Options.PhaseDelay is zero.
	DefaultPhaseDelay = time.Second
	// DefaultMaxRequestsPerFile is the real service's cap on request lines per batch input file.
	DefaultMaxRequestsPerFile = 50_000
	// DefaultMaxFileBytes is the real service's cap on the size of a batch input file (200 MB).
	DefaultMaxFileBytes = 200 << 20
	// DefaultMaxUploadBytes is the real service's cap on any uploaded file (512 MB).
	DefaultMaxUploadBytes = 512 << 20
	// DefaultMaxBatchCreatesPerHour is the real service's cap on batch creations in any hour.
	DefaultMaxBatchCreatesPerHour = 2_000
	// DefaultRetryAfter is the wait announced by injected 429 answers when Options.RetryAfter is zero.
	DefaultRetryAfter = time.Second
	// MaxEmbeddingInputs caps the embedding inputs summed over all requests of an /v1/embeddings batch.
	MaxEmbeddingInputs = 50_000
)

// Options configure a [Server]. The zero value is a working emulator: temporary data directory, any non-empty API
// key accepted, one second per phase, the real service's limits and no faults.
type Options struct {
	// DataDir holds file bodies and the emulator's scratch files. Empty means a temporary directory that Close
	// removes; a directory given here is created if needed and left in place.
	DataDir string
	// APIKey, when set, is the only bearer token accepted; otherwise any non-empty token is.
	APIKey string
	// PhaseDelay is how long each lifecycle phase (validating, in_progress, finalizing, cancelling) lasts.
	// Zero means DefaultPhaseDelay; tests pass a few milliseconds.
	PhaseDelay time.Duration
	// Seed makes fault choices, failed request lines and the output order deterministic.
	Seed int64
	// Now replaces time.Now for every timestamp the emulator writes (and for the 24-hour expiry check).
	Now func() time.Time
	// Logger receives lifecycle transitions at debug level and internal errors. Nil discards them.
	Logger *slog.Logger
	// Workers is how many batch lifecycle steps (validating a file, answering a slice of it, writing the result
	// files) run at once, whatever the number of batches in flight; zero means DefaultWorkers. The files open at a
	// time, and the goroutines, are bounded by it.
	Workers int

	// MaxRequestsPerFile caps the request lines of a batch input file; zero means DefaultMaxRequestsPerFile.
	MaxRequestsPerFile int
	// MaxFileBytes caps the size of a batch input file; zero means DefaultMaxFileBytes.
	MaxFileBytes int64
	// MaxUploadBytes caps any uploaded file; zero means DefaultMaxUploadBytes.
	MaxUploadBytes int64
	// MaxBatchCreatesPerHour caps batch creations in any hour (a sliding window of the emulator's clock): one more
	// is answered 429 rate_limit_exceeded, with Retry-After until the oldest leaves the window. Zero means
	// DefaultMaxBatchCreatesPerHour; negative, no cap.
	MaxBatchCreatesPerHour int
	// Azure configures the Azure OpenAI paths (/openai/...): their own limits and deployments.
	Azure AzureOptions
	// MaxMessageBatchRequests caps the requests of an Anthropic message batch; zero means
	// DefaultMaxMessageBatchRequests.
	MaxMessageBatchRequests int
	// MaxMessageBatchBytes caps the body of an Anthropic message batch creation (413 past it); zero means
	// DefaultMaxMessageBatchBytes.
	MaxMessageBatchBytes int64

	// RequestFailRate is the share of request lines (0..1) that fail: their answer is a non-200 response or an
	// error object, in the error file or, for some 5xx answers, in the output file.
	RequestFailRate float64
	// GarbleRate is the share of structured answers (a chat completion or response asking for a JSON schema: see
	// structured.go) that come back broken: an array item dropped, an item repeated (a duplicated index), JSON cut
	// short, or the answer cut at the output limit with finish_reason length. Picked by a hash of Seed, the
	// batch's creation sequence and the custom_id, as RequestFailRate's failures: a run that creates its batches
	// in the same order is garbled the same.
	GarbleRate float64
	// HTTP429Rate is the share of /v1 calls answered 429 rate_limit_exceeded with a Retry-After header.
	HTTP429Rate float64
	// HTTP500Rate is the share of /v1 calls answered 500 server_error.
	HTTP500Rate float64
	// ResetRate is the share of /v1 calls whose connection is cut: the call takes effect (a file is stored, a
	// batch created) but the response stops half way, as when a proxy drops the connection.
	ResetRate float64
	// TruncateDownloadRate is the share of content downloads that stop after part of the body while the
	// Content-Length header announces the full size.
	TruncateDownloadRate float64
	// DownloadBytesPerSec throttles content downloads; zero means unlimited.
	DownloadBytesPerSec int
	// RetryAfter is the wait announced by injected 429 answers (Retry-After in whole seconds, rounded up, and
	// Retry-After-Ms exactly); zero means DefaultRetryAfter.
	RetryAfter time.Duration
	// ExpireRate is the share of new batches that expire instead of completing; see also [Server.ExpireBatch].
	ExpireRate float64
	// ExpireCompletedShare is the share (0..1) of an expiring batch's requests answered before it expires.
	ExpireCompletedShare float64
	// TokenLimitPerModel caps the prompt tokens enqueued per model (batches in_progress or finalizing); a batch
	// that would pass the cap fails with errors.data[0].code token_limit_exceeded.
	TokenLimitPerModel map[string]int64
	// WebhookURL, when set, receives OpenAI's batch.completed, batch.failed, batch.expired and batch.cancelled
	// events as each OpenAI batch ends, signed the Standard Webhooks way with WebhookSecret (see SignWebhook), and
	// delivered again a few times until it answers 2xx.
	WebhookURL string
	// WebhookSecret signs the events: whsec_ and a base64 key, as OpenAI issues them.
	WebhookSecret string
	// LateOutputFile is how long a batch reports completed with a null output_file_id before the id appears, as
	// the real service sometimes does; zero means the id comes with the status.
	LateOutputFile time.Duration
	// DiskFailRate is the share of batches whose answering fails inside the emulator as on a full disk: the batch
	// ends failed with a server_error in errors.data, as any internal failure does, never completed.
	DiskFailRate float64
}

// Faults are the fault-injection settings that can change while the emulator runs; see [Server.SetFaults]. The
// fields mean what the Options fields of the same names mean.
type Faults struct {
	RequestFailRate      float64
	HTTP429Rate          float64
	HTTP500Rate          float64
	ResetRate            float64
	TruncateDownloadRate float64
	DownloadBytesPerSec  int
	RetryAfter           time.Duration
	ExpireRate           float64
	ExpireCompletedShare float64
	TokenLimitPerModel   map[string]int64
	LateOutputFile       time.Duration
	DiskFailRate         float64
}

func (o Options) faults() Faults {
	return Faults{
		RequestFailRate:      o.RequestFailRate,
		HTTP429Rate:          o.HTTP429Rate,
		HTTP500Rate:          o.HTTP500Rate,
		ResetRate:            o.ResetRate,
		TruncateDownloadRate: o.TruncateDownloadRate,
		DownloadBytesPerSec:  o.DownloadBytesPerSec,
		RetryAfter:           o.RetryAfter,
		ExpireRate:           o.ExpireRate,
		ExpireCompletedShare: o.ExpireCompletedShare,
		TokenLimitPerModel:   o.TokenLimitPerModel,
		LateOutputFile:       o.LateOutputFile,
		DiskFailRate:         o.DiskFailRate,
	}
}

// Server is the emulator. It implements [http.Handler]; mount it at the root of a listener (httptest.NewServer or
// http.Server) and point clients at <url>/v1. Create it with [New] and release it with [Server.Close].
type Server struct {
	opts    Options
	dataDir string
	tempDir bool // dataDir was created by New and is removed by Close
	log     *slog.Logger
	mux     *http.ServeMux

	ctx    context.Context // cancelled by Close; stops the scheduler
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sched  *scheduler // steps every batch's lifecycle

	faultMu sync.RWMutex
	faults  Faults

	rngMu sync.Mutex
	rng   *rand.Rand

	mu       sync.Mutex
	files    map[string]*fileMeta
	fileSeq  []*fileMeta // creation order
	batches  map[string]*batch
	batchSeq []*batch // creation order
	enqueued map[string]int64
	creates  []time.Time // batch creations of the last hour, oldest first
	stats    Stats
	closed   bool

	anthropic anthropicState // the Message Batches API's batches
}

// New creates an emulator. It fails only when the data directory cannot be created.
func New(opts Options) (*Server, error) {
	if opts.PhaseDelay <= 0 {
		opts.PhaseDelay = DefaultPhaseDelay
	}
	if opts.MaxRequestsPerFile <= 0 {
		opts.MaxRequestsPerFile = DefaultMaxRequestsPerFile
	}
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultMaxFileBytes
	}
	if opts.MaxUploadBytes <= 0 {
		opts.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if opts.MaxBatchCreatesPerHour == 0 {
		opts.MaxBatchCreatesPerHour = DefaultMaxBatchCreatesPerHour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		files:    make(map[string]*fileMeta),
		batches:  make(map[string]*batch),
		enqueued: make(map[string]int64),
		faults:   opts.faults(),
		rng:      rand.New(rand.NewPCG(uint64(opts.Seed), 0x6f70656e6169)), //nolint:gosec // fault choices, not secrets
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.DataDir == "" {
		dir, err := os.MkdirTemp("", "batchctl-emulator-")
		if err != nil {
			return nil, fmt.Errorf("create emulator data dir: %w", err)
		}
		s.dataDir, s.tempDir = dir, true
	} else {
		s.dataDir = opts.DataDir
	}
	for _, sub := range []string{"files", "tmp", "batches"} {
		if err := os.MkdirAll(filepath.Join(s.dataDir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("create emulator data dir %s: %w", s.dataDir, err)
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.sched = newScheduler()
	s.sched.start(s.ctx, opts.Workers, &s.wg)
	s.routes()
	return s, nil
}

// DataDir returns the directory holding the file bodies.
func (s *Server) DataDir() string { return s.dataDir }

// Close stops the scheduler, waits for the steps under way, and removes the data directory if New created it.
// Batches still running stay in their last status.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	if s.tempDir {
		if err := os.RemoveAll(s.dataDir); err != nil {
			return fmt.Errorf("remove emulator data dir %s: %w", s.dataDir, err)
		}
	}
	return nil
}

// SetFaults replaces the fault-injection settings at runtime, e.g. to let a pipeline finish after a chaos phase.
// Batches already created keep the expiry decision taken at their creation.
func (s *Server) SetFaults(f Faults) {
	s.faultMu.Lock()
	s.faults = f
	s.faultMu.Unlock()
}

// Faults returns the fault-injection settings in force.
func (s *Server) Faults() Faults {
	s.faultMu.RLock()
	defer s.faultMu.RUnlock()
	return s.faults
}

// ServeHTTP serves the emulated API under /v1.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) routes() {
	m := http.NewServeMux()
	m.Handle("POST /v1/files", s.route(routeFileUpload, s.handleFileUpload))
	m.Handle("GET /v1/files", s.route(routeFileList, s.handleFileList))
	m.Handle("GET /v1/files/{id}", s.route(routeFileGet, s.handleFileGet))
	m.Handle("DELETE /v1/files/{id}", s.route(routeFileDelete, s.handleFileDelete))
	m.Handle("GET /v1/files/{id}/content", s.route(routeFileContent, s.handleFileContent))
	m.Handle("POST /v1/batches", s.route(routeBatchCreate, s.handleBatchCreate))
	m.Handle("GET /v1/batches", s.route(routeBatchList, s.handleBatchList))
	m.Handle("GET /v1/batches/{id}", s.route(routeBatchGet, s.handleBatchGet))
	m.Handle("POST /v1/batches/{id}/cancel", s.route(routeBatchCancel, s.handleBatchCancel))
	s.azureRoutes(m)
	s.anthropicRoutes(m)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error", "",
			fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path), "")
	})
	s.mux = m
}

// route wraps an API handler with what every /v1 call goes through: counting, authentication, injected faults.
func (s *Server) route(rt route, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.count(func(st *Stats) { st.addCall(rt) })
		if !s.authorize(w, r) {
			return
		}
		s.serveWithFaults(rt, w, r, h)
	})
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	token = strings.TrimSpace(token)
	switch {
	case !ok || token == "":
		s.count(func(st *Stats) { st.Unauthorized++ })
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "",
			"You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", "")
		return false
	case s.opts.APIKey != "" && token != s.opts.APIKey:
		s.count(func(st *Stats) { st.Unauthorized++ })
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key",
			fmt.Sprintf("Incorrect API key provided: %s. You can find your API key at https://platform.openai.com/account/api-keys.", redactKey(token)), "")
		return false
	}
	return true
}

func redactKey(k string) string {
	if len(k) <= 8 {
		return strings.Repeat("*", len(k))
	}
	return k[:3] + strings.Repeat("*", 8) + k[len(k)-4:]
}

func (s *Server) now() time.Time { return s.opts.Now() }

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// apiError is OpenAI's error object.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// writeError writes OpenAI's error shape: {"error":{"message","type","param","code"}}.
func writeError(w http.ResponseWriter, status int, typ, code, msg, param string) {
	writeJSON(w, status, map[string]apiError{"error": {Message: msg, Type: typ, Param: nullable(param), Code: nullable(code)}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":{"message":"emulator: encode response","type":"server_error","param":null,"code":null}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

var errNotFound = errors.New("not found")
