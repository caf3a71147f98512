package emulator

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestPhaseDelay is the phase length Start uses when opts leaves it zero: fast enough for a test, slow enough for a
// client to see every status.
const TestPhaseDelay = 20 * time.Millisecond

// Start serves a new emulator over real HTTP on a loopback port for the duration of a test and returns it with the
// base URL of its API (ending in /v1). Both stop when the test ends.
func Start(t testing.TB, opts Options) (*Server, string) {
	t.Helper()
	if opts.PhaseDelay == 0 {
		opts.PhaseDelay = TestPhaseDelay
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.Close()
		_ = srv.Close()
	})
	return srv, ts.URL + "/v1"
}

// ServeLocal serves s over real HTTP on a free port of 127.0.0.1, for a program rather than a test (make bench's
// tools): it returns the base URL of its API (ending in /v1) and a function that stops the listener. Close s
// itself after that.
func (s *Server) ServeLocal() (baseURL string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/v1", func() { _ = srv.Close() }, nil
}
