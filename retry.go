package apify

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// call is the state of one API call across its attempts. go-retryablehttp
// drives the loop; its hooks are methods of call, because the Backoff hook
// gets no context and per-call state (the attempt number, why the last
// attempt failed, the ctx for log records) has to reach it somehow.
type call struct {
	rc  retryablehttp.Client
	c   *Client
	ctx context.Context
	req apiRequest

	attempts int           // attempts started so far
	start    time.Time     // when the current attempt started (only kept for logging)
	reason   string        // why the last attempt is being retried
	wait     time.Duration // the wait before the next attempt, drawn by checkRetry for backoff
	// The last failure retried: its response (body read) or its network
	// error. It is reported when the ctx ends before the call has anything
	// newer to show, during the wait or during the next attempt alike, so
	// that where the deadline lands does not change the error.
	last    *http.Response
	lastErr error

	// For a call that must not be repeated once the API may have seen it:
	// whether net/http asked for a connection for the current attempt
	// (GetConn) and got one (GotConn). Asked but never got means the
	// request never left. The hooks are bound once, like the others.
	connAsked, connGot atomic.Bool
	getConnHook        func(string)
	gotConnHook        func(httptrace.GotConnInfo)
}

// calls recycles call structs. Each comes with its retryablehttp.Client and
// its hooks bound once: method values made per call would cost four
// allocations a call (the call and three closures). Nothing keeps a call
// once Client.do returns: retryablehttp holds its Client only during Do, and
// the errors built from a call copy what they need.
var calls = sync.Pool{New: func() any {
	cl := new(call)
	cl.rc.RequestLogHook = cl.beforeAttempt
	cl.rc.CheckRetry = cl.checkRetry
	cl.rc.Backoff = cl.backoff
	cl.rc.ErrorHandler = keepLastResponse
	cl.getConnHook = func(string) { cl.connAsked.Store(true) }
	cl.gotConnHook = func(httptrace.GotConnInfo) { cl.connGot.Store(true) }
	return cl
}}

// traced returns ctx with a trace that tells whether an attempt's request
// left (see call.neverSent). A new ClientTrace each time: WithClientTrace
// rewrites the hooks of the trace it is given to chain a trace already in
// ctx, so a recycled one would pile up hooks.
func (cl *call) traced(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GetConn: cl.getConnHook, GotConn: cl.gotConnHook})
}

// neverSent reports that net/http failed the attempt before it had a
// connection to write the request on: the API cannot have seen it. With a
// Transport that is not net/http's the hooks never fire and this is false.
func (cl *call) neverSent() bool { return cl.connAsked.Load() && !cl.connGot.Load() }

// newCall returns a call of r through c, with retries configured as c says.
func (c *Client) newCall(ctx context.Context, r apiRequest) *call {
	cl := calls.Get().(*call)
	cl.c, cl.ctx, cl.req = c, ctx, r
	cl.rc.HTTPClient = c.hc
	cl.rc.RetryWaitMin, cl.rc.RetryWaitMax, cl.rc.RetryMax = c.waitMin, c.waitMax, c.maxRetries
	return cl
}

// release clears the call of everything it refers to and recycles it.
func (cl *call) release() {
	cl.c, cl.ctx, cl.req, cl.rc.HTTPClient = nil, nil, apiRequest{}, nil
	cl.attempts, cl.start, cl.reason, cl.wait, cl.last, cl.lastErr = 0, time.Time{}, "", 0, nil, nil
	calls.Put(cl)
}

// beforeAttempt is the RequestLogHook: retryablehttp calls it before every attempt.
func (cl *call) beforeAttempt(_ retryablehttp.Logger, _ *http.Request, retry int) {
	cl.attempts = retry + 1
	cl.connAsked.Store(false)
	cl.connGot.Store(false)
	// cl.last and cl.lastErr stay: until this attempt has an answer, the
	// failure being retried is the newest thing the call has to report.
	if cl.c.logger != nil {
		cl.start = time.Now()
	}
}

