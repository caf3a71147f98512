package poll

import (
	"errors"
	"net/http"

	"github.com/openai/openai-go/v3"
)

// errorKind sorts API errors by what the daemon does about them.
type errorKind int

const (
	errPermanent errorKind = iota // a 4xx that will not change: report it
	errTransient                  // 408, 409, 429, 5xx, network: retry with backoff
	errAuth                       // 401, 403: log loudly, keep state, wait
	errNotFound                   // 404: transient right after creation, suspicious later
)

func classify(err error) errorKind {
	var apiErr *openai.Error
	if errors.As(err, &apiErr) {
		switch code := apiErr.StatusCode; {
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			return errAuth
		case code == http.StatusNotFound:
			return errNotFound
		case code == http.StatusRequestTimeout || code == http.StatusConflict || code == http.StatusTooManyRequests || code >= 500:
			return errTransient
		default:
			return errPermanent
		}
	}
	// Network errors, resets, truncated bodies and timeouts: the request may well succeed next time.
	return errTransient
}
