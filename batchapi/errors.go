package batchapi

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
)

// ErrorKind sorts the errors of API calls by what a caller should do about them.
type ErrorKind int

// Error kinds.
const (
	// Transient: 408, 409, 429, 5xx, a failed or cut connection, a truncated body. Retry with backoff.
	Transient ErrorKind = iota
	// Auth: 401, 403. Retrying will not help until the key changes.
	Auth
	// NotFound: 404. Right after creating an object, the API may not know it yet.
	NotFound
	// Permanent: any other 4xx, and cancellation of the caller's context.
	Permanent
	// Local: this machine's file system failed the call (a request file missing, unreadable, a directory), before
	// or while it was sent. Not the API's doing, and retrying will not help until someone fixes the file.
	Local
)

// String names the kind, for logs and metric labels.
func (k ErrorKind) String() string {
	switch k {
	case Auth:
		return "auth"
	case NotFound:
		return "not_found"
	case Permanent:
		return "permanent"
	case Local:
		return "local"
	}
	return "transient"
}

// apiAnswer is the HTTP answer of an API error in err's chain, from either SDK (OpenAI's, Anthropic's): its status
// and headers, and what the API said (message, then code, param and type when given). ok is false when err holds
// no API answer.
func apiAnswer(err error) (status int, header http.Header, message string, details []string, ok bool) {
	if e, isOpenAI := errors.AsType[*openai.Error](err); isOpenAI {
		if e.Response != nil {
			header = e.Response.Header
		}
		for _, d := range []struct{ name, value string }{{"code", e.Code}, {"param", e.Param}, {"type", e.Type}} {
			if d.value != "" {
				details = append(details, d.name+" "+d.value)
			}
		}
		return e.StatusCode, header, e.Message, details, true
	}
	if e, isAnthropic := errors.AsType[*anthropic.Error](err); isAnthropic {
		if e.Response != nil {
			header = e.Response.Header
		}
		if t := string(e.Type()); t != "" {
			details = append(details, "type "+t)
		}
		return e.StatusCode, header, e.Message, details, true
	}
	return 0, nil, "", nil, false
}

// Classify tells what kind of error err is.
func Classify(err error) ErrorKind {
	if status, _, _, _, ok := apiAnswer(err); ok {
		switch code := status; {
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			return Auth
		case code == http.StatusNotFound:
			return NotFound
		case code == http.StatusRequestTimeout || code == http.StatusConflict || code == http.StatusTooManyRequests || code >= 500:
			return Transient
		default:
			return Permanent
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrReconcileIncomplete) {
		return Permanent
	}
	// The net package reports its failures as *net.OpError, never as *fs.PathError, so a path error in the chain
	// is a local file's, even inside the *url.Error of a request whose body failed to read.
	if _, ok := errors.AsType[*fs.PathError](err); ok {
		return Local
	}
	if _, ok := errors.AsType[*os.LinkError](err); ok {
		return Local
	}
	return Transient
}

// RetryAfter is the wait a 429 answer asked for (Retry-After-Ms, else Retry-After in seconds), or 0.
func RetryAfter(err error) time.Duration {
	_, h, _, _, ok := apiAnswer(err)
	if !ok || h == nil {
		return 0
	}
	if ms, err := strconv.ParseFloat(h.Get("Retry-After-Ms"), 64); err == nil && ms > 0 {
		return time.Duration(ms * float64(time.Millisecond))
	}
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// Message is err's text for logs: for an API error its status and what the API said (see Said), without the SDK's
// request dump.
func Message(err error) string {
	if status, _, _, _, ok := apiAnswer(err); ok {
		return strconv.Itoa(status) + " " + Said(err)
	}
	return err.Error()
}

// isStatus reports whether err is an API answer with the given HTTP status.
func isStatus(err error, status int) bool {
	got, _, _, _, ok := apiAnswer(err)
	return ok && got == status
}

// IsStatus reports whether err is an API answer with the given HTTP status.
func IsStatus(err error, status int) bool { return isStatus(err, status) }

// Said is what the API said in the error answer in err's chain: its message, then its code, parameter and type when
// given ("No batch found with id 'x'. (type invalid_request_error)"). It is "" when err holds no API error or the
// answer had no message (a proxy's HTML page, say). openai-go's own error text is only the HTTP status.
func Said(err error) string {
	_, _, message, details, ok := apiAnswer(err)
	if !ok || message == "" {
		return ""
	}
	if len(details) == 0 {
		return message
	}
	return message + " (" + strings.Join(details, ", ") + ")"
}