// checkRetry is the CheckRetry hook: the retry policy of the Client.
//
// It draws the wait before the next attempt itself, here rather than in
// backoff, so that the decision to give up before a wait that would outlast
// the ctx's deadline is made on the wait actually taken. Otherwise the error
// a caller gets at a deadline would depend on the random jitter.
func (cl *call) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	cl.logAttempt(resp, err)
	reason := retryReason(resp, err, cl.req.idempotent || (err != nil && cl.neverSent()))
	if reason == "" {
		return false, nil // a success, a final error, or a response that must not be repeated
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		// Never retry for a caller that has gone. A response that came
		// anyway is reported by requestError; a failure without one is the
		// ctx cutting the attempt off, so the failure retried before it
		// (cl.last, cl.lastErr) stays the one to report.
		return false, ctxErr
	}
	cl.last, cl.lastErr = resp, err // reported only if the ctx ends (or would end) before the next answer
	if cl.attempts > cl.c.maxRetries {
		return false, nil // no retries left: the last failure is the result
	}
	cl.wait = cl.c.retryWait(cl.attempts-1, resp)
	if outlastsDeadline(ctx, cl.wait) {
		// The wait would end at or after the caller's deadline: give up
		// now, exactly as if the ctx had ended during the wait (a
		// *RequestError wrapping context.DeadlineExceeded and, when there
		// was one, the last response's *APIError), without the sleep.
		return false, context.DeadlineExceeded
	}
	cl.reason = reason
	return true, nil
}

// outlastsDeadline reports whether a wait of d, started now, would end at or
// after ctx's deadline: such a wait is never started, by a call's retries
// or by the rounds of a batch.
func outlastsDeadline(ctx context.Context, d time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return ok && !time.Now().Add(d).Before(deadline)
}

// backoff is the Backoff hook: it returns the wait checkRetry drew for the
// retry it allowed, and logs the retry.
func (cl *call) backoff(_, _ time.Duration, _ int, _ *http.Response) time.Duration {
	wait := cl.wait
	if l := cl.c.logger; l != nil && l.Enabled(cl.ctx, slog.LevelWarn) {
		l.LogAttrs(cl.ctx, slog.LevelWarn, "apify: retrying",
			slog.String("method", cl.req.method),
			slog.String("path", cl.req.ep.rawPath),
			slog.Int("attempt", cl.attempts),
			slog.String("reason", cl.reason),
			slog.Duration("wait", wait))
	}
	return wait
}

func (cl *call) logAttempt(resp *http.Response, err error) {
	l := cl.c.logger
	if l == nil || !l.Enabled(cl.ctx, slog.LevelDebug) {
		return
	}
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	attrs := []slog.Attr{
		slog.String("method", cl.req.method),
		slog.String("path", cl.req.ep.rawPath),
		slog.Int("attempt", cl.attempts),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(cl.start)),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", unwrapURLError(err).Error()))
	}
	l.LogAttrs(cl.ctx, slog.LevelDebug, "apify: attempt", attrs...)
}

func (cl *call) apiError(resp *http.Response, body []byte) *APIError {
	// Redact before newAPIError clips, so that no part of a token echoed
	// back by the server survives either.
	tok, header := cl.c.token, resp.Header
	if b, ok := resp.Body.(*bufferedBody); ok && b.location != "" {
		header = header.Clone()
		header.Set("Location", tok.redact(b.location))
	}
	e := newAPIError(cl.req.method, cl.req.ep.rawPath, resp.StatusCode, header, tok.redactBytes(body), cl.attempts)
	e.Type, e.Message, e.Header = tok.redact(e.Type), tok.redact(e.Message), tok.redactHeader(header)
	return e
}

