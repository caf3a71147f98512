package emulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"
)

// serveWithFaults runs an API handler, or answers in its place with an injected 429 or 500, or runs it and then
// cuts the connection half way through the response.
func (s *Server) serveWithFaults(rt route, w http.ResponseWriter, r *http.Request, h http.HandlerFunc) {
	f := s.Faults()
	if f.HTTP429Rate <= 0 && f.HTTP500Rate <= 0 && f.ResetRate <= 0 {
		h(w, r)
		return
	}
	u := s.float64()
	switch {
	case u < f.HTTP429Rate:
		s.count(func(st *Stats) { st.Injected429++ })
		wait := f.RetryAfter
		if wait <= 0 {
			wait = DefaultRetryAfter
		}
		setRetryAfter(w, wait)
		if rt.anthropic() {
			s.writeAnthropicInjected(w, http.StatusTooManyRequests)
			return
		}
		writeError(w, http.StatusTooManyRequests, "requests", "rate_limit_exceeded",
			"Rate limit reached for requests. Please try again later. (injected by the emulator)", "")
	case u < f.HTTP429Rate+f.HTTP500Rate:
		s.count(func(st *Stats) { st.Injected500++ })
		if rt.anthropic() {
			s.writeAnthropicInjected(w, http.StatusInternalServerError)
			return
		}
		writeError(w, http.StatusInternalServerError, "server_error", "",
			"The server had an error while processing your request. Sorry about that! (injected by the emulator)", "")
	case u < f.HTTP429Rate+f.HTTP500Rate+f.ResetRate:
		s.count(func(st *Stats) { st.InjectedResets++ })
		s.serveCut(rt, w, r, h)
	default:
		h(w, r)
	}
}

// serveCut runs the handler so the call takes effect, then sends only the headers and part of the body before
// dropping the connection. A content download is cut before anything is sent instead, so a large body is never
// buffered.
func (s *Server) serveCut(rt route, w http.ResponseWriter, r *http.Request, h http.HandlerFunc) {
	if rt == routeFileContent || rt == routeMsgBatchResults {
		panic(http.ErrAbortHandler)
	}
	rec := &bufferedResponse{header: make(http.Header), status: http.StatusOK}
	h(rec, r)
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	body := rec.body.Bytes()
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.status)
	_, _ = w.Write(body[:len(body)/2])
	_ = http.NewResponseController(w).Flush()
	// The net/http server closes the connection (HTTP/1) or resets the stream (HTTP/2) without logging.
	panic(http.ErrAbortHandler)
}

// bufferedResponse captures a small JSON response so that it can be cut.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) WriteHeader(status int)      { b.status = status }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }

// copyThrottled copies src to w at about bytesPerSec, flushing each slice so the client sees a slow stream.
func copyThrottled(ctx context.Context, w http.ResponseWriter, src io.Reader, bytesPerSec int) error {
	const tick = 50 * time.Millisecond
	chunk := max(bytesPerSec/int(time.Second/tick), 1)
	buf := make([]byte, chunk)
	rc := http.NewResponseController(w)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return fmt.Errorf("write throttled download: %w", err)
			}
			_ = rc.Flush()
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("read file body: %w", rerr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("throttled download: %w", ctx.Err())
		case <-t.C:
		}
	}
}

func (s *Server) float64() float64 {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64()
}

func (s *Server) chance(p float64) bool { return p > 0 && s.float64() < p }

func (s *Server) int64n(n int64) int64 {
	if n <= 0 {
		return 0
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Int64N(n)
}

// errInjectedDiskFull is the failure DiskFailRate injects.
var errInjectedDiskFull = errors.New("write output bucket: no space left on device (injected by the emulator)")

// setRetryAfter announces the wait of a 429: Retry-After in whole seconds, rounded up, and Retry-After-Ms exactly.
func setRetryAfter(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	w.Header().Set("Retry-After-Ms", strconv.FormatInt(wait.Milliseconds(), 10))
}
