package web

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/batchctl/batchctl/store"
)

// Timings of the live updates.
const (
	// keepAlive is how often an idle event stream sends a comment, so proxies and browsers keep it open.
	keepAlive = 15 * time.Second
	// relistenDelay is the wait before listening again after the listening session failed (a database restart).
	relistenDelay = time.Second
	// subscriberBuffer is how many notifications a slow browser may lag behind before it misses some: it refetches
	// the whole page on any event, so a missed one costs nothing.
	subscriberBuffer = 64
)

// event is what /events sends: a batch's status change (Kind "batch"), its progress or its results loaded
// ("progress"), or "sync" after the listening session (re)started, when changes may have been missed.
type event struct {
	Kind         string             `json:"kind"`
	Notification store.Notification `json:"batch"`
}

// hub fans the notifications of one listening session out to every open event stream.
type hub struct {
	mu   sync.Mutex
	subs map[chan event]struct{}
	// listening is closed once the first listening session is up.
	listening chan struct{}
	once      sync.Once
}

func newHub() *hub { return &hub{subs: map[chan event]struct{}{}, listening: make(chan struct{})} }

// run listens on store.NotifyChannel until ctx ends, listening again after a failure.
func (h *hub) run(ctx context.Context, s *store.Store, log *slog.Logger) {
	for {
		err := s.Listen(ctx, func() {
			h.once.Do(func() { close(h.listening) })
			h.broadcast(event{Kind: "sync"})
		}, func(n store.Notification) {
			kind := "batch"
			if n.Event != "" {
				kind = "progress"
			}
			h.broadcast(event{Kind: kind, Notification: n})
		})
		if ctx.Err() != nil {
			return
		}
		log.Warn("dashboard: listening for batch changes failed; listening again", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(relistenDelay):
		}
	}
}

func (h *hub) subscribe() chan event {
	ch := make(chan event, subscriberBuffer)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch
}

func (h *hub) unsubscribe(ch chan event) {
	h.mu.Lock()
	delete(h.subs, ch)
	h.mu.Unlock()
}

func (h *hub) broadcast(e event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- e:
		default: // the browser lags; it refetches on the next event anyway
		}
	}
}

// serveEvents streams batch changes as server-sent events until the browser goes away: "hello" once the stream
// misses nothing, then "batch" for each status change, "progress" for request counts and loads, and "sync" after the listening session started again. The page
// refetches what it shows on each; when the stream breaks, it polls until the stream is back.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	ch := s.hub.subscribe()
	defer s.hub.unsubscribe(ch)
	// "hello" promises that no later change is missed: it waits for the listening session.
	select {
	case <-s.hub.listening:
	case <-r.Context().Done():
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The browser reconnects 2 s after a break; "hello" tells the page the stream is up.
	if _, err := fmt.Fprint(w, "retry: 2000\nevent: hello\ndata: {}\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			_, err = fmt.Fprint(w, ": keep-alive\n\n")
		case e := <-ch:
			data, _ := json.Marshal(e)
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Kind, data)
		}
		if err != nil || rc.Flush() != nil {
			return
		}
	}
}
