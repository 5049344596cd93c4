package apify

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors, for errors.Is. An *APIError matches the one for its status
// (and ErrInvalidClientKey when the API says the clientKey is invalid);
// validation errors, returned before any I/O, wrap ErrInvalidQueueID,
// ErrInvalidClientKey or ErrInvalidInput.
var (
	// ErrInvalidOption matches the error of NewClient or NewClientFromEnv
	// given an option with a bad value.
	ErrInvalidOption = errors.New("invalid option")
	// ErrInvalidInput matches a 400 response, and bad arguments caught before any I/O.
	ErrInvalidInput = errors.New("invalid input")
	// ErrUnauthorized matches a 401 response: a missing or invalid token.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden matches a 403 response: the token may not do this.
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound matches a 404 response: no such queue or request.
	ErrNotFound = errors.New("not found")
	// ErrRateLimited matches a 429 response: the last answer when the
	// retries ran out, or the one that was being retried when the context
	// ended, or would have ended, before the next attempt answered (its
	// Retry-After, clamped to the retry waits, outlasting the deadline, say). In the second
	// case the error is a *RequestError that also matches
	// context.DeadlineExceeded (or context.Canceled).
	ErrRateLimited = errors.New("rate limited")
	// ErrServerError matches any 5xx response.
	ErrServerError = errors.New("server error")
	// ErrInvalidClientKey matches a clientKey rejected before any I/O (longer
	// than 32 characters, not UTF-8, or holding control characters) and a 400
	// response of type invalid-client-key.
	ErrInvalidClientKey = errors.New("invalid clientKey")
	// ErrInvalidQueueID matches a queue ID rejected before any I/O.
	ErrInvalidQueueID = errors.New("invalid queue ID")
	// ErrUnexpectedResponse matches a response that is not what the API
	// documents: a 2xx without the expected JSON envelope, a body over 1 MiB
	// (32 MiB for one page of ListRequests or ListRequestQueues), an
	// undecodable body, or a redirect (redirects are never followed).
	ErrUnexpectedResponse = errors.New("unexpected response")
	// ErrAttemptTimeout matches a call whose last attempt was cut off by the
	// per-attempt timeout ([WithTimeout]), and, like any failure being
	// retried, a call whose context ended while it retried such an attempt
	// (see [RequestError]).
	ErrAttemptTimeout = errors.New("attempt timed out")
)

// APIError is a response with a status outside 2xx. Its fields are enough to
// act on: errors.Is maps StatusCode to the sentinels above, Type is the API's
// machine-readable error type (an open set: compare, don't switch
// exhaustively), and RetryAfter says when the API is willing to be asked again.
type APIError struct {
	StatusCode int
	// Type is the API's error.type, such as "record-not-found"; "" when the
	// body was not the API's error envelope (a proxy's HTML page, say).
	Type string
	// Message is the API's error.message or, when the body was not the error
	// envelope, at most 512 bytes of the body.
	Message string
	// Method and Path are the request's, Path as sent (escaped, without the query).
	Method string
	Path   string
	// Attempts is how many attempts the call made, retries included. In
	// the Last of a [RequestError] it is the RequestError's Attempts: an
	// attempt the context cut off counts, though this response came from
	// the one before it.
	Attempts int
	// RetryAfter is the response's Retry-After header, 0 when it had none.
	RetryAfter time.Duration
	// Header is the response's header, such as X-RateLimit-Limit (the
	// per-queue limit of the call's class), Retry-After, or a proxy's
	// headers: never anything of the request's. A copy, owned by the
	// error. Where a value holds the Client's token (a proxy that echoes
	// the request back), the token reads [REDACTED], as in Message. Error()
	// does not print it.
	Header http.Header
}

// Error reads like
// "apify: POST /v2/request-queues/abc/requests/unlock: 404 record-not-found: Queue was not found".
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("apify: ")
	b.WriteString(e.Method)
	b.WriteByte(' ')
	b.WriteString(e.Path)
	b.WriteString(": ")
	b.WriteString(strconv.Itoa(e.StatusCode))
	switch {
	case e.Type != "":
		b.WriteByte(' ')
		b.WriteString(e.Type)
	case e.Message == "":
		b.WriteByte(' ')
		b.WriteString(http.StatusText(e.StatusCode))
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Attempts > 1 {
		b.WriteString(" (after ")
		b.WriteString(strconv.Itoa(e.Attempts))
		b.WriteString(" attempts)")
	}
	return b.String()
}

// Is maps the status code (and the invalid-client-key type) to the sentinel errors.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrInvalidInput:
		return e.StatusCode == http.StatusBadRequest
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrRateLimited:
		return e.StatusCode == http.StatusTooManyRequests
	case ErrServerError:
		return e.StatusCode >= 500 && e.StatusCode <= 599
	case ErrInvalidClientKey:
		return e.Type == "invalid-client-key"
	case ErrUnexpectedResponse:
		return e.StatusCode < 400
	}
	return false
}

