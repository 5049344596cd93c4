package apify

import (
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// attemptTransport makes one attempt: it bounds the attempt by the Client's
// timeout and reads the whole response body (up to maxBodyBytes, or the
// call's own bound for a listing) before
// returning, so that
//
//   - the timeout covers the body too, and a body that stops arriving is a
//     failed attempt that can be retried like any network error;
//   - every body is read to EOF and closed, and its connection goes back to
//     the pool, whatever the caller does next;
//   - the attempt's context is cancelled only after the body is read, so the
//     connection is never thrown away by the cancel.
//
// It deliberately has no CloseIdleConnections method: go-retryablehttp calls
// http.Client.CloseIdleConnections after every failure, and that must never
// empty a pool the caller shares with other code.
type attemptTransport struct {
	base    http.RoundTripper
	timeout time.Duration
}

// errAttemptDeadline is the cause of an attempt context that timed out,
// telling it apart from the caller's own context ending.
var errAttemptDeadline = errors.New("attempt deadline")

func (t *attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeoutCause(req.Context(), t.timeout, errAttemptDeadline)
	defer cancel()
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return nil, t.attemptError(ctx, err)
	}
	limit := maxBodyBytes
	if resp.ContentLength < 0 || resp.ContentLength > maxBodyBytes {
		// Only a body that may outgrow the common bound asks whether the
		// call has its own: a short body of known length (every unlock's)
		// skips the walk up the context chain.
		if n, ok := req.Context().Value(bodyLimitKey{}).(int); ok {
			limit = n
		}
	}
	body, err := readBounded(resp.Body, resp.ContentLength, limit)
	if err != nil {
		return nil, t.attemptError(ctx, &bodyReadError{err: err})
	}
	resp.Body = body
	resp.ContentLength = int64(len(body.data))
	holdRedirect(resp, body)
	return resp, nil
}

// holdRedirect takes a redirect's Location out of its header and into its
// body holder. The Client never follows redirects, but net/http parses the
// Location of a 301, 302, 303, 307 or 308 before it asks CheckRedirect, and
// fails the whole request, quoting the header in full, when it does not
// parse. Without a Location, net/http hands the response back as it is, and
// call.apiError still names the Location in the APIError.
func holdRedirect(resp *http.Response, body *bufferedBody) {
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		body.location = loc
		resp.Header.Del("Location")
	}
}

// attemptError marks err as an attempt timeout when this attempt's own
// deadline ended it (and not the caller's context).
func (t *attemptTransport) attemptError(ctx context.Context, err error) error {
	if flag, ok := ctx.Value(unansweredKey{}).(*atomic.Bool); ok {
		flag.Store(true)
	}
	if context.Cause(ctx) == errAttemptDeadline {
		return &attemptTimeoutError{timeout: t.timeout, err: err}
	}
	return err
}

// attemptTimeoutError reports an attempt cut off by the per-attempt timeout.
type attemptTimeoutError struct {
	timeout time.Duration
	err     error
}

func (e *attemptTimeoutError) Error() string {
	return fmt.Sprintf("attempt timed out after %v", e.timeout)
}

// Is makes errors.Is(err, ErrAttemptTimeout) hold.
func (e *attemptTimeoutError) Is(target error) bool { return target == ErrAttemptTimeout }

// Timeout reports true, as net.Error timeouts do.
func (e *attemptTimeoutError) Timeout() bool { return true }

// bodyReadError reports a response body that could not be read to its end.
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "reading response body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// Is makes a body that cannot be decoded (a broken gzip or deflate stream)
// an unexpected response: no retry can fix it.
func (e *bodyReadError) Is(target error) bool {
	return target == ErrUnexpectedResponse && corruptEncoding(e.err)
}

func corruptEncoding(err error) bool {
	var flateErr flate.CorruptInputError
	return errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.As(err, &flateErr)
}

// bufferedBody is a response body already read into memory.
type bufferedBody struct {
	data      []byte
	off       int
	truncated bool   // the body was longer than its bound; data holds its start
	location  string // a redirect's Location (see holdRedirect)

	// small holds a body whose Content-Length says it fits (an unlock
	// response does), so that reading it costs one allocation, not two.
	small [smallBody]byte
}

// smallBody is the room a bufferedBody has for a short body of its own.
const smallBody = 64

func (b *bufferedBody) Read(p []byte) (int, error) {
	if b.off >= len(b.data) {
		return 0, io.EOF
	}
	n := copy(p, b.data[b.off:])
	b.off += n
	return n, nil
}

func (b *bufferedBody) Close() error { return nil }

// readBounded reads rc to EOF, keeping at most limit bytes, and closes it.
// A body longer than limit is not drained (that could take forever): its
// start is kept, marked truncated, and its connection is dropped.
func readBounded(rc io.ReadCloser, contentLength int64, limit int) (*bufferedBody, error) {
	defer rc.Close()
	b := new(bufferedBody)
	var buf []byte
	switch {
	case contentLength >= 0 && contentLength < smallBody:
		buf = b.small[: 0 : contentLength+1] // +1 leaves room to see EOF without growing
	case contentLength >= 0 && contentLength < int64(limit):
		buf = make([]byte, 0, contentLength+1)
	default:
		buf = make([]byte, 0, 512)
	}
	for {
		if len(buf) > limit {
			b.data, b.truncated = buf[:limit], true
			return b, nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rc.Read(buf[len(buf):min(cap(buf), limit+1)])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF && len(buf) <= limit:
			b.data = buf
			return b, nil
		case err != nil && err != io.EOF:
			return nil, err
		}
	}
}

// responseBody returns the bytes of a response read by attemptTransport,
// which is always the outermost transport of Client.hc.
func responseBody(resp *http.Response) []byte {
	if b, ok := resp.Body.(*bufferedBody); ok {
		return b.data
	}
	return nil
}

// bodyTruncated reports whether the response body was cut at its bound.
func bodyTruncated(resp *http.Response) bool {
	b, ok := resp.Body.(*bufferedBody)
	return ok && b.truncated
}

// unansweredKey holds, in a call's context, an *atomic.Bool that an attempt
// sets when it ends without a complete answer: the API may have received
// it and may still carry it out, after the call returned (see
// withUnansweredFlag).
type unansweredKey struct{}

// withUnansweredFlag returns ctx with a flag that the call's attempts set
// when one of them ends without a complete answer (a timeout, a dropped
// connection, the caller giving up), whatever the call's outcome: a retry
// may succeed while the API still holds the first attempt.
func withUnansweredFlag(ctx context.Context) (context.Context, *atomic.Bool) {
	flag := new(atomic.Bool)
	return context.WithValue(ctx, unansweredKey{}, flag), flag
}