// requestError builds the error of a call that ended without a usable
// response. resp, when not nil, is the last attempt's response. When the
// ctx ended without one, the failure that was being retried is reported
// with it, whether the ctx ended during the wait or during the attempt
// after it; its *APIError, like the RequestError, counts every attempt
// started (cl.attempts), the one the ctx cut off included.
func (cl *call) requestError(err error, resp *http.Response, body []byte) error {
	re := &RequestError{
		Method:   cl.req.method,
		Path:     cl.req.ep.rawPath,
		Attempts: cl.attempts,
		Err:      unwrapURLError(err),
	}
	switch {
	case resp != nil && (resp.StatusCode < 200 || resp.StatusCode > 299):
		re.Last = cl.apiError(resp, body)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		switch {
		case cl.last != nil:
			re.Last = cl.apiError(cl.last, responseBody(cl.last))
		case cl.lastErr != nil:
			re.lastErr = unwrapURLError(cl.lastErr)
		}
	}
	return re
}

// retryReason is the retry policy, a chain of small classifiers: it returns
// why the attempt should be retried, or "" when it must not be. idempotent
// says a repeat does no harm: the call is idempotent, or this attempt's
// request never left.
func retryReason(resp *http.Response, err error, idempotent bool) string {
	if err != nil {
		if idempotent {
			return transientError(err)
		}
		return notSentError(err)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		return "rate limited (429)" // the API did not process the request
	}
	if idempotent && retryableStatus(resp.StatusCode) {
		return "server error (" + strconv.Itoa(resp.StatusCode) + ")"
	}
	return ""
}

// retryableStatus reports the statuses worth retrying: 429 and the 5xx that
// mean "try again", but not 501 Not Implemented or other permanent 5xx.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// transientError says why a failed attempt is worth repeating, or "" when
// it is not (a TLS or certificate failure, a host that does not exist, a
// response that cannot be decoded, the caller's context ending). Errors are
// classified by type and by net.Error's Timeout, not by their text: any
// timeout (a TLS handshake, a dial, response headers that never came) is
// worth another attempt. The caller's context ending is left to checkRetry,
// which asks the context itself.
func transientError(err error) string {
	var timeout *attemptTimeoutError
	var dnsErr *net.DNSError
	var bodyErr *bodyReadError
	var opErr *net.OpError
	var netErr net.Error
	switch {
	case errors.As(err, &timeout):
		return timeout.Error()
	case errors.Is(err, context.Canceled), errors.Is(err, ErrUnexpectedResponse):
		return ""
	case errors.As(err, &dnsErr):
		if dnsErr.IsTemporary || dnsErr.IsTimeout {
			return "DNS lookup failed: " + dnsErr.Err
		}
		return ""
	case errors.As(err, &bodyErr):
		return "response body cut off"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before the response"
	case errors.As(err, &netErr) && netErr.Timeout():
		// Not only context.DeadlineExceeded: net/http's timeouts match it
		// too. checkRetry tells the caller's own deadline by its ctx.
		return "timed out (" + unwrapURLError(err).Error() + ")"
	case errors.As(err, &opErr):
		return "network error (" + opErr.Op + ")"
	}
	return ""
}

// notSentError says why a failed attempt of a call that must not be
// repeated may still be retried: the request never reached the server.
// With net/http's Transport, call.neverSent knows more: this is what is
// left for another Transport, which reports no trace.
func notSentError(err error) string {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return "could not connect (" + opErr.Err.Error() + ")"
	}
	return ""
}

// retryWait is the wait before retry n (from 0): the response's Retry-After
// when it is a 429 or 503 that has one, else exponential backoff with full
// jitter, always within [waitMin, waitMax].
func (c *Client) retryWait(n int, resp *http.Response) time.Duration {
	hint, hinted := retryAfterHint(resp)
	return backoff{min: c.waitMin, max: c.waitMax}.wait(n, hint, hinted, c.randN)
}

// retryAfterHint returns the Retry-After of a 429 or 503 response.
func retryAfterHint(resp *http.Response) (time.Duration, bool) {
	if resp == nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return 0, false
	}
	return parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date
// (RFC 9110, section 10.2.3). Absurd delays saturate instead of overflowing;
// a date in the past means no wait; anything else is no hint at all.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > math.MaxInt64/int64(time.Second) {
			return time.Duration(math.MaxInt64), true // out of range: "a very long time"
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