// Temporary reports whether the same call may succeed later: rate limiting
// and the server errors this client retries.
func (e *APIError) Temporary() bool { return retryableStatus(e.StatusCode) }

// RequestError reports a call that ended without a response to act on: the
// network failed, every attempt timed out, or the context ended. Err is the
// cause, so errors.Is(err, context.DeadlineExceeded) and friends work.
//
// A call whose next retry would have to wait past the context's deadline does
// not sleep into it: it returns at once, with Err set to
// context.DeadlineExceeded, just as if the deadline had passed during the
// wait. A context that ends during a retry's wait, or during the attempt
// that follows it, gives the same error: wherever the deadline lands, Last
// is the *APIError of the last response that was being retried (nil after a
// network failure), so one error satisfies both errors.Is(err,
// context.DeadlineExceeded) and errors.As(err, &apiErr), with the status,
// Type and RetryAfter of the last response. When the failure being retried
// was a network error instead, that error is in the chain (errors.Is(err,
// syscall.ECONNREFUSED) holds, say) and in the text. Only a context that
// ends during the first attempt leaves nothing but Err to report.
//
// Attempts counts every attempt the call started, one the context cut off
// included, and Last.Attempts says the same, so neither depends on where
// the deadline landed.
type RequestError struct {
	Method string
	Path   string // as sent, escaped, without the query
	// Attempts is how many attempts the call started.
	Attempts int
	// Err is the cause: the context's error, a network error, or an
	// attempt timeout (see [ErrAttemptTimeout]).
	Err error
	// Last is the last response that was being retried when the context
	// ended; nil when there was none.
	Last *APIError

	lastErr error // the network failure that was to be retried when the ctx ended
}

// Error reads like "apify: POST /v2/request-queues/abc/requests/unlock:
// context deadline exceeded (after 2 attempts; last response 503 server-error)".
func (e *RequestError) Error() string {
	var b strings.Builder
	b.WriteString("apify: ")
	b.WriteString(e.Method)
	b.WriteByte(' ')
	b.WriteString(e.Path)
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.Attempts > 1 || e.Last != nil || e.lastErr != nil {
		b.WriteString(" (")
		if e.Attempts > 1 {
			b.WriteString("after ")
			b.WriteString(strconv.Itoa(e.Attempts))
			b.WriteString(" attempts")
			if e.Last != nil || e.lastErr != nil {
				b.WriteString("; ")
			}
		}
		switch {
		case e.Last != nil:
			b.WriteString("last response ")
			b.WriteString(strconv.Itoa(e.Last.StatusCode))
			if e.Last.Type != "" {
				b.WriteByte(' ')
				b.WriteString(e.Last.Type)
			}
		case e.lastErr != nil:
			b.WriteString("last error: ")
			b.WriteString(e.lastErr.Error())
		}
		b.WriteByte(')')
	}
	return b.String()
}

// Unwrap returns Err and, when set, Last or the network failure that was
// being retried.
func (e *RequestError) Unwrap() []error {
	switch {
	case e.Last != nil:
		return []error{e.Err, e.Last}
	case e.lastErr != nil:
		return []error{e.Err, e.lastErr}
	}
	return []error{e.Err}
}

// Timeout reports whether an attempt timed out or the context's deadline passed.
func (e *RequestError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.Err, &t) && t.Timeout()
}

// unwrapURLError drops net/http's *url.Error layer: it repeats the method and
// URL that RequestError already names.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// newAPIError decodes a non-2xx response. The body is the API's error
// envelope {"error":{"type":..., "message":...}} or, failing that, anything:
// then Type stays "" and Message holds the start of the body.
func newAPIError(method, path string, status int, header http.Header, body []byte, attempts int) *APIError {
	e := &APIError{StatusCode: status, Method: method, Path: path, Attempts: attempts}
	if d, ok := parseRetryAfter(header.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = d
	}
	var env struct {
		Error *struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error != nil {
		e.Type = clip(env.Error.Type, 128)
		e.Message = clip(env.Error.Message, maxMessageBytes)
		return e
	}
	if status >= 300 && status <= 399 {
		e.Message = "redirect not followed"
		if loc := header.Get("Location"); loc != "" {
			e.Message += " (Location: " + clip(loc, 256) + ")"
		}
		return e
	}
	e.Message = clip(string(body), maxMessageBytes)
	return e
}

// maxMessageBytes bounds APIError.Message.
const maxMessageBytes = 512

// clip makes s safe and short for an error message: at most n bytes, cut on a
// rune boundary, valid UTF-8, one line (control, format and separator
// characters, such as bidi overrides and U+2028, become spaces), trimmed.
func clip(s string, n int) string {
	s = cutBytes(s, n) // bound the work: s may be a 1 MiB body
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(cutBytes(s, n)) // U+FFFD may have made it longer
}

// cutBytes returns at most n bytes of s, cut on a rune boundary.
func cutBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
