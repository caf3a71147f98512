package web

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// tokenCookie carries the bearer token of a browser that handed it over once as ?token=.
const tokenCookie = "batchctl_token"

// csrfHeader carries the per-process CSRF token on every action.
const csrfHeader = "X-Batchctl-CSRF"

// IsLoopback reports whether addr (host:port, as --addr takes it) listens on loopback only. An empty host or a
// wildcard (":8080", "0.0.0.0:8080") listens everywhere.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostAllowed refuses, when no token protects the surface, a Host header other than a loopback name: a page of
// another site whose name was made to resolve to 127.0.0.1 (DNS rebinding) then reads nothing.
func (s *Server) hostAllowed(r *http.Request) bool {
	if s.opts.AuthToken != "" {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authorized checks the bearer token (header or cookie) when one is configured. A first visit with ?token= sets the
// cookie and redirects to the same URL without the token, so it stays out of the history and of Referer headers.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	want := s.opts.AuthToken
	if want == "" {
		return true
	}
	if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && equal(got, want) {
		return true
	}
	if c, err := r.Cookie(tokenCookie); err == nil && equal(c.Value, want) {
		return true
	}
	if q := r.URL.Query(); q.Has("token") && r.Method == http.MethodGet && equal(q.Get("token"), want) {
		http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: want, Path: "/", HttpOnly: true,
			SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
		q.Del("token")
		u := *r.URL
		u.RawQuery = q.Encode()
		http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
		return false
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="batchctl"`)
	http.Error(w, "unauthorized: send Authorization: Bearer <token>, or open the page once with ?token=<token>", http.StatusUnauthorized)
	return false
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// sameOrigin reports whether a state-changing request comes from this site's own page: the browser's Sec-Fetch-Site
// says same-origin (or none, typed by the user), and an Origin header, when sent, names this host. A request without
// either (curl) passes this check; the CSRF token is what stops it.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

// action guards a state-changing dashboard route: enabled only with AllowActions, from the same origin, with this
// process's CSRF token.
func (s *Server) action(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case !s.opts.AllowActions:
			http.Error(w, "read-only: start batchctl serve with --allow-actions to cancel or resubmit", http.StatusForbidden)
		case !sameOrigin(r):
			http.Error(w, "cross-site request refused", http.StatusForbidden)
		case !equal(r.Header.Get(csrfHeader), s.csrf):
			http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
		default:
			h(w, r)
		}
	}
}

// riverUIGuard keeps River UI read-only unless AllowActions, and then refuses its state-changing calls from another
// site (River UI's page sends JSON with fetch, which a cross-site form cannot forge without the browser saying so).
func (s *Server) riverUIGuard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if !s.opts.AllowActions {
				http.Error(w, "read-only: start batchctl serve with --allow-actions to act on jobs", http.StatusForbidden)
				return
			}
			if !sameOrigin(r) || r.Header.Get("Origin") == "" && r.Header.Get("Sec-Fetch-Site") == "" && r.Header.Get("Authorization") == "" {
				http.Error(w, "cross-site request refused", http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
