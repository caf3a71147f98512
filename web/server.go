// Package web is batchctl's web surface, one http.Handler for batchctl serve and poll --http: a live dashboard of the
// batch-ID table (/, its JSON under /api/ and its server-sent events at /events), River UI (/riverui/), the
// Prometheus metrics (/metrics), and OpenAI's signed webhooks (/webhooks/openai).
//
// It reads through store and never calls a batch API, so it needs only the database: a webhook queues a River job
// that the pollers work, and so do the dashboard's actions. Its page is plain HTML, CSS and JavaScript embedded in
// the binary, with no build step.
package web

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"riverqueue.com/riverui"

	"github.com/batchctl/batchctl/store"
)

// Defaults of Options.
const (
	// DefaultPageSize is how many batches one page of each dashboard list shows.
	DefaultPageSize = 50
	// DefaultWebhookTolerance is how far a webhook's timestamp may be from now (Standard Webhooks' 5 minutes).
	DefaultWebhookTolerance = 5 * time.Minute
	// NearExpiry: a batch in flight with less than this left of its completion window is highlighted.
	NearExpiry = 4 * time.Hour
	// CompletionWindow is the Batch API's window (OpenAI and Anthropic; Azure's global batch has none).
	CompletionWindow = 24 * time.Hour
)

// Options configure a Server. Store is required.
type Options struct {
	Store  *store.Store
	Logger *slog.Logger
	// Gatherer is served at /metrics (the registry of poll --metrics-addr); nil leaves /metrics out.
	Gatherer prometheus.Gatherer
	// AuthToken, when set, is the bearer token every route but /webhooks/openai requires (that one has its own
	// signature). A browser hands it over once as ?token=..., which sets a cookie.
	AuthToken string
	// WebhookSecret (whsec_...) verifies /webhooks/openai; empty refuses every webhook.
	WebhookSecret string
	// WebhookTolerance bounds the age of a webhook's timestamp (DefaultWebhookTolerance).
	WebhookTolerance time.Duration
	// AllowActions enables the dashboard's cancel and resubmit buttons (and River UI's job actions); otherwise the
	// surface is read-only.
	AllowActions bool
	// NoRiverUI leaves River UI out.
	NoRiverUI bool
	// PageSize is the batches per page of each list (DefaultPageSize).
	PageSize int
	// Now replaces time.Now (webhook timestamps, batch ages).
	Now func() time.Time
}

// Server is the web surface. Create it with New, start its background work with Start, and serve it.
type Server struct {
	opts    Options
	log     *slog.Logger
	store   *store.Store
	mux     *http.ServeMux
	hub     *hub
	riverUI *riverui.Handler
	// csrf is this process's token for the actions: the page reads it from /api/dashboard (same origin only) and
	// sends it back in a header.
	csrf string
}

// New builds the Server; it starts nothing.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("web: Options.Store is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.PageSize = cmp.Or(opts.PageSize, DefaultPageSize)
	opts.WebhookTolerance = cmp.Or(opts.WebhookTolerance, DefaultWebhookTolerance)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var tok [24]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, fmt.Errorf("web: CSRF token: %w", err)
	}
	s := &Server{opts: opts, log: opts.Logger, store: opts.Store, mux: http.NewServeMux(), hub: newHub(),
		csrf: hex.EncodeToString(tok[:])}

	s.mux.Handle("GET /{$}", s.page(http.HandlerFunc(s.serveIndex)))
	s.mux.Handle("GET /assets/", s.page(http.StripPrefix("/assets/", http.FileServerFS(assetsFS()))))
	s.mux.HandleFunc("GET /api/dashboard", s.serveDashboard)
	s.mux.HandleFunc("GET /api/batches/{id}", s.serveBatch)
	s.mux.HandleFunc("POST /api/batches/{id}/cancel", s.action(s.cancelBatch))
	s.mux.HandleFunc("POST /api/batches/{id}/resubmit", s.action(s.resubmitBatch))
	s.mux.HandleFunc("GET /events", s.serveEvents)
	s.mux.HandleFunc("POST /webhooks/openai", s.serveWebhook)
	if opts.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	}
	if !opts.NoRiverUI {
		rc, err := river.NewClient(riverpgxv5.New(opts.Store.Pool()), &river.Config{Schema: opts.Store.Schema()})
		if err != nil {
			return nil, fmt.Errorf("web: River client for River UI: %w", err)
		}
		ui, err := riverui.NewHandler(&riverui.HandlerOpts{
			Endpoints: riverui.NewEndpoints[pgx.Tx](rc, nil),
			Logger:    opts.Logger.With("component", "riverui"),
			Prefix:    "/riverui",
		})
		if err != nil {
			return nil, fmt.Errorf("web: River UI: %w", err)
		}
		s.riverUI = ui
		s.mux.Handle("/riverui/", s.riverUIGuard(ui))
	}
	return s, nil
}

// Start starts the background work (the NOTIFY listener feeding /events, River UI's caches) until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	if s.riverUI != nil {
		if err := s.riverUI.Start(ctx); err != nil {
			return fmt.Errorf("start River UI: %w", err)
		}
	}
	go s.hub.run(ctx, s.store, s.log)
	return nil
}

// ServeHTTP serves every route, behind the host check and the bearer token.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if r.URL.Path == "/webhooks/openai" {
		s.mux.ServeHTTP(w, r) // signed: no token, no cookie
		return
	}
	if !s.hostAllowed(r) {
		http.Error(w, "forbidden host: without --auth-token, only localhost names are served", http.StatusForbidden)
		return
	}
	if !s.authorized(w, r) {
		return
	}
	s.mux.ServeHTTP(w, r)
}

// page adds the headers of the dashboard's own documents: a strict content security policy (no inline script, no
// other origin) and no framing.
func (s *Server) page(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		w.Header().Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}
