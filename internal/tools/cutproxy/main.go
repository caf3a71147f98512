// Command cutproxy is a reverse proxy for make bench that cuts every response body after a number of bytes: the
// connection is dropped mid-body while Content-Length still announces the whole file, as a flaky network or proxy
// does to a large download. A client that resumes with a Range request gets the next part, cut again after as many
// bytes, and so on to the end: a 785 MB file through `-every 100000000` takes 8 responses and 7 cuts.
//
//	cutproxy -target http://127.0.0.1:8080/v1 -every 100000000
//
// It prints {"base_url":"http://ADDR/v1"} (the target's path on its own address) on stdout once it listens, and on
// SIGINT or SIGTERM the number of bodies it cut on stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

func main() {
	target := flag.String("target", "", "base URL to forward to, e.g. http://127.0.0.1:8080/v1")
	every := flag.Int64("every", 100_000_000, "bytes of a response body after which its connection is cut")
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	u, err := url.Parse(*target)
	if *target == "" || err != nil || u.Host == "" || *every <= 0 {
		fmt.Fprintln(os.Stderr, "usage: cutproxy -target URL [-every BYTES] [-addr HOST:PORT]")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}

	var cuts atomic.Int64
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: u.Scheme, Host: u.Host})
			r.Out.Host = u.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Body = &cutBody{ReadCloser: resp.Body, left: *every, cuts: &cuts}
			return nil
		},
		// The proxy reports each cut as a body copy error: counted instead.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := &http.Server{Handler: proxy}
	fmt.Printf("{\"base_url\":\"http://%s%s\"}\n", ln.Addr(), u.Path)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "cutproxy: %d response bodies cut after %d bytes\n", cuts.Load(), *every)
}

// errCut ends a body that has given its share: the reverse proxy then aborts the response, and the client sees the
// connection close before Content-Length bytes.
var errCut = errors.New("cutproxy: connection cut")

// cutBody passes through at most left bytes of a body, then fails.
type cutBody struct {
	io.ReadCloser
	left int64
	cuts *atomic.Int64
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// A body of exactly the share ends here: only one with more to send is cut.
		var one [1]byte
		if n, err := b.ReadCloser.Read(one[:]); n == 0 && errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		b.cuts.Add(1)
		return 0, errCut
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
